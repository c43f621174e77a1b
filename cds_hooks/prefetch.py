"""Prefetch: template rendering, the state of each key the client sent, and fetching what it lacks.

Per key a CDS client may send data, `null` (it looked and found nothing), nothing (it did not try),
an OperationOutcome (it tried and failed) or a searchset with a `next` link (it stopped early). Only
the last three send us to the FHIR server; all such keys are fetched in parallel within one deadline.

Two hooks for the caller, both free of any domain knowledge here: `reuse` hands in resources for
keys obtained earlier (e.g. by an earlier hook of the same workflow), used instead of fetching; and
`stop_paging(key, resources_so_far)` may end the paging of one key early when the caller knows the
remaining pages cannot matter. Without a stop, paging past `max_pages` is an error, never a silent
truncation.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, cast
from urllib.parse import quote

from .fhir_client import (
    DEFAULT_MAX_PAGES,
    FhirAuthError,
    FhirClient,
    FhirError,
    FhirMalformed,
    FhirNotFound,
    FhirPagingError,
    FhirTimeout,
    FhirUnreachable,
    bundle_entries,
    next_link,
)

_TOKEN = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_READ = re.compile(r"[A-Z][A-Za-z]*/[^/?]+")
_USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}


class KeyState(StrEnum):
    PRESENT = "present"
    NULL = "null"
    MISSING = "missing"
    FAILED = "failed"
    PAGINATED = "paginated"


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()
"""Stands for a key the client left out: `classify(prefetch.get(key, ABSENT))`."""


def classify(value: object) -> KeyState:
    if value is ABSENT:
        return KeyState.MISSING
    if value is None:
        return KeyState.NULL
    rtype = value.get("resourceType") if isinstance(value, dict) else None
    if rtype == "OperationOutcome":
        return KeyState.FAILED
    if rtype == "Bundle":
        return KeyState.PAGINATED if isinstance(value, dict) and next_link(value) else KeyState.PRESENT
    # Anything that is not a resource is a client failure too: fetching beats guessing what it meant.
    return KeyState.PRESENT if isinstance(rtype, str) and rtype else KeyState.FAILED


def render(template: str, context: dict, user_practitioner_id: str | None = None) -> str | None:
    """The template with its tokens filled and URL-encoded, or None if any token cannot be filled.

    `user_practitioner_id` (a bare id) overrides what `{{userPractitionerId}}` derives from context.userId.
    """
    unresolved = False

    def substitute(match: re.Match[str]) -> str:
        nonlocal unresolved
        value = _token_value(match.group(1), context, user_practitioner_id)
        if value is None:
            unresolved = True
            return ""
        return value

    rendered = _TOKEN.sub(substitute, template)
    return None if unresolved else rendered


def _token_value(name: str, context: dict, user_practitioner_id: str | None) -> str | None:
    if name.startswith("context."):
        value: object = context
        for part in name.split(".")[1:]:
            value = value.get(part) if isinstance(value, dict) else None
        return _encode(value)
    rtype = _USER_TOKENS.get(name)
    if rtype is None:
        return None  # e.g. the STU `{{today()}}` expressions: not ours to evaluate
    if rtype == "Practitioner" and user_practitioner_id:
        return _encode(user_practitioner_id)
    user = context.get("userId")
    # userId is "Type/id"; an absolute URL ending in Type/id is tolerated.
    parts = user.rstrip("/").split("/") if isinstance(user, str) else []
    return _encode(parts[-1]) if len(parts) >= 2 and parts[-2] == rtype else None


def _encode(value: object) -> str | None:
    # Every reserved character is escaped, so an id cannot add a parameter (&), a path segment (/),
    # an OR (,) or a system|code split (|) to the query. An empty id is unresolved: `patient=` with
    # nothing after it would match every patient on some servers.
    if isinstance(value, bool):
        return None
    if isinstance(value, (str, int)) and str(value):
        return quote(str(value), safe="")
    if isinstance(value, list) and value:
        parts = [part for part in map(_encode, value) if part]
        return ",".join(parts) if len(parts) == len(value) else None
    return None


@dataclass(frozen=True)
class KeyFailure:
    reason: str
    # An OperationOutcome IssueType code for the answer to the CDS client.
    code: str = "exception"
    status: int | None = None
    outcome: dict | None = None

    @classmethod
    def from_error(cls, error: FhirError) -> KeyFailure:
        return cls(error.reason, _issue_code(error), error.status, error.outcome)


def _issue_code(error: FhirError) -> str:
    if isinstance(error, FhirTimeout):
        return "timeout"
    if isinstance(error, FhirUnreachable):
        return "transient"
    if isinstance(error, FhirAuthError):
        return "forbidden" if error.status == 403 else "login"
    if isinstance(error, FhirNotFound):
        return "not-found"
    if isinstance(error, FhirMalformed):
        return "structure"
    if isinstance(error, FhirPagingError):
        return "incomplete"
    return "exception"


class PrefetchUnavailable(Exception):
    """Required prefetch keys could not be obtained; `failures` says, per key, why.

    `meta` is every key's KeyMeta (where it came from, pages fetched), for logging.
    """

    def __init__(self, failures: Mapping[str, KeyFailure], meta: Mapping[str, KeyMeta] | None = None) -> None:
        self.failures = dict(sorted(failures.items()))
        self.meta = dict(meta or {})
        self.keys = list(self.failures)
        self.reason = "; ".join(f"{key}: {f.reason}" for key, f in self.failures.items())
        super().__init__(f"prefetch unavailable ({self.reason})")

    def issues(self) -> list[dict]:
        """OperationOutcome.issue entries, one per key, for the error answer."""
        return [
            {"severity": "error", "code": f.code, "diagnostics": f"prefetch '{key}' unavailable: {f.reason}"}
            for key, f in self.failures.items()
        ]


@dataclass(frozen=True)
class KeyMeta:
    state: KeyState  # what the client sent
    # where the resources came from: the client's prefetch, the FHIR server, or the caller's `reuse`
    source: Literal["prefetch", "fhir", "reused"]
    pages: int = 0  # pages fetched from the FHIR server
    warnings: list[dict] = field(default_factory=list)  # outcome-mode OperationOutcomes
    failure: KeyFailure | None = None
    stopped: bool = False  # paging ended early by the caller's stop_paging (a `next` link was left)


class Resolved(Mapping[str, list[dict]]):
    """key -> resources. A key whose (optional) fetch failed is absent here and has `meta[key].failure`."""

    def __init__(self, data: dict[str, list[dict]], meta: dict[str, KeyMeta]) -> None:
        self._data = data
        self.meta = meta

    def __getitem__(self, key: str) -> list[dict]:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    @property
    def failures(self) -> dict[str, KeyFailure]:
        return {key: m.failure for key, m in self.meta.items() if m.failure is not None}


@dataclass(frozen=True)
class _Fetched:
    resources: list[dict]
    pages: int
    warnings: list[dict]
    stopped: bool = False


StopPaging = Callable[[str, Sequence[dict]], bool]
"""stop_paging(key, resources_so_far) -> True when the key's remaining pages are not needed."""


