"""Verification of the JWT a CDS client (EHR) sends as `Authorization: Bearer <JWT>`.

CDS Hooks 2.0 §Trusting CDS Clients: the client signs a short-lived JWT per request with an
asymmetric key; the service trusts an allowlist of issuers, each with its JSON Web Key Set.
All cryptography is joserfc's (RFC 7515/7517/7519); this module only decides *which* key and
*which* claims.

A token is accepted only when every check passes:
- compact JWS, at most MAX_TOKEN_BYTES; `alg` one of ALLOWED_ALGORITHMS (asymmetric only: never
  `none`, never HS*); `kid` present; `typ`, when present, is JWT; unknown `crit` extensions refused;
- `iss` is a configured issuer;
- the signature verifies with the key of that `kid` from the issuer's configured JWKS (a local
  file, or a URL fetched with httpx and cached); only when the kid is not there, from the token's
  `jku`, and only when that URL is on the issuer's allowlist (else refused: `jku`). A `jku` that is
  not allowlisted is never fetched, and it carries no trust either way: the signature is checked
  with a key we already hold, so a token found in the configured keys is accepted whatever its
  `jku` says (EHRs such as Epic and the CDS Hooks sandbox put one on every token). An unknown
  `kid` refreshes a set once (key rotation), at most once per `min_refresh_seconds` per source;
- `aud` (string or array) holds one of the expected URLs (the URL the client called);
- `exp`, `iat` present and `nbf` when present, each with `leeway_seconds`; `exp` not further away
  than `max_token_lifetime_seconds`;
- `jti` present and not seen before from this issuer while the token is valid. Seen `jti`s are kept
  in a bounded in-memory cache: with several processes or replicas, replay is detected per
  process only.

Any failure raises AuthError with a short reason code for the service's log, the claim at fault
when a claim failed, and for `aud` the expected and the received audiences (a misconfigured base
URL, e.g. `localhost` against `127.0.0.1`, is otherwise undiagnosable); nothing else of the token.
The caller answers a bare 401 and must never echo the reason, the token or any claim.

Nothing in this module knows anything clinical.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cachetools
import httpx
from joserfc import jws
from joserfc.errors import ClaimError, JoseError
from joserfc.jwk import ECKey, Key, KeySet, OKPKey, RSAKey
from joserfc.jwt import JWTClaimsRegistry

log = logging.getLogger("hematotox.auth")

ALLOWED_ALGORITHMS = frozenset(
    {
        "ES256",
        "ES384",
        "ES512",
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "EdDSA",
        "Ed25519",
        "Ed448",
    }
)
MAX_TOKEN_BYTES = 16 * 1024
MIN_RSA_BITS = 2048
_ASYMMETRIC_KTY = {"EC", "RSA", "OKP"}


# What of a refused token's `aud` the log may show: a few bounded strings.
_MAX_LOGGED_AUDIENCES = 5
_MAX_LOGGED_CHARS = 200


class AuthError(Exception):
    """The token is not accepted. `reason` is a short code for logs; never send it to the caller.

    `claim` names the claim at fault; `details` holds what the log may show of it (only for `aud`:
    the expected and the received audiences)."""

    def __init__(self, reason: str, claim: str | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.claim = claim
        self.details = details or {}

    def log_fields(self) -> dict[str, Any]:
        return {"claim": self.claim, **self.details} if self.claim else {}


def _loggable_audiences(value: object) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [v[:_MAX_LOGGED_CHARS] for v in values if isinstance(v, str)][:_MAX_LOGGED_AUDIENCES]


@dataclass(frozen=True)
class TrustedIssuer:
    issuer: str
    jwks_file: str | None = None
    jwks_url: str | None = None
    jku_allowlist: tuple[str, ...] = ()


@dataclass(frozen=True)
class VerifierConfig:
    leeway_seconds: int = 30
    max_token_lifetime_seconds: int = 3600
    jti_cache_size: int = 100_000
    jwks_cache_seconds: float = 3600.0
    min_refresh_seconds: float = 30.0
    fetch_timeout_seconds: float = 3.0
    jwks_max_bytes: int = 256 * 1024
    # JWKS URLs (jwks_url, jku) must be https unless this is set (development only).
    allow_http_jwks: bool = False


@dataclass(frozen=True)
class VerifiedToken:
    issuer: str
    claims: dict[str, Any] = field(repr=False)
    header: dict[str, Any] = field(repr=False)


def key_set_from_json(data: Any) -> KeySet:
    """A JWKS with only the keys usable for verifying signatures (public, asymmetric, strong enough)."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError("a JWKS is a JSON object with a 'keys' array")
    usable: list[Key] = []
    for entry in data["keys"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("kty"), str) or entry["kty"] not in _ASYMMETRIC_KTY:
            continue  # "oct" (symmetric) keys are never used, whatever a token claims
        if entry.get("use", "sig") != "sig" or not isinstance(entry.get("kid", ""), str):
            continue
        public = {k: v for k, v in entry.items() if k not in ("d", "p", "q", "dp", "dq", "qi", "oth", "k")}
        try:
            key = KeySet.import_key_set({"keys": [public]}).keys[0]
        except (JoseError, ValueError, TypeError, KeyError):
            continue
        if isinstance(key, RSAKey) and key.raw_value.key_size < MIN_RSA_BITS:
            continue
        if not isinstance(key, (ECKey, RSAKey, OKPKey)):
            continue
        usable.append(key)
    if not usable:
        raise ValueError("the JWKS holds no usable public signing key")
    return KeySet(usable)


