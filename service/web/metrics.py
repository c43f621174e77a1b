"""Prometheus metrics of the service, and the small functions the rest of the code calls.

Every metric is defined here once; other modules only call the functions below, never
prometheus_client directly, so that names and labels stay one contract (docs: deploy/README.md):

| metric | type | labels |
|---|---|---|
| `hematotox_hook_duration_seconds` | histogram | `service`, `hook`, `status` |
| `hematotox_cards_total` | counter | `group` (`low`, `high`, `indeterminate`, `none` for cards without a risk group) |
| `hematotox_fhir_fallback_calls_total` | counter | — (one per prefetch key fetched from the EHR's FHIR server) |
| `hematotox_fhir_fallback_failures_total` | counter | `reason` (OperationOutcome issue code, e.g. `timeout`) |
| `hematotox_jwt_rejections_total` | counter | `reason` |

Labels carry no patient data, no token and no free text: values that are not on a short,
fixed list are reduced to `[a-z0-9_-]`, at most 40 characters, so that a caller cannot blow
up the number of series by accident.

Several worker processes (`hematotox-cds serve --workers N`, N > 1) each count on their own; a
scrape reaches one of them. prometheus-client's multiprocess mode fixes that: every process
writes its values to files in the directory named by `PROMETHEUS_MULTIPROC_DIR`, and `/metrics`
adds them up. `prepare_multiprocess()` (called by the CLI before the workers start) sets that
directory up; it must happen before any worker imports prometheus_client, which is why it is
an environment variable and not a setting. The Kubernetes deployment runs one worker per pod
(scale pods, not workers), so this mode is off there.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# No `*_created` series: they double the output and no dashboard or alert here reads them.
disable_created_metrics()

# CDS clients give a hook a few seconds (Epic: 10 s at most, usually much less); the FHIR fallback
# deadline defaults to 3 s. Buckets are dense below 1 s and reach past the longest deadline.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
GROUPS = ("low", "high", "indeterminate")
SERVICES = {
    "hematotox-order-select": "order-select",
    "hematotox-order-sign": "order-sign",
    "hematotox-follow-up": "patient-view",
}

HOOK_DURATION = Histogram(
    "hematotox_hook_duration_seconds",
    "Time to answer a CDS hook call, from reading the body to the serialised answer.",
    ["service", "hook", "status"],
    buckets=LATENCY_BUCKETS,
)
CARDS = Counter(
    "hematotox_cards",
    "Cards emitted, by the confirmed CAR-HEMATOTOX risk group of the card ('none': no risk group).",
    ["group"],
)
FHIR_FALLBACK_CALLS = Counter(
    "hematotox_fhir_fallback_calls",
    "Prefetch keys fetched from the EHR's FHIR server because the prefetch lacked them.",
)
FHIR_FALLBACK_FAILURES = Counter(
    "hematotox_fhir_fallback_failures",
    "FHIR fallback fetches that failed, by OperationOutcome issue code (timeout, transient, login, ...).",
    ["reason"],
)
JWT_REJECTIONS = Counter(
    "hematotox_jwt_rejections",
    "Hook calls refused because the EHR's JWT was missing or not acceptable, by reason.",
    ["reason"],
)

# Series that dashboards and alerts expect to exist from the first scrape, at zero.
for _service, _hook in SERVICES.items():
    HOOK_DURATION.labels(_service, _hook, "200")
for _group in (*GROUPS, "none"):
    CARDS.labels(_group)

_LABEL_JUNK = re.compile(r"[^a-z0-9_-]+")


def label(value: object, default: str = "unknown") -> str:
    """A label value that is safe to export: lower case, [a-z0-9_-], at most 40 characters."""
    text = _LABEL_JUNK.sub("_", str(value).strip().lower()).strip("_")[:40]
    return text or default


# ---- what the rest of the service calls -------------------------------------------------------


def observe_hook(service: str, hook: str, seconds: float, status: int | str = 200) -> None:
    """One answered hook call: its service id, hook name, HTTP status and duration."""
    HOOK_DURATION.labels(label(service), label(hook), label(status)).observe(max(0.0, seconds))


def count_card(group: str | None) -> None:
    """One card emitted; `group` is the confirmed risk group, None for a card that has none."""
    CARDS.labels(group if group in GROUPS else "none").inc()


def count_cards(cards: Iterable[object]) -> None:
    """Every card of an answer (Card models or dicts), by the group in its `hematotox-cds` extension."""
    for card in cards:
        count_card(risk_group(card))


def risk_group(card: object) -> str | None:
    """`extension["hematotox-cds"]["hematotox"]["confirmed"]["group"]` of a card, if it has one."""
    ext = card.get("extension") if isinstance(card, Mapping) else getattr(card, "extension", None)
    try:
        group = ext["hematotox-cds"]["hematotox"]["confirmed"]["group"]  # type: ignore[index]
    except (KeyError, TypeError):
        return None
    return group if isinstance(group, str) else None


def count_fhir_fetch(ok: bool, reason: str | None = None) -> None:
    """One prefetch key fetched from the FHIR server; `reason` (issue code) when it failed."""
    FHIR_FALLBACK_CALLS.inc()
    if not ok:
        FHIR_FALLBACK_FAILURES.labels(label(reason or "error")).inc()


# Failures of keys for which no request was sent (no fhirServer, unfillable template, no
# client): not calls. A 412 for that shows in hematotox_hook_duration_seconds.
_NOT_ATTEMPTED = frozenset({"required", "not-supported"})


def count_fhir_fetches(meta: Mapping[str, object]) -> None:
    """Count the FHIR fallback fetches of one hook call from `resolve()`'s per-key KeyMeta
    (`resolved.meta`, or `PrefetchUnavailable.meta` for a 412): every key whose source is the FHIR
    server and for which a request was sent, failed if it has a `failure`."""
    for m in meta.values():
        if getattr(m, "source", None) != "fhir":
            continue  # from the client's prefetch, or reused from order-select
        failure = getattr(m, "failure", None)
        if failure is None:
            count_fhir_fetch(True)
        elif (code := getattr(failure, "code", None) or "error") not in _NOT_ATTEMPTED:
            count_fhir_fetch(False, code)


def count_jwt_rejection(reason: str) -> None:
    """One hook call refused by the JWT check; `reason` is a short code, e.g. `expired`, `bad-signature`."""
    JWT_REJECTIONS.labels(label(reason)).inc()


# ---- exposition -------------------------------------------------------------------------------


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def render() -> tuple[bytes, str]:
    """The Prometheus text exposition of every metric (all worker processes in multiprocess mode)."""
    if multiprocess_enabled():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def prepare_multiprocess(workers: int) -> str | None:
    """Set up prometheus-client's multiprocess mode for `workers` > 1; call before the workers start.

    Uses `PROMETHEUS_MULTIPROC_DIR` if set (its old `*.db` files are removed: they belong to
    processes that are gone), else a fresh directory under the temp dir (a writable emptyDir in
    Kubernetes, a tmpfs in compose). Returns the directory, or None when one process serves all.
    """
    path = os.environ.get(MULTIPROC_ENV)
    if workers <= 1 and not path:
        return None
    if path:
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
    else:
        directory = Path(tempfile.mkdtemp(prefix="hematotox-metrics-"))
        os.environ[MULTIPROC_ENV] = str(directory)
    return str(directory)
