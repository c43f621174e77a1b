"""Every way a FHIR server can fail us: the right typed error, within the deadline, no token leaked."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import respx

from cds_hooks.fhir_client import (
    FhirAuthError,
    FhirClient,
    FhirError,
    FhirMalformed,
    FhirNotFound,
    FhirPagingError,
    FhirServerError,
    FhirTimeout,
    FhirUnreachable,
    SearchResult,
)

BASE = "https://fhir.test/r4"
SEARCH_URL = f"{BASE}/Observation"
QUERY = "Observation?patient=p1&_count=2"
TOKEN = "tok-9f8e7d-SECRET"
DEADLINE = 0.3
MARGIN = 0.2


def outcome(code: str, diagnostics: str = "details") -> dict:
    issue = {"severity": "error", "code": code, "diagnostics": diagnostics}
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def searchset(*ids: str, next_url: str | None = None) -> dict:
    bundle: dict = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": {"resourceType": "Observation", "id": i}, "search": {"mode": "match"}} for i in ids],
        "link": [{"relation": "self", "url": SEARCH_URL}],
    }
    if next_url:
        bundle["link"].append({"relation": "next", "url": next_url})
    return bundle


async def _search(token: str | None = TOKEN, max_pages: int = 5, deadline: float = DEADLINE, **kwargs) -> SearchResult:
    async with FhirClient(**kwargs) as client:
        return await client.search(BASE, QUERY, token, time.monotonic() + deadline, max_pages)


def expect(error: type[FhirError], call: Callable[[], Awaitable[object]]) -> FhirError:
    started = time.monotonic()
    with pytest.raises(error) as info:
        asyncio.run(call())
    elapsed = time.monotonic() - started
    assert elapsed < DEADLINE + MARGIN, f"took {elapsed:.3f}s"
    exc = info.value
    for text in (str(exc), exc.reason, repr(exc)):
        assert TOKEN not in text and "p1" not in text  # neither the token nor the query leaks
    return exc


@pytest.fixture
def server() -> respx.MockRouter:
    with respx.mock(assert_all_called=False) as router:
        yield router


def test_success_sends_token_and_fhir_headers(server):
    route = server.get(SEARCH_URL).respond(200, json=searchset("a", "b"))
    result = asyncio.run(_search())
    assert [r["id"] for r in result.resources] == ["a", "b"] and result.pages == 1 and not result.truncated
    request = route.calls.last.request
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Accept"] == "application/fhir+json"
    assert request.headers["Prefer"] == "handling=strict"
    assert request.url.params["patient"] == "p1"


def test_no_authorization_header_without_token(server):
    route = server.get(SEARCH_URL).respond(200, json=searchset())
    asyncio.run(_search(token=None))
    assert "Authorization" not in route.calls.last.request.headers


def test_timeout_from_a_slow_server_ends_at_the_deadline(server):
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json=searchset())

    server.get(SEARCH_URL).mock(side_effect=slow)
    error = expect(FhirTimeout, _search)
    assert error.status is None


def test_httpx_timeout_is_a_timeout(server):
    server.get(SEARCH_URL).mock(side_effect=httpx.ReadTimeout("read timed out"))
    expect(FhirTimeout, _search)


def test_deadline_already_passed_sends_nothing(server):
    route = server.get(SEARCH_URL).respond(200, json=searchset())
    expect(FhirTimeout, lambda: _search(deadline=-1))
    assert not route.called


def test_connection_refused(server):
    server.get(SEARCH_URL).mock(side_effect=httpx.ConnectError("connection refused"))
    expect(FhirUnreachable, _search)


def test_connection_refused_by_a_real_closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nothing listens there

    async def call() -> None:
        async with FhirClient() as client:
            await client.search(f"http://127.0.0.1:{port}/fhir", QUERY, TOKEN, time.monotonic() + DEADLINE)

    expect(FhirUnreachable, call)


def test_real_socket_that_never_answers_ends_at_the_deadline():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # connections complete in the backlog, but nobody ever reads or answers
        port = listener.getsockname()[1]

        async def call() -> None:
            async with FhirClient() as client:
                await client.search(f"http://127.0.0.1:{port}/fhir", QUERY, TOKEN, time.monotonic() + DEADLINE)

        expect(FhirTimeout, call)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, FhirAuthError),
        (403, FhirAuthError),
        (404, FhirNotFound),
        (410, FhirNotFound),
        (400, FhirServerError),
        (422, FhirServerError),
        (500, FhirServerError),
        (503, FhirServerError),
    ],
)
def test_http_errors_carry_status_and_outcome(server, status, error):
    body = outcome("login" if status == 401 else "processing", diagnostics=f"echo {TOKEN} p1")
    server.get(SEARCH_URL).respond(status, json=body)
    exc = expect(error, _search)
    assert exc.status == status
    assert exc.outcome == body
    assert f"HTTP {status}" in exc.reason


def test_error_page_without_outcome(server):
    page = "<html><body>Bad gateway</body></html>"
    server.get(SEARCH_URL).respond(502, text=page, headers={"Content-Type": "text/html"})
    exc = expect(FhirServerError, _search)
    assert exc.status == 502 and exc.outcome is None


def test_outcome_with_200_is_an_error(server):
    body = outcome("too-costly")
    server.get(SEARCH_URL).respond(200, json=body)
    exc = expect(FhirServerError, _search)
    assert exc.status == 200 and exc.outcome == body and "too-costly" in exc.reason


@pytest.mark.parametrize(
    ("content", "content_type", "fragment"),
    [
        (b'{"resourceType": "Bundle", "entry": [', "application/fhir+json", "not JSON"),
        (b"<!DOCTYPE html><html><body>Login</body></html>", "text/html", "HTML"),
        (b"[1, 2, 3]", "application/json", "not JSON"),
        (b'{"hello": "world"}', "application/json", "without a resourceType"),
        (b'{"resourceType": "Patient", "id": "x"}', "application/fhir+json", "expected a Bundle"),
        (b'{"resourceType": "Bundle", "type": "transaction-response"}', "application/fhir+json", "searchset"),
        (b'{"resourceType": "Bundle", "type": "searchset", "entry": {}}', "application/fhir+json", "array"),
        (b"", "application/fhir+json", "not JSON"),
    ],
)
def test_malformed_bodies(server, content, content_type, fragment):
    server.get(SEARCH_URL).respond(200, content=content, headers={"Content-Type": content_type})
    exc = expect(FhirMalformed, _search)
    assert fragment in exc.reason


def test_redirect_is_not_followed(server):
    elsewhere = server.get("https://elsewhere.test/steal").respond(200, json=searchset())
    server.get(SEARCH_URL).respond(302, headers={"Location": "https://elsewhere.test/steal"})
    exc = expect(FhirServerError, _search)
    assert exc.status == 302 and "redirect" in exc.reason
    assert not elsewhere.called


def test_next_link_repeating_forever(server):
    route = server.get(SEARCH_URL).respond(200, json=searchset("a", next_url=f"{SEARCH_URL}?page=2"))
    exc = expect(FhirPagingError, _search)
    assert "repeats" in exc.reason
    assert route.call_count == 2  # the first page and page 2, whose next link is page 2 again


def test_next_links_cycling_between_two_pages(server):
    server.get(SEARCH_URL, params={"page": "2"}).respond(200, json=searchset("b", next_url=f"{SEARCH_URL}?page=3"))
    server.get(SEARCH_URL, params={"page": "3"}).respond(200, json=searchset("c", next_url=f"{SEARCH_URL}?page=2"))
    server.get(SEARCH_URL).respond(200, json=searchset("a", next_url=f"{SEARCH_URL}?page=2"))
    expect(FhirPagingError, _search)


def _endless(request: httpx.Request) -> httpx.Response:
    page = int(request.url.params.get("page", "1"))
    return httpx.Response(200, json=searchset(f"o{page}", next_url=f"{SEARCH_URL}?page={page + 1}"))


def test_page_cap_raises_instead_of_returning_part(server):
    route = server.get(SEARCH_URL).mock(side_effect=_endless)
    exc = expect(FhirPagingError, lambda: _search(max_pages=3))
    assert "more than 3 pages" in exc.reason
    assert route.call_count == 3


def test_page_cap_with_allow_partial_says_truncated(server):
    server.get(SEARCH_URL).mock(side_effect=_endless)

    async def call() -> SearchResult:
        async with FhirClient() as client:
            return await client.search(BASE, QUERY, TOKEN, time.monotonic() + DEADLINE, 2, allow_partial=True)

    result = asyncio.run(call())
    assert result.truncated and result.pages == 2 and [r["id"] for r in result.resources] == ["o1", "o2"]


@pytest.mark.parametrize(
    "next_url",
    [
        "https://evil.test/r4/Observation?page=2",
        "http://fhir.test/r4/Observation?page=2",
        "https://fhir.test:8443/r4/Observation?page=2",
        "//evil.test/r4/Observation?page=2",
    ],
)
def test_next_link_to_another_origin_is_refused(server, next_url):
    server.get(SEARCH_URL).respond(200, json=searchset("a", next_url=next_url))
    exc = expect(FhirPagingError, _search)
    assert "origin" in exc.reason
    assert len(server.calls) == 1  # the token never went anywhere else


def test_relative_next_link_is_followed_with_the_token(server):
    page2 = server.get(SEARCH_URL, params={"page": "2"}).respond(200, json=searchset("b"))
    server.get(SEARCH_URL).respond(200, json=searchset("a", next_url="Observation?page=2"))
    result = asyncio.run(_search())
    assert [r["id"] for r in result.resources] == ["a", "b"] and result.pages == 2
    assert page2.calls.last.request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_huge_bundle_refused_by_declared_length(server):
    server.get(SEARCH_URL).respond(200, content=b"{}", headers={"Content-Length": str(50 * 1024 * 1024)})
    exc = expect(FhirMalformed, _search)
    assert "too large" in exc.reason


def test_huge_bundle_refused_while_streaming(server):
    chunks_sent = 0

    async def endless_bundle() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        yield b'{"resourceType":"Bundle","type":"searchset","entry":['
        while True:  # never ends: only the size cap stops the read
            chunks_sent += 1
            yield b'{"resource":{"resourceType":"Observation","id":"x"}},' * 1000

    server.get(SEARCH_URL).mock(return_value=httpx.Response(200, content=endless_bundle()))
    exc = expect(FhirMalformed, lambda: _search(max_response_bytes=1024 * 1024))
    assert "too large" in exc.reason
    assert chunks_sent < 40  # ~52 KB a chunk: stopped just past 1 MB


def test_default_size_cap_accepts_a_large_but_sane_bundle(server):
    ids = [f"o{i}" for i in range(5000)]
    server.get(SEARCH_URL).respond(200, json=searchset(*ids))
    assert len(asyncio.run(_search()).resources) == 5000


def test_outcome_entries_are_warnings_not_data(server):
    bundle = searchset("a")
    bundle["entry"].append({"resource": outcome("not-supported"), "search": {"mode": "outcome"}})
    server.get(SEARCH_URL).respond(200, json=bundle)
    result = asyncio.run(_search())
    assert [r["id"] for r in result.resources] == ["a"]
    assert result.warnings == [outcome("not-supported")]


def test_read_checks_the_resource_type(server):
    server.get(f"{BASE}/Patient/p1").respond(200, json={"resourceType": "Observation", "id": "p1"})

    async def call() -> dict:
        async with FhirClient() as client:
            return await client.read(BASE, "Patient/p1", TOKEN, time.monotonic() + DEADLINE)

    exc = expect(FhirMalformed, call)
    assert "instead" in exc.reason


def test_read_not_found(server):
    server.get(f"{BASE}/Patient/p1").respond(404, json=outcome("not-found"))

    async def call() -> dict:
        async with FhirClient() as client:
            return await client.read(BASE, "Patient/p1", TOKEN, time.monotonic() + DEADLINE)

    assert expect(FhirNotFound, call).outcome == outcome("not-found")


def test_non_http_base_is_unreachable():
    async def call() -> SearchResult:
        async with FhirClient() as client:
            return await client.search("file:///etc", QUERY, TOKEN, time.monotonic() + DEADLINE)

    expect(FhirUnreachable, call)


@pytest.mark.parametrize("base", ["http://127.0.0.1:99999/fhir", "http:///fhir", "", "ftp://fhir.test/r4"])
def test_unusable_base_urls_are_unreachable(base):
    async def call() -> SearchResult:
        async with FhirClient() as client:
            return await client.search(base, QUERY, TOKEN, time.monotonic() + DEADLINE)

    expect(FhirUnreachable, call)


@pytest.mark.parametrize("token", [f"{TOKEN}\r\nX-Injected: 1", f"{TOKEN} x", f"{TOKEN}é", f"{TOKEN}\n"])
def test_token_that_cannot_be_a_header_is_refused_before_sending(server, token):
    route = server.get(SEARCH_URL).respond(200, json=searchset())
    exc = expect(FhirAuthError, lambda: _search(token=token))
    assert exc.status is None and not route.called


def test_undecodable_body_is_malformed(server):
    async def not_gzip() -> AsyncIterator[bytes]:
        yield b"not gzip at all"

    response = httpx.Response(200, content=not_gzip(), headers={"Content-Encoding": "gzip"})
    server.get(SEARCH_URL).mock(return_value=response)
    expect(FhirMalformed, _search)
