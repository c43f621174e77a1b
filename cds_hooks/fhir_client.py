"""Async FHIR R4 read/search client for data the CDS client did not prefetch.

One `FhirClient` (one `httpx.AsyncClient`, one connection pool) lives for the whole app. Every call
takes an absolute `time.monotonic()` deadline shared by all the queries of one hook, so a slow or
misbehaving server costs at most the hook's budget. Failures are typed (`FhirError` and subclasses);
their `reason` is safe to log or show: it never contains a token, a URL query or a response body.
Paging never returns partial data silently, because incomplete lab data can look like a normal result.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin

import httpx
import orjson

DEFAULT_TIMEOUT = httpx.Timeout(connect=2.0, read=5.0, write=5.0, pool=2.0)
DEFAULT_LIMITS = httpx.Limits(max_connections=32, max_keepalive_connections=16, keepalive_expiry=30.0)
DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_PAGES = 10
# An error body is only read for its OperationOutcome; a large one is not worth buffering.
_MAX_ERROR_BODY_BYTES = 64 * 1024
_FHIR_JSON = "application/fhir+json"
_RESOURCE_TYPE = re.compile(r"[A-Z][A-Za-z]{0,63}")
_ISSUE_CODE = re.compile(r"[a-z][a-z-]{0,39}")
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class FhirError(Exception):
    """A FHIR interaction failed. `reason` is log-safe; `outcome` is the server's OperationOutcome, if any."""

    def __init__(self, reason: str, *, status: int | None = None, outcome: dict | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.outcome = outcome

    def __str__(self) -> str:
        return self.reason


class FhirTimeout(FhirError):
    """The deadline passed or an httpx timeout fired."""


class FhirUnreachable(FhirError):
    """No usable connection: refused, DNS failure, reset, unsupported URL scheme."""


class FhirAuthError(FhirError):
    """401 or 403: the token is missing, expired or lacks the scope."""


class FhirNotFound(FhirError):
    """404 or 410."""


class FhirServerError(FhirError):
    """5xx, any other non-2xx, or an OperationOutcome where data was expected."""


class FhirMalformed(FhirError):
    """The body is not the FHIR JSON that was asked for (or is too large to accept)."""


class FhirPagingError(FhirError):
    """`next` links that loop, leave the server, or exceed the page cap."""


@dataclass(frozen=True)
class SearchResult:
    resources: list[dict]
    pages: int
    # Only ever True with allow_partial=True: the page cap was reached with a `next` link left.
    truncated: bool = False
    # OperationOutcomes the server put in the Bundle with search.mode = outcome.
    warnings: list[dict] = field(default_factory=list)
    # True when the caller's `stop` said the remaining pages were not needed (a `next` link was left).
    stopped: bool = False


StopPaging = Callable[[list[dict]], bool]
"""Called with the resources collected so far whenever a `next` link is left: True = do not follow it."""


def bundle_entries(bundle: dict) -> tuple[list[dict], list[dict]]:
    """(data resources, outcome-mode OperationOutcomes) of a Bundle; tolerant of sloppy Bundles."""
    data: list[dict] = []
    outcomes: list[dict] = []
    entries = bundle.get("entry")
    for entry in entries if isinstance(entries, list) else ():
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        search = entry.get("search")
        mode = search.get("mode") if isinstance(search, dict) else None
        # Some servers omit search.mode on their outcome entry; an OperationOutcome is never search data.
        if mode == "outcome" or resource.get("resourceType") == "OperationOutcome":
            outcomes.append(resource)
        else:
            data.append(resource)
    return data, outcomes


def next_link(bundle: dict) -> str | None:
    links = bundle.get("link")
    for link in links if isinstance(links, list) else ():
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"]
    return None


class FhirClient:
    def __init__(
        self,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        limits: httpx.Limits = DEFAULT_LIMITS,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        strict_search: bool = True,
        verify: ssl.SSLContext | bool = True,
        user_agent: str = "hematotox-cds",
    ) -> None:
        self._timeout = timeout
        self._max_bytes = max_response_bytes
        # Prefer: handling=strict makes a server reject a search parameter it does not know instead of
        # dropping it; a dropped `patient` or `code` would silently widen the result.
        self._base_headers = {"Accept": _FHIR_JSON, "User-Agent": user_agent}
        if strict_search:
            self._base_headers["Prefer"] = "handling=strict"
        # Redirects are never followed: the bearer token must not travel to a host nobody vetted.
        # trust_env=False: no proxy from the environment and no .netrc credentials added behind our back.
        self._http = httpx.AsyncClient(
            timeout=timeout, limits=limits, follow_redirects=False, trust_env=False, verify=verify
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> FhirClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def read(self, base: str, reference: str, access_token: str | None, deadline: float) -> dict:
        """GET {base}/{Type}/{id}; the answer must be a resource of that type."""
        rtype, _, rid = reference.partition("/")
        if not _RESOURCE_TYPE.fullmatch(rtype) or not rid or "?" in rid:
            raise ValueError("reference must look like Type/id")
        what = f"{rtype} read"
        resource = await self._get(_join(base, reference, what), access_token, deadline, what)
        if resource.get("resourceType") != rtype:
            raise FhirMalformed(f"{what}: server returned a {_safe_type(resource)} instead")
        return resource

    async def search(
        self,
        base: str,
        relative_query: str,
        access_token: str | None,
        deadline: float,
        max_pages: int = DEFAULT_MAX_PAGES,
        *,
        allow_partial: bool = False,
        stop: StopPaging | None = None,
    ) -> SearchResult:
        """GET {base}/{relative_query} and every `next` page, all before `deadline`.

        `stop` lets the caller end paging early when it knows the remaining pages cannot matter
        (e.g. a search sorted newest first that has gone past the dates of interest). It is asked
        before the page cap is applied, so a stop ends a long search without a FhirPagingError.
        """
        what = f"{_type_name(relative_query.lstrip('/').split('?')[0])} search"
        url = _join(base, relative_query, what)
        return await self._collect(base, url, access_token, deadline, max_pages, allow_partial, what, stop)

    async def continue_search(
        self,
        base: str,
        next_url: str,
        access_token: str | None,
        deadline: float,
        max_pages: int = DEFAULT_MAX_PAGES,
        *,
        allow_partial: bool = False,
        stop: StopPaging | None = None,
    ) -> SearchResult:
        """Fetch a search from a `next` link someone else obtained (e.g. a prefetched Bundle)."""
        what = "search continuation"
        url = urljoin(base.rstrip("/") + "/", next_url)
        _require_same_origin(base, url, what)
        return await self._collect(base, url, access_token, deadline, max_pages, allow_partial, what, stop)

    async def _collect(
        self,
        base: str,
        url: str,
        token: str | None,
        deadline: float,
        max_pages: int,
        allow_partial: bool,
        what: str,
        stop: StopPaging | None = None,
    ) -> SearchResult:
        if max_pages < 1:
            raise ValueError("max_pages must be at least 1")
        resources: list[dict] = []
        warnings: list[dict] = []
        seen: set[str] = set()
        pages = 0
        next_url: str | None = url
        while next_url is not None:
            if pages >= max_pages:
                if allow_partial:
                    return SearchResult(resources, pages, True, warnings)
                raise FhirPagingError(f"{what}: more than {max_pages} pages")
            key = str(httpx.URL(next_url))
            if key in seen:
                raise FhirPagingError(f"{what}: the server's next link repeats an earlier page")
            seen.add(key)
            bundle = await self._get(next_url, token, deadline, what)
            _check_searchset(bundle, what)
            pages += 1
            data, outcomes = bundle_entries(bundle)
            resources.extend(data)
            warnings.extend(outcomes)
            link = next_link(bundle)
            if link is not None and stop is not None and stop(list(resources)):
                return SearchResult(resources, pages, False, warnings, stopped=True)
            if link is not None:
                link = urljoin(next_url, link)
                _require_same_origin(base, link, what)
            next_url = link
        return SearchResult(resources, pages, False, warnings)

    async def _get(self, url: str, token: str | None, deadline: float, what: str) -> dict:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FhirTimeout(f"{what}: deadline passed before the request")
        headers = dict(self._base_headers)
        if token:
            # Visible ASCII only: anything else would be a header injection or an encoding error.
            if not _TOKEN_CHARS.fullmatch(token):
                raise FhirAuthError(f"{what}: the access token has characters a bearer token cannot have")
            headers["Authorization"] = f"Bearer {token}"
        try:
            # asyncio.timeout bounds the whole exchange (body included); the httpx timeouts, cut to
            # the time left, still give precise connect/read errors when they fire first.
            async with asyncio.timeout(remaining):
                async with self._http.stream(
                    "GET", url, headers=headers, timeout=_bounded(self._timeout, remaining)
                ) as response:
                    status = response.status_code
                    ok = 200 <= status < 300
                    body = await _read_capped(response, self._max_bytes if ok else _MAX_ERROR_BODY_BYTES)
                    content_type = response.headers.get("content-type", "")
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise FhirTimeout(f"{what}: no answer within the deadline") from exc
        except httpx.ConnectError as exc:
            raise FhirUnreachable(f"{what}: cannot connect to the FHIR server") from exc
        except httpx.DecodingError as exc:
            raise FhirMalformed(f"{what}: the body cannot be decoded ({type(exc).__name__})") from exc
        except httpx.RequestError as exc:
            raise FhirUnreachable(f"{what}: transport error ({type(exc).__name__})") from exc
        return _interpret(status, body, content_type, ok, self._max_bytes, what)


async def _read_capped(response: httpx.Response, limit: int) -> bytes | None:
    """The body, or None if it is larger than `limit` (checked while streaming, not after)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    buffer = bytearray()
    async for chunk in response.aiter_bytes():
        buffer += chunk
        if len(buffer) > limit:
            return None
    return bytes(buffer)


def _interpret(status: int, body: bytes | None, content_type: str, ok: bool, limit: int, what: str) -> dict:
    if ok and body is None:
        raise FhirMalformed(f"{what}: response too large (over {limit} bytes)", status=status)
    parsed = _parse_json(body)
    outcome = parsed if isinstance(parsed, dict) and parsed.get("resourceType") == "OperationOutcome" else None
    if ok:
        if outcome is not None:
            raise FhirServerError(
                f"{what}: HTTP {status} with an OperationOutcome{_issue_codes(outcome)}", status=status, outcome=outcome
            )
        if not isinstance(parsed, dict):
            html = "html" in content_type.lower() or (body or b"").lstrip()[:1] == b"<"
            kind = "an HTML page" if html else "not JSON"
            raise FhirMalformed(f"{what}: HTTP {status} body is {kind}", status=status)
        if not isinstance(parsed.get("resourceType"), str):
            raise FhirMalformed(f"{what}: HTTP {status} body is JSON without a resourceType", status=status)
        return parsed
    reason = f"{what}: HTTP {status}{_issue_codes(outcome)}"
    if status in (401, 403):
        raise FhirAuthError(reason, status=status, outcome=outcome)
    if status in (404, 410):
        raise FhirNotFound(reason, status=status, outcome=outcome)
    if 300 <= status < 400:
        reason += " (redirects are not followed)"
    raise FhirServerError(reason, status=status, outcome=outcome)


def _parse_json(body: bytes | None) -> object:
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _check_searchset(bundle: dict, what: str) -> None:
    if bundle.get("resourceType") != "Bundle":
        raise FhirMalformed(f"{what}: expected a Bundle, got a {_safe_type(bundle)}")
    if bundle.get("type", "searchset") != "searchset":
        raise FhirMalformed(f"{what}: expected a searchset Bundle")
    if not isinstance(bundle.get("entry", []), list) or not isinstance(bundle.get("link", []), list):
        raise FhirMalformed(f"{what}: Bundle.entry or Bundle.link is not an array")


def _issue_codes(outcome: dict | None) -> str:
    """The OperationOutcome's issue codes: a closed vocabulary, unlike diagnostics (which may echo data)."""
    issues = outcome.get("issue") if outcome else None
    codes: set[str] = {
        i["code"]
        for i in (issues if isinstance(issues, list) else ())
        if isinstance(i, dict) and isinstance(i.get("code"), str) and _ISSUE_CODE.fullmatch(i["code"])
    }
    return f" ({', '.join(sorted(codes))})" if codes else ""


def _safe_type(resource: dict) -> str:
    return _type_name(resource.get("resourceType"))


def _type_name(value: object) -> str:
    return value if isinstance(value, str) and _RESOURCE_TYPE.fullmatch(value) else "FHIR"


def _bounded(timeout: httpx.Timeout, remaining: float) -> httpx.Timeout:
    def cap(value: float | None) -> float:
        return remaining if value is None else min(value, remaining)

    return httpx.Timeout(
        connect=cap(timeout.connect), read=cap(timeout.read), write=cap(timeout.write), pool=cap(timeout.pool)
    )


def _origin(url: str) -> tuple[str, str, int | None]:
    parsed = httpx.URL(url)
    return parsed.scheme, parsed.host, parsed.port or _DEFAULT_PORTS.get(parsed.scheme)


def _join(base: str, relative: str, what: str) -> str:
    url = f"{base.rstrip('/')}/{relative.lstrip('/')}"
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise FhirUnreachable(f"{what}: the FHIR server URL is invalid") from exc
    if parsed.scheme not in _DEFAULT_PORTS or not parsed.host:
        raise FhirUnreachable(f"{what}: the FHIR server URL is not an http(s) URL with a host")
    # httpx lets an out-of-range port through to the socket layer, which fails with a bare OverflowError.
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise FhirUnreachable(f"{what}: the FHIR server URL has an invalid port")
    return url


def _require_same_origin(base: str, url: str, what: str) -> None:
    # The bearer token goes with every page: a link to another origin would hand it to that host.
    try:
        same = _origin(url) == _origin(base)
    except httpx.InvalidURL:
        same = False
    if not same:
        raise FhirPagingError(f"{what}: link points outside the FHIR server's origin")
