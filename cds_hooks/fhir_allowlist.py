"""Which `fhirServer` URLs the service may contact (SSRF guard).

`fhirServer` comes from the caller, so it is never contacted unless it lies under one of the
configured base URLs: same scheme, same host, same port and a path that is the configured path or
below it by whole segments. URLs are normalised (case of scheme and host, default ports, a trailing
slash, a trailing dot on the host) and anything that could make two parsers disagree is refused
outright: userinfo (`https://ehr.example.org@evil.com`), backslashes, percent-escapes, dot
segments, control characters and whitespace, non-ASCII host names, a query or a fragment.
Matching is exact on the host: `https://ehr.example.org.evil.com` is not `https://ehr.example.org`.

An allowlist entry may give the port as `*` (`http://127.0.0.1:*`): any port on that host, meant
for development and tests where servers listen on ephemeral ports.

Nothing in this module knows anything clinical.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .outcome import operation_outcome

_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")
_IPV6 = re.compile(r"^\[[0-9a-f:.]+\]$")
_SEGMENT = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@]+$")
ANY_PORT = -1

NOT_ALLOWED_DIAGNOSTICS = (
    "the FHIR server named in fhirServer is not allowed for this service; it was not contacted "
    "(ask the service's administrator to add it to fhir.allowed_servers)"
)


@dataclass(frozen=True, slots=True)
class ServerUrl:
    scheme: str
    host: str
    port: int
    path: tuple[str, ...]

    def __str__(self) -> str:
        port = "*" if self.port == ANY_PORT else str(self.port)
        return f"{self.scheme}://{self.host}:{port}/" + "/".join(self.path)


def parse_server_url(url: str, *, allow_any_port: bool = False) -> ServerUrl | None:
    """The normalised parts of an http(s) base URL, or None when it is not one we dare compare."""
    if not isinstance(url, str) or not url or len(url) > 2048:
        return None
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F or ord(c) > 0x7E for c in url):
        return None  # whitespace, control characters, non-ASCII (IDN lookalikes): refuse
    if "\\" in url or "%" in url:
        return None  # parsers disagree on backslashes; escapes could hide '/', '.', '@'
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or parts.query or parts.fragment or "?" in url or "#" in url:
        return None
    netloc = parts.netloc
    if not netloc or "@" in netloc:
        return None  # userinfo: https://ehr.example.org@evil.com goes to evil.com
    host, port = _split_host_port(netloc, scheme, allow_any_port)
    if host is None or port is None:
        return None
    path = parts.path
    if path and not path.startswith("/"):
        return None
    segments = tuple(s for s in path.split("/"))[1:] if path else ()
    if segments and segments[-1] == "":
        segments = segments[:-1]  # one trailing slash is the same base
    for seg in segments:
        if seg in ("", ".", "..") or not _SEGMENT.match(seg):
            return None  # empty (//), dot segments, odd characters
    return ServerUrl(scheme, host, port, segments)


def _split_host_port(netloc: str, scheme: str, allow_any_port: bool) -> tuple[str | None, int | None]:
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            return None, None
        host, rest = netloc[: end + 1].lower(), netloc[end + 1 :]
        if not _IPV6.match(host):
            return None, None
    else:
        host, sep, port_text = netloc.partition(":")
        rest = f":{port_text}" if sep else ""
        host = host.lower()
        if host.endswith("."):
            host = host[:-1]
        if not _HOST.match(host):
            return None, None
    if not rest:
        return host, _DEFAULT_PORTS[scheme]
    if not rest.startswith(":"):
        return None, None
    port_text = rest[1:]
    if port_text == "*" and allow_any_port:
        return host, ANY_PORT
    if not port_text.isdigit() or len(port_text) > 5:
        return None, None
    port = int(port_text)
    if not 0 < port < 65536:
        return None, None
    return host, port


class FhirServerAllowlist:
    """`allows(url)`: may the service send requests (with the EHR's token) to this FHIR base URL?"""

    def __init__(self, entries: Iterable[str], *, require_https: bool = True) -> None:
        self.require_https = require_https
        self._entries: list[ServerUrl] = []
        for entry in entries:
            parsed = parse_server_url(entry, allow_any_port=True)
            if parsed is None:
                raise ValueError(f"fhir.allowed_servers: {entry!r} is not a plain http(s) base URL")
            self._entries.append(parsed)

    @property
    def entries(self) -> list[ServerUrl]:
        return list(self._entries)

    def allows(self, url: str | None) -> bool:
        if not url:
            return False
        candidate = parse_server_url(url)
        if candidate is None:
            return False
        if self.require_https and candidate.scheme != "https":
            return False
        return any(_under(candidate, entry) for entry in self._entries)


def _under(candidate: ServerUrl, entry: ServerUrl) -> bool:
    return (
        candidate.scheme == entry.scheme
        and candidate.host == entry.host
        and (entry.port == ANY_PORT or candidate.port == entry.port)
        and candidate.path[: len(entry.path)] == entry.path
    )


def fhir_server_refusal(
    allowlist: FhirServerAllowlist, fhir_server: str | None, lacking: set[str], required: set[str]
) -> tuple[dict | None, str | None]:
    """Decide whether `fhir_server` may be contacted for the keys the prefetch lacks.

    Returns (412 OperationOutcome, None) when a *required* key would have to come from a server that
    is not allowed; otherwise (None, the server to use), where the server is None when it is not
    allowed: the optional keys then stay unavailable ("cannot tell") and the server is never contacted.
    """
    if not fhir_server or not lacking or allowlist.allows(fhir_server):
        return None, fhir_server
    if lacking & required:
        return operation_outcome(NOT_ALLOWED_DIAGNOSTICS, "forbidden", expression=["fhirServer"]), None
    return None, None
