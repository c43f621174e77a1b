"""One order hook, from its body to its answer: the steps read top to bottom in `OrderHookPipeline.run`.

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
from cds_hooks.models import CardsResponse, HookRequest, dump_json, order_context, parse_body
from cds_hooks.outcome import CDSHookError
from cds_hooks.prefetch import KeyMeta, PrefetchUnavailable, lacking, resolve
from cds_hooks.registry import ServiceDefinition
from service.cards.order_hooks import HT_KEYS, LAB_KEYS, Clinic, cards_for, trigger_for
from service.web import metrics
from service.web.paging import lookback_stop
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
        trace = _Trace(time.perf_counter(), UNAUTHENTICATED if issuer == DEV_ISSUER else issuer)
        req = _parse(service, body)
        ctx = order_context(req)
        trigger = trigger_for(ctx, self.clinic, datetime.now(UTC))
        t = trace.lap("parse", trace.started)
        if trigger is None:
            return self._done(req, service, trace, HookAnswer(200, EMPTY), 0)

        templates = self.clinic.templates
        # SSRF guard: a server that is not allowed is never contacted.
        refusal, fhir_server = fhir_server_refusal(
            self.allowlist, req.fhirServer, lacking(templates, req.prefetch), set(HT_KEYS)
        )
        if refusal:
            return self._done(req, service, trace, HookAnswer(412, refusal), 0)

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
            return self._done(req, service, trace, HookAnswer(412, outcome), 0)
        t = trace.lap("fetch", t)
        metrics.count_fhir_fetches(resolved.meta)

        cards = cards_for(trigger, ctx, resolved, self.clinic)
        t = trace.lap("score", t)
        self.reuse.after_resolve(req.hook, rkey, resolved, reusable_keys(resolved.meta, cards[0]))
        answer = dump_json(CardsResponse.of(cards))  # cards are validated when built
        trace.lap("cards", t)
        metrics.count_cards(cards)
        trace.fetch = _fetch_summary(cache, resolved.meta)
        return self._done(req, service, trace, HookAnswer(200, answer), len(cards))

    def _done(
        self, req: HookRequest, service: ServiceDefinition, trace: _Trace, answer: HookAnswer, n_cards: int
    ) -> HookAnswer:
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
