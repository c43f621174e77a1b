"""One hook, from its body to its answer: the steps read top to bottom in `OrderHookPipeline.run` (the
order hooks) and `FollowUpPipeline.run` (patient-view, further down).

parse → trigger (not LD: no cards) → SSRF check → reuse lookup → resolve prefetch (FHIR fallback)
→ score and cards → reuse store → log line. The route only hands over the body and the caller.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from cds_hooks.fhir_allowlist import FhirServerAllowlist, fhir_server_refusal
from cds_hooks.fhir_client import FhirClient
from cds_hooks.models import CardsResponse, HookRequest, dump_json, order_context, parse_body, patient_context
from cds_hooks.outcome import CDSHookError
from cds_hooks.prefetch import KeyMeta, PrefetchUnavailable, Resolved, StopPaging, lacking, resolve
from cds_hooks.registry import ServiceDefinition
from service.cards.follow_up_hook import course_templates, find_course, follow_up_cards
from service.cards.order_hooks import HT_KEYS, LAB_KEYS, Clinic, cards_for, trigger_for
from service.web import metrics
from service.web.paging import infusion_stop, lookback_stop
from service.web.reuse import DEV_ISSUER, ReuseCache, reusable_keys, reuse_key
from service.web.settings import FhirSection

log = logging.getLogger("hematotox.hook")
# The HT keys are always read to the end (within the page cap and deadline): servers sort results
# that have only `issued` (no effective[x]) last, and those still count (spec §1.5), so stopping at
# the lookback could drop the newest platelet count and give a wrong LOW.
EARLY_STOP_KEYS = tuple(k for k in LAB_KEYS if k not in HT_KEYS)
EMPTY = b'{"cards":[]}'
UNAUTHENTICATED = "none (development mode)"


@dataclass
class HookAnswer:
    """What the route writes: a status and a JSON body (bytes already serialised, or a dict)."""

    status: int
    body: bytes | dict[str, Any]


@dataclass
class _Trace:
    """Timings and counts for the hook's one log line (never tokens, patient ids or values)."""

    started: float
    # How the caller was authenticated: the verified JWT issuer, or UNAUTHENTICATED.
    caller: str = UNAUTHENTICATED
    timings: dict[str, float] = field(default_factory=dict)
    fetch: dict[str, Any] | None = None

    def lap(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.timings[stage] = now - since
        return now


@dataclass
class OrderHookPipeline:
    clinic: Clinic
    fhir_settings: FhirSection
    fhir: FhirClient
    allowlist: FhirServerAllowlist
    reuse: ReuseCache

    async def run(self, service: ServiceDefinition, body: bytes, issuer: str) -> HookAnswer:
        trace = _Trace(time.perf_counter(), _caller(issuer))
        req = _parse(service, body)
        ctx = order_context(req)
        trigger = trigger_for(ctx, self.clinic, datetime.now(UTC))
        t = trace.lap("parse", trace.started)
        if trigger is None:
            return _done(req, service, trace, HookAnswer(200, EMPTY), 0)

        templates = self.clinic.templates
        # SSRF guard: a server that is not allowed is never contacted.
        refusal, fhir_server = fhir_server_refusal(
            self.allowlist, req.fhirServer, lacking(templates, req.prefetch), set(HT_KEYS)
        )
        if refusal:
            return _done(req, service, trace, HookAnswer(412, refusal), 0)

        # order-select's data serves order-sign (same issuer, server, user, patient, LD orders);
        # never in place of a client's own first page: it may hold results newer than the cache.
        # Made only when the cache is read or written: the digest re-reads every draft order (~25 µs).
        rkey = functools.cache(lambda: reuse_key(issuer, fhir_server, ctx, self.clinic.vs))
        reused, cache = self.reuse.before_resolve(req.hook, rkey, lacking(templates, req.prefetch, paginated=False))
        f = self.fhir_settings
        try:
            resolved = await resolve(
                templates,
                req.context,
                req.prefetch,
                self.fhir,
                fhir_server,
                req.fhirAuthorization.access_token.get_secret_value() if req.fhirAuthorization else None,
                time.monotonic() + f.deadline_seconds,
                required=set(HT_KEYS),
                max_pages=f.max_pages,
                reuse=reused,
                stop_paging=lookback_stop(trigger.t0, self.clinic.rules, ctx.patient_id, EARLY_STOP_KEYS),
            )
        except PrefetchUnavailable as exc:
            trace.lap("fetch", t)
            metrics.count_fhir_fetches(exc.meta)
            trace.fetch = _fetch_summary(cache, exc.meta)
            outcome = {"resourceType": "OperationOutcome", "issue": exc.issues()}
            return _done(req, service, trace, HookAnswer(412, outcome), 0)
        t = trace.lap("fetch", t)
        metrics.count_fhir_fetches(resolved.meta)

        cards = cards_for(trigger, ctx, resolved, self.clinic)
        t = trace.lap("score", t)
        self.reuse.after_resolve(req.hook, rkey, resolved, reusable_keys(resolved.meta, cards[0]))
        answer = dump_json(CardsResponse.of(cards))  # cards are validated when built
        trace.lap("cards", t)
        metrics.count_cards(cards)
        trace.fetch = _fetch_summary(cache, resolved.meta)
        return _done(req, service, trace, HookAnswer(200, answer), len(cards))


def _caller(issuer: str) -> str:
    """How the caller was authenticated, for the log line: the verified JWT issuer, or UNAUTHENTICATED."""
    return UNAUTHENTICATED if issuer == DEV_ISSUER else issuer


def _done(req: HookRequest, service: ServiceDefinition, trace: _Trace, answer: HookAnswer, n_cards: int) -> HookAnswer:
    """The hook's one log line and its duration metric (every service the same)."""
    # One line per hook, keyed by hookInstance; no token, no patient id, no values.
    log.info(
        "hook",
        extra={
            "event": {
                "hookInstance": req.hookInstance,
                "service": service.id,
                "hook": req.hook,
                "caller": trace.caller,
                "status": answer.status,
                "cards": n_cards,
                "ms": {k: round(v * 1000, 2) for k, v in trace.timings.items()},
                **(trace.fetch or {}),
            }
        },
    )
    metrics.observe_hook(service.id, req.hook, sum(trace.timings.values()), answer.status)
    return answer


def _parse(service: ServiceDefinition, body: bytes) -> HookRequest:
    req = parse_body(body, HookRequest, "hook request")
    if req.hook != service.hook:
        raise CDSHookError(
            400,
            "invalid",
            f"service '{service.id}' answers hook '{service.hook}', not '{req.hook}'",
            expression=["hook"],
        )
    return req


def _fetch_summary(cache: str, meta: dict[str, KeyMeta]) -> dict[str, Any]:
    """Counts only (no keys' contents): the reuse cache, and what the FHIR fallback did."""
    fetched = [m for m in meta.values() if m.source == "fhir"]
    return {
        "cache": cache,
        "fhir": {
            "keysFetched": len(fetched),
            "keysFailed": sum(m.failure is not None for m in fetched),
            "keysReused": sum(m.source == "reused" for m in meta.values()),
            "pages": sum(m.pages for m in fetched),
            "stoppedEarly": sum(m.stopped for m in fetched),
        },
    }


def json_bytes(body: bytes | dict[str, Any]) -> bytes:
    return body if isinstance(body, bytes) else orjson.dumps(body)


@dataclass
class FollowUpPipeline:
    """patient-view during a course: the steps read top to bottom in `run`.

    parse → SSRF check → infusions (prefetch, else one search) → not in a course: no cards → SSRF
    check → course data (prefetch, else FHIR; every key required) → course, items, card → log line.
    One deadline covers both stages. A chart of a patient who is not in a course costs one search
    at most, and none when the client prefetched it.
    """

    clinic: Clinic
    fhir_settings: FhirSection
    fhir: FhirClient
    allowlist: FhirServerAllowlist

    async def run(self, service: ServiceDefinition, body: bytes, issuer: str) -> HookAnswer:
        trace = _Trace(time.perf_counter(), _caller(issuer))
        req = _parse(service, body)
        ctx = patient_context(req)
        clinic, follow_up, tz = self.clinic, self.clinic.follow_up, self.clinic.rules.tz
        today = datetime.now(UTC).astimezone(tz).date()
        deadline = time.monotonic() + self.fhir_settings.deadline_seconds
        stage1 = dict(service.prefetch)  # exactly what discovery declared
        t = trace.lap("parse", trace.started)

        try:
            found = await self._resolve(req, stage1, deadline, infusion_stop(today, tz, stage1))
        except _Refused as refused:
            trace.lap("infusions", t)
            trace.fetch = refused.summary
            return _done(req, service, trace, HookAnswer(412, refused.outcome), 0)
        course, infusion_flags = find_course(found, ctx.patient_id, clinic.vs, tz, follow_up, today)
        t = trace.lap("infusions", t)
        if course is None:
            trace.fetch = _fetch_summary("skip", found.meta)
            return _done(req, service, trace, HookAnswer(200, EMPTY), 0)

        templates = course_templates(course, clinic.vs, clinic.rules.lookback_days, today)
        try:
            data = await self._resolve(req, templates, deadline)
        except _Refused as refused:
            trace.lap("fetch", t)
            trace.fetch = _fetch_summary("skip", {**found.meta, **refused.meta})
            return _done(req, service, trace, HookAnswer(412, refused.outcome), 0)
        t = trace.lap("fetch", t)

        cards = follow_up_cards(course, infusion_flags, ctx.patient_id, data, clinic.vs, clinic.rules, follow_up, today)
        t = trace.lap("score", t)
        answer = dump_json(CardsResponse.of(cards))  # cards are validated when built
        trace.lap("cards", t)
        metrics.count_cards(cards)
        trace.fetch = _fetch_summary("skip", {**found.meta, **data.meta})
        return _done(req, service, trace, HookAnswer(200, answer), len(cards))

    async def _resolve(
        self, req: HookRequest, templates: dict[str, str], deadline: float, stop: StopPaging | None = None
    ) -> Resolved:
        """Every key of `templates` (all required), from the prefetch or the allowed FHIR server."""
        required = set(templates)
        # SSRF guard: a server that is not allowed is never contacted.
        refusal, fhir_server = fhir_server_refusal(
            self.allowlist, req.fhirServer, lacking(templates, req.prefetch), required
        )
        if refusal:
            raise _Refused(refusal, {})
        try:
            resolved = await resolve(
                templates,
                req.context,
                req.prefetch,
                self.fhir,
                fhir_server,
                req.fhirAuthorization.access_token.get_secret_value() if req.fhirAuthorization else None,
                deadline,
                required=required,
                max_pages=self.fhir_settings.max_pages,
                stop_paging=stop,
            )
        except PrefetchUnavailable as exc:
            metrics.count_fhir_fetches(exc.meta)
            raise _Refused({"resourceType": "OperationOutcome", "issue": exc.issues()}, exc.meta) from None
        metrics.count_fhir_fetches(resolved.meta)
        return resolved


class _Refused(Exception):
    """A stage cannot be answered: the 412 OperationOutcome, and what was fetched (for the log line)."""

    def __init__(self, outcome: dict[str, Any], meta: dict[str, KeyMeta]) -> None:
        super().__init__("prefetch unavailable")
        self.outcome = outcome
        self.meta = meta
        self.summary = _fetch_summary("skip", meta)