def lacking(templates: Mapping[str, str], prefetch: object, *, paginated: bool = True) -> set[str]:
    """The template keys for which the client's prefetch holds no usable value (missing, failed and,
    unless `paginated=False`, a first page with a `next` link)."""
    sent = prefetch if isinstance(prefetch, Mapping) else {}
    usable = {KeyState.PRESENT, KeyState.NULL} | (set() if paginated else {KeyState.PAGINATED})
    return {key for key in templates if classify(sent.get(key, ABSENT)) not in usable}


async def resolve(
    templates: Mapping[str, str],
    context: dict,
    prefetch: dict | None,
    client: FhirClient | None,
    fhir_server: str | None,
    access_token: str | None,
    deadline: float,
    *,
    required: set[str] | None = None,
    max_pages: int = DEFAULT_MAX_PAGES,
    user_practitioner_id: str | None = None,
    reuse: Mapping[str, Sequence[dict]] | None = None,
    stop_paging: StopPaging | None = None,
) -> Resolved:
    """Every template key's resources, from the prefetch where usable, else from `fhir_server`.

    `required` (default: all keys) are the keys without which no answer may be given: if any of
    them cannot be obtained, PrefetchUnavailable is raised. `deadline` is an absolute
    time.monotonic() value covering all fetches together.

    `reuse` (key -> resources) fills keys the prefetch lacks without a request; usable prefetch
    values always win over it. `stop_paging(key, resources_so_far)` is asked whenever a search of
    `key` has a `next` link left (including a paginated prefetch Bundle before its continuation is
    fetched); True ends that key's paging with what it has. A search that is not stopped and has
    more than `max_pages` pages fails.
    """
    required = set(templates) if required is None else set(required)
    if unknown := required - set(templates):
        raise ValueError(f"required keys without a template: {sorted(unknown)}")
    sent = prefetch if isinstance(prefetch, dict) else {}
    data: dict[str, list[dict]] = {}
    meta: dict[str, KeyMeta] = {}
    pending: dict[str, tuple[KeyState, object]] = {}
    for key in templates:
        value = sent.get(key, ABSENT)
        state = classify(value)
        if state is KeyState.PRESENT:
            data[key], warnings = _flatten(cast(dict, value))
            meta[key] = KeyMeta(state, "prefetch", warnings=warnings)
        elif state is KeyState.NULL:
            data[key] = []
            meta[key] = KeyMeta(state, "prefetch")
        elif reuse is not None and key in reuse:
            data[key] = list(reuse[key])
            meta[key] = KeyMeta(state, "reused")
        else:
            pending[key] = (state, value)

    if pending:
        fetch = _Fetcher(client, fhir_server, access_token, deadline, max_pages, context, user_practitioner_id)
        async with asyncio.TaskGroup() as group:
            tasks = {
                key: group.create_task(fetch(templates[key], state, value, _stop_for(stop_paging, key)))
                for key, (state, value) in pending.items()
            }
        for key, task in tasks.items():
            state = pending[key][0]
            result = task.result()
            if isinstance(result, KeyFailure):
                meta[key] = KeyMeta(state, "fhir", failure=result)
            else:
                data[key] = result.resources
                meta[key] = KeyMeta(state, "fhir", result.pages, result.warnings, stopped=result.stopped)

    resolved = Resolved(data, meta)
    if failed := {key: f for key, f in resolved.failures.items() if key in required}:
        raise PrefetchUnavailable(failed, meta)
    return resolved