class _Source:
    """One JWKS location (file or URL) with its cached key set and a rate-limited refresh."""

    def __init__(self, location: str, *, is_file: bool, verifier: JwtVerifier) -> None:
        self.location = location
        self.is_file = is_file
        self._verifier = verifier
        self._keys: KeySet | None = None
        self._loaded_at = float("-inf")
        self._last_attempt = float("-inf")
        self._lock = asyncio.Lock()

    def load_now(self) -> None:
        """Read a file source synchronously (at start-up, so that a bad file fails fast)."""
        self._keys = self._read_file()
        self._loaded_at = self._last_attempt = time.monotonic()

    async def key_for(self, kid: str) -> Key | None:
        expired = time.monotonic() - self._loaded_at > self._verifier.config.jwks_cache_seconds
        if self._keys is None or (expired and not self.is_file):
            await self._refresh()
        key = self._find(kid)
        if key is None:
            # Unknown kid: the issuer may have rotated its keys. Refresh, at most once per
            # min_refresh_seconds, so that made-up kids cannot make us hammer the JWKS host.
            await self._refresh()
            key = self._find(kid)
        return key

    def _find(self, kid: str) -> Key | None:
        for key in self._keys.keys if self._keys is not None else ():
            if key.kid == kid:
                return key
        return None

    async def _refresh(self) -> None:
        async with self._lock:  # one refresh at a time; the others wait and reuse its result
            now = time.monotonic()
            if now - self._last_attempt < self._verifier.config.min_refresh_seconds:
                return
            self._last_attempt = now
            try:
                keys = self._read_file() if self.is_file else await self._fetch()
            except (OSError, ValueError, TypeError, httpx.HTTPError, JoseError) as exc:
                # Keep the keys we have (if any): a token with a known kid still verifies.
                log.warning(
                    "jwks refresh failed", extra={"event": {"jwks": self.location, "error": type(exc).__name__}}
                )
                return
            self._keys = keys
            self._loaded_at = time.monotonic()

    def _read_file(self) -> KeySet:
        return key_set_from_json(json.loads(Path(self.location).read_bytes()))

    async def _fetch(self) -> KeySet:
        cfg = self._verifier.config
        client = self._verifier.http_client()
        # No redirects (the client never follows them), bounded size, bounded time.
        async with client.stream("GET", self.location, headers={"Accept": "application/json"}) as response:
            if response.status_code != 200:
                raise ValueError(f"JWKS answer HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > cfg.jwks_max_bytes:
                    raise ValueError("JWKS too large")
        return key_set_from_json(json.loads(bytes(body)))


@dataclass(frozen=True)
class _IssuerKeys:
    issuer: str
    configured: _Source | None
    jku_allowlist: frozenset[str]


class JwtVerifier:
    """`await verify(token, audiences)` -> VerifiedToken, or AuthError."""

    def __init__(
        self,
        issuers: Iterable[TrustedIssuer],
        config: VerifierConfig | None = None,
        *,
        http_client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or VerifierConfig()
        self._clock = clock
        self._client = http_client
        self._own_client = http_client is None
        self._registries = {
            alg: jws.JWSRegistry(algorithms=[alg], strict_check_header=False) for alg in ALLOWED_ALGORITHMS
        }
        self._issuers: dict[str, _IssuerKeys] = {}
        self._url_sources: dict[str, _Source] = {}
        for issuer in issuers:
            if issuer.issuer in self._issuers:
                raise ValueError(f"trusted client {issuer.issuer!r} is configured twice")
            for url in [issuer.jwks_url, *issuer.jku_allowlist]:
                if url:
                    self._check_url(url)
            configured: _Source | None = None
            if issuer.jwks_file:
                configured = _Source(issuer.jwks_file, is_file=True, verifier=self)
                configured.load_now()
            elif issuer.jwks_url:
                configured = self._url_source(issuer.jwks_url)
            self._issuers[issuer.issuer] = _IssuerKeys(issuer.issuer, configured, frozenset(issuer.jku_allowlist))
        # (iss, jti) -> the time (clock) after which the token can no longer be accepted.
        self._seen: cachetools.TLRUCache = cachetools.TLRUCache(
            maxsize=self.config.jti_cache_size, ttu=lambda _key, expires, _now: expires, timer=self._clock
        )
        self._full_warned = False

    @property
    def issuers(self) -> list[str]:
        return list(self._issuers)

    def _check_url(self, url: str) -> None:
        parts = httpx.URL(url)
        if parts.scheme != "https" and not (self.config.allow_http_jwks and parts.scheme == "http"):
            raise ValueError(f"JWKS URL must be https: {url!r}")
        if not parts.host or parts.userinfo:
            raise ValueError(f"JWKS URL is not a plain URL: {url!r}")

    def _url_source(self, url: str) -> _Source:
        # One cache per URL, shared by issuers naming the same URL.
        source = self._url_sources.get(url)
        if source is None:
            source = self._url_sources[url] = _Source(url, is_file=False, verifier=self)
        return source

    def http_client(self) -> httpx.AsyncClient:
        if self._client is None:
            timeout = self.config.fetch_timeout_seconds
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)),
                follow_redirects=False,
                limits=httpx.Limits(max_connections=10),
                headers={"User-Agent": "hematotox-cds"},
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.aclose()
            self._client = None

    async def verify(self, token: str, audiences: Iterable[str]) -> VerifiedToken:
        audiences = [a for a in audiences if a]
        if not audiences:
            raise AuthError("no-audience")
        raw = token.encode("ascii", "strict") if token.isascii() else None
        if raw is None or not raw or len(raw) > MAX_TOKEN_BYTES or raw.count(b".") != 2:
            raise AuthError("malformed")
        try:
            obj = jws.extract_compact(raw)
            header = obj.headers()
            claims = json.loads(obj.payload)
        except (JoseError, ValueError, TypeError, UnicodeDecodeError):
            raise AuthError("malformed") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise AuthError("malformed")

        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise AuthError("alg")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.upper() not in ("JWT", "APPLICATION/JWT")):
            raise AuthError("typ")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("kid")
        iss = claims.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise AuthError("iss", "iss")
        jku = header.get("jku")
        if jku is not None and not isinstance(jku, str):
            raise AuthError("jku")

        key = await self._key(issuer, kid, jku)
        if key is None:
            raise AuthError("kid")
        try:
            if not jws.validate_compact(obj, key, registry=self._registries[alg]):
                raise AuthError("signature")
        except JoseError:
            raise AuthError("signature") from None  # e.g. an RSA key for an ES384 token

        self._check_claims(claims, issuer.issuer, audiences)
        self._check_replay(issuer.issuer, claims)
        return VerifiedToken(issuer.issuer, claims, header)

    async def _key(self, issuer: _IssuerKeys, kid: str, jku: str | None) -> Key | None:
        """The key of `kid`: from the issuer's configured keys, else from an allowlisted `jku`.

        The configured keys come first and decide alone when they hold the kid (a kid found there
        and a failing signature is a refusal, not a reason to look elsewhere). A `jku` off the
        allowlist is refused without being contacted: fetching from a URL the token names would let
        anyone make us request any URL, and would trust whatever keys it serves."""
        if issuer.configured is not None:
            key = await issuer.configured.key_for(kid)
            if key is not None:
                return key
        if jku is None:
            return None
        if jku not in issuer.jku_allowlist:
            raise AuthError("jku")
        if issuer.configured is not None and issuer.configured.location == jku:
            return None  # the same set, just looked at (and refreshed if the kid was unknown)
        return await self._url_source(jku).key_for(kid)

    def _check_claims(self, claims: dict, issuer: str, audiences: list[str]) -> None:
        cfg = self.config
        now = self._clock()
        registry = JWTClaimsRegistry(
            now=int(now),
            leeway=cfg.leeway_seconds,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "values": audiences},
            exp={"essential": True},
            iat={"essential": True},
            jti={"essential": True},
        )
        try:
            registry.validate(claims)
        except ClaimError as exc:
            details = {}
            if exc.claim == "aud":
                details = {
                    "expected": audiences[:_MAX_LOGGED_AUDIENCES],
                    "received": _loggable_audiences(claims.get("aud")),
                }
            raise AuthError(f"claims:{type(exc).__name__}", exc.claim, details) from None
        except JoseError as exc:
            raise AuthError(f"claims:{type(exc).__name__}") from None
        exp = claims["exp"]
        if exp > now + cfg.max_token_lifetime_seconds + cfg.leeway_seconds:
            raise AuthError("claims:lifetime", "exp")
        if not claims["jti"] or len(claims["jti"]) > 256:
            raise AuthError("claims:jti", "jti")

    def _check_replay(self, issuer: str, claims: dict) -> None:
        key = (issuer, claims["jti"])
        if key in self._seen:
            raise AuthError("replay")
        expires = float(claims["exp"]) + self.config.leeway_seconds
        self._seen.expire()
        if len(self._seen) >= self._seen.maxsize and not self._full_warned:
            self._full_warned = True
            log.warning(
                "jti cache full: the oldest entries are dropped, replay detection is weakened; "
                "raise auth.jti_cache_size"
            )
        self._seen[key] = expires
