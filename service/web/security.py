"""The security edge of the HTTP service: who may call, how much they may send, what we answer with.

`install_security(app, settings)` adds, from the outside in:

1. SecurityHeaders: every response gets `Cache-Control: no-store` (answers hold PHI), `nosniff`,
   `Referrer-Policy: no-referrer`, a deny-all Content-Security-Policy and frame denial
   (HSTS too when `public_base_url` is https).
2. CORS (Starlette) with the explicit `service.cors_origins`; no credentials, never `*`.
3. BodyLimit: a declared Content-Length over `service.max_body_bytes` is refused with 413 before
   anything is read; a body without (or lying about) its length is cut off at the limit while it
   streams in, also with 413. Both are OperationOutcomes.
4. ClientAuth on `/cds-services` and everything below it (discovery, services, feedback): the
   EHR's `Authorization: Bearer <JWT>` is checked by cds_hooks.jwt_auth against the URL the client
   called (`public_base_url` + path). Any failure is a bare 401.

Secure by default: with no `[[trusted_clients]]` every call under /cds-services is refused, unless
`service.development_mode` is on. In development mode a request without a token is let through;
a request *with* a token is verified whenever trusted clients are configured.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cds_hooks.fhir_allowlist import FhirServerAllowlist
from cds_hooks.jwt_auth import AuthError, JwtVerifier, TrustedIssuer, VerifierConfig
from cds_hooks.outcome import CDSHookError, operation_outcome
from service.web import metrics
from service.web.settings import Settings

log = logging.getLogger("hematotox.security")

PROTECTED_PREFIX = "/cds-services"
_DOCS_PATHS = ("/docs", "/redoc", "/docs/oauth2-redirect")


# --------------------------------------------------------------------------- construction
def build_verifier(settings: Settings) -> JwtVerifier | None:
    if not settings.trusted_clients:
        return None
    a = settings.auth
    config = VerifierConfig(
        leeway_seconds=a.leeway_seconds,
        max_token_lifetime_seconds=a.max_token_lifetime_seconds,
        jti_cache_size=a.jti_cache_size,
        jwks_cache_seconds=a.jwks_cache_seconds,
        min_refresh_seconds=a.jwks_min_refresh_seconds,
        fetch_timeout_seconds=a.jwks_fetch_timeout_seconds,
        jwks_max_bytes=a.jwks_max_bytes,
        allow_http_jwks=settings.service.development_mode,
    )
    issuers = [
        TrustedIssuer(c.issuer, c.jwks_file, c.jwks_url, tuple(c.jku_allowlist)) for c in settings.trusted_clients
    ]
    return JwtVerifier(issuers, config)


def build_fhir_allowlist(settings: Settings) -> FhirServerAllowlist:
    dev = settings.service.development_mode
    allowlist = FhirServerAllowlist(settings.fhir.allowed_servers, require_https=not dev)
    if not dev and any(e.scheme != "https" for e in allowlist.entries):
        log.warning("fhir.allowed_servers has http entries: they are never contacted outside development mode")
    return allowlist


def install_security(app: FastAPI, settings: Settings) -> None:
    """Add the middlewares above to `app` and put the verifier and the FHIR allowlist on app.state."""
    verifier = build_verifier(settings)
    app.state.jwt_verifier = verifier
    app.state.fhir_allowlist = build_fhir_allowlist(settings)
    s = settings.service
    if s.development_mode:
        log.warning(
            "DEVELOPMENT MODE: calls without a JWT are answered and http FHIR servers are allowed. "
            "Never run this in production."
        )
    elif verifier is None:
        log.warning("no [[trusted_clients]] configured: every call under /cds-services is refused (401)")

    # Starlette wraps in reverse order of addition: the last added is the outermost.
    app.add_middleware(
        ClientAuthMiddleware, verifier=verifier, public_base_url=s.public_base_url, development_mode=s.development_mode
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=s.max_body_bytes)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(s.cors_origins),
        allow_credentials=False,
        allow_methods=["GET", "POST"],
        allow_headers=["Authorization", "Content-Type"],
        max_age=600,
    )
    app.add_middleware(SecurityHeadersMiddleware, hsts=s.public_base_url.lower().startswith("https://"))

    if verifier is not None:

        @asynccontextmanager
        async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
            try:
                yield
            finally:
                await verifier.aclose()

        app.include_router(APIRouter(lifespan=lifespan))


# --------------------------------------------------------------------------- helpers
def _json(status: int, body: dict | None, extra: Sequence[tuple[bytes, bytes]] = ()) -> tuple[Message, Message]:
    content = orjson.dumps(body) if body is not None else b""
    headers = [(b"content-length", str(len(content)).encode())]
    if body is not None:
        headers.append((b"content-type", b"application/json"))
    headers.extend(extra)
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": content},
    )


async def _send_all(send: Send, messages: tuple[Message, Message]) -> None:
    for message in messages:
        await send(message)


def _relative_path(scope: Scope) -> str:
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path


def is_protected(path: str) -> bool:
    return path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")


# --------------------------------------------------------------------------- client auth
class ClientAuthMiddleware:
    def __init__(
        self, app: ASGIApp, *, verifier: JwtVerifier | None, public_base_url: str, development_mode: bool
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.base = public_base_url.rstrip("/")
        self.development_mode = development_mode

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_protected(path := _relative_path(scope)):
            await self.app(scope, receive, send)
            return
        authorization = Headers(scope=scope).get("authorization")
        if self.verifier is None:
            if self.development_mode:
                await self.app(scope, receive, send)
            else:
                await self._refuse(send, path, "no-trusted-clients")
            return
        if authorization is None and self.development_mode:
            await self.app(scope, receive, send)
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            await self._refuse(send, path, "no-bearer-token")
            return
        try:
            verified = await self.verifier.verify(token.strip(), self.audiences(path))
        except AuthError as exc:
            await self._refuse(send, path, exc.reason, exc.log_fields())
            return
        except Exception as exc:
            log.warning("token verification failed unexpectedly", extra={"event": {"error": type(exc).__name__}})
            await self._refuse(send, path, "error")
            return
        # For the handlers (the feedback store records which EHR sent it). Never the token itself.
        scope.setdefault("state", {})["cds_client"] = verified.issuer
        await self.app(scope, receive, send)

    def audiences(self, path: str) -> list[str]:
        """The `aud` values accepted for a call to `path`: the URL the client called. Feedback also
        accepts its service's URL, which some clients send as the audience of every call to it."""
        called = self.base + path
        accepted = [called]
        if path.endswith("/feedback"):
            accepted.append(self.base + path[: -len("/feedback")])
        return accepted

    async def _refuse(self, send: Send, path: str, reason: str, fields: dict[str, Any] | None = None) -> None:
        # The failing check (reason), the claim at fault and for `aud` both audiences: enough to fix a
        # configuration, nothing else of the token.
        event = {"status": 401, "reason": reason, **(fields or {}), "path": path[:200]}
        log.info("request refused", extra={"event": event})
        metrics.count_jwt_rejection(reason.split(":", 1)[-1])  # a short, bounded set of codes
        await _send_all(send, _json(401, None, [(b"www-authenticate", b"Bearer")]))