def _stop_for(stop_paging: StopPaging | None, key: str) -> Callable[[list[dict]], bool] | None:
    if stop_paging is None:
        return None
    return lambda resources: bool(stop_paging(key, resources))


def _flatten(value: dict) -> tuple[list[dict], list[dict]]:
    if value.get("resourceType") == "Bundle":
        return bundle_entries(value)
    return [value], []


@dataclass(frozen=True)
class _Fetcher:
    client: FhirClient | None
    fhir_server: str | None
    token: str | None
    deadline: float
    max_pages: int
    context: dict
    user_practitioner_id: str | None

    async def __call__(
        self, template: str, state: KeyState, value: object, stop: Callable[[list[dict]], bool] | None = None
    ) -> _Fetched | KeyFailure:
        if not self.fhir_server:
            return KeyFailure("not in prefetch and the request has no fhirServer", "required")
        if self.client is None:
            return KeyFailure("not in prefetch and no FHIR client is configured", "not-supported")
        query = render(template, self.context, self.user_practitioner_id)
        try:
            if state is KeyState.PAGINATED:
                return await self._continue(cast(dict, value), query, stop)
            if query is None:
                return KeyFailure("prefetch template has a token the hook context cannot fill", "required")
            return await self._run(query, stop)
        except FhirError as error:
            return KeyFailure.from_error(error)

    async def _run(self, query: str, stop: Callable[[list[dict]], bool] | None = None) -> _Fetched:
        assert self.client is not None and self.fhir_server is not None
        if _READ.fullmatch(query):
            try:
                resource = await self.client.read(self.fhir_server, query, self.token, self.deadline)
            except FhirNotFound:
                return _Fetched([], 1, [])  # the server says it does not exist: absent, like `null`
            return _Fetched([resource], 1, [])
        result = await self.client.search(self.fhir_server, query, self.token, self.deadline, self.max_pages, stop=stop)
        return _Fetched(result.resources, result.pages, result.warnings, result.stopped)

    async def _continue(
        self, bundle: dict, query: str | None, stop: Callable[[list[dict]], bool] | None = None
    ) -> _Fetched:
        assert self.client is not None and self.fhir_server is not None
        first, warnings = bundle_entries(bundle)
        if stop is not None and stop(list(first)):
            return _Fetched(first, 0, warnings, True)
        rest_stop = None if stop is None else (lambda resources: stop(first + resources))
        try:
            rest = await self.client.continue_search(
                self.fhir_server, next_link(bundle) or "", self.token, self.deadline, self.max_pages, stop=rest_stop
            )
        except (FhirPagingError, FhirNotFound):
            # The client's link may point at a host name we may not use, or at a paging cursor that has
            # expired: running the template again gives the complete result from the start.
            if query is None:
                raise
            return await self._run(query, stop)
        return _Fetched(first + rest.resources, rest.pages, warnings + rest.warnings, rest.stopped)