# --------------------------------------------------------------------------- body limit
class BodyTooLarge(CDSHookError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "too-costly", f"the request body is larger than {limit} bytes")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _send_all(send, _json(400, operation_outcome("Content-Length is not a number", "structure")))
                return
            if int(declared) > limit:
                await _send_all(send, _json(413, BodyTooLarge(limit).outcome(), [(b"connection", b"close")]))
                return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # The handler's CDSHookError handler turns this into the 413 OperationOutcome.
                    raise BodyTooLarge(limit)
            return message

        async def watch_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watch_send)
        except BodyTooLarge as exc:
            # Read outside a handler (e.g. by another middleware): answer here if we still can.
            if started:
                raise
            await _send_all(send, _json(413, exc.outcome(), [(b"connection", b"close")]))


# --------------------------------------------------------------------------- response headers
_API_HEADERS = {
    "cache-control": "no-store",
    "pragma": "no-cache",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-resource-policy": "same-origin",
}
_API_CSP = "default-src 'none'; frame-ancestors 'none'"


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = _relative_path(scope) in _DOCS_PATHS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _API_HEADERS.items():
                    headers[name] = value
                if not docs:  # the interactive docs page needs its scripts
                    headers["content-security-policy"] = _API_CSP
                if self.hsts:
                    headers["strict-transport-security"] = "max-age=31536000"
            await send(message)

        await self.app(scope, receive, send_with_headers)
