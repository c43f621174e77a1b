"""Reuse of work between hooks: the data resolved at `order-select` serves the `order-sign` that follows.

What is kept is the data *fetched from the FHIR server* (prefetch key -> resources), never cards: card uuids must be
fresh, and T0 and everything clinical are recomputed from the order-sign request. At order-sign only
keys the client's prefetch lacks are taken from here; a usable prefetch value always wins.

An entry is found only for the same
- issuer: the verified JWT `iss` the security layer puts on `request.state.cds_client`, or one
  constant in development mode (no verified client);
- `fhirServer` (the data came from there, with that EHR's token);
- `context.userId` (data fetched under one user's authorization is not shown to another);
- `context.patientId`;
- LD orders of the draft: resource type and id, medication (codes and text), planned start.
So never across patients, issuers, servers or users, and a changed LD order set is a miss.

In memory, per process, bounded by `cache.max_entries` and `cache.ttl_seconds` (cachetools
TTLCache); an entry larger than MAX_ENTRY_BYTES is not kept. Values are stored serialised, so a
reader can never alter what the next reader gets.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import orjson
from cachetools import TTLCache

from cds_hooks.models import OrderContext
from service.cards.order_hooks import HT_KEYS
from service.clinical.orders import ld_drug
from service.clinical.valuesets import ValueSets

DEV_ISSUER = "(development: no verified client)"
MAX_ENTRY_BYTES = 4 * 1024 * 1024
STORE_AT = "order-select"
READ_AT = "order-sign"

CacheState = Literal["hit", "miss", "skip"]
ReuseKey = tuple[str, str, str, str, str]


def issuer_of(state: object) -> str:
    """The verified client (JWT `iss`) of a request, from `request.state`; a constant without one."""
    issuer = getattr(state, "cds_client", None)
    return issuer if isinstance(issuer, str) and issuer else DEV_ISSUER


def ld_orders_fingerprint(ctx: OrderContext, vs: ValueSets) -> str:
    """A digest of the draft's LD orders: type/id, medication and planned start of each."""
    items = sorted(
        _order_item(order)
        for order in ctx.draft_orders
        if ld_drug(order, ctx.patient_id, ctx.draft_orders, vs) is not None
    )
    return hashlib.sha256(b"\n".join(items)).hexdigest()


def _order_item(order: dict) -> bytes:
    # Plain JSON from the client: anything may be where a list is expected.
    starts = []
    for di in _list(order.get("dosageInstruction")):
        timing = di.get("timing") if isinstance(di, dict) else None
        if not isinstance(timing, dict):
            continue
        repeat = timing["repeat"] if isinstance(timing.get("repeat"), dict) else {}
        bounds = repeat["boundsPeriod"] if isinstance(repeat.get("boundsPeriod"), dict) else {}
        starts.append([bounds.get("start"), timing.get("event")])
    contained = [
        m.get("code")
        for m in _list(order.get("contained"))
        if isinstance(m, dict) and m.get("resourceType") == "Medication"
    ]
    item = [
        order.get("resourceType"),
        order.get("id"),
        order.get("medicationCodeableConcept"),
        order.get("medicationReference"),
        contained,
        starts,
    ]
    try:
        return orjson.dumps(item, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        # Nested deeper than orjson writes (a hostile client): a digest that matches nothing, ever.
        return b"unfingerprintable:" + uuid.uuid4().bytes


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def reuse_key(issuer: str, fhir_server: str | None, ctx: OrderContext, vs: ValueSets) -> ReuseKey:
    return (issuer, (fhir_server or "").rstrip("/"), ctx.user_id or "", ctx.patient_id, ld_orders_fingerprint(ctx, vs))


# The chart's prophylaxis orders are always read afresh: the card names them ("on chart"), so an order
# stopped between order-select and order-sign must not still be named.
NEVER_REUSED = ("medications",)


def reusable_keys(meta: Mapping[str, object], risk_card: object) -> set[str]:
    """The keys of an order-select worth keeping: those fetched from the FHIR server, and the HT lab
    keys only when the score was HIGH; never the chart's prophylaxis orders (NEVER_REUSED).

    A lab that results between order-select and order-sign can only add points to a HIGH, so serving
    HIGH from cached labs is safe; a LOW or indeterminate score is always recomputed from fresh labs
    (a new low platelet count must be able to turn it into HIGH).
    """
    fetched = {k for k, m in meta.items() if getattr(m, "source", None) == "fhir"} - set(NEVER_REUSED)
    ext = getattr(risk_card, "extension", None) or {}
    group = ext.get("hematotox-cds", {}).get("hematotox", {}).get("confirmed", {}).get("group")
    return fetched if group == "high" else fetched - set(HT_KEYS)


class ReuseCache:
    def __init__(self, ttl_seconds: float, max_entries: int, *, timer: Callable[[], float] = time.monotonic) -> None:
        self.enabled = ttl_seconds > 0 and max_entries > 0
        self._entries: TTLCache = TTLCache(maxsize=max(max_entries, 1), ttl=max(ttl_seconds, 1e-9), timer=timer)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: ReuseKey) -> dict[str, list[dict]] | None:
        if not self.enabled:
            return None
        entry = self._entries.get(key)
        return None if entry is None else {k: orjson.loads(v) for k, v in entry.items()}

    def put(self, key: ReuseKey, data: Mapping[str, Sequence[dict]]) -> bool:
        if not self.enabled:
            return False
        try:
            entry = {k: orjson.dumps(list(v)) for k, v in data.items()}
        except orjson.JSONEncodeError:  # e.g. nested deeper than orjson writes: not worth keeping
            self._entries.pop(key, None)
            return False
        if sum(map(len, entry.values())) > MAX_ENTRY_BYTES:
            self._entries.pop(key, None)
            return False
        self._entries[key] = entry
        return True

    def before_resolve(
        self, hook: str, key: ReuseKey | Callable[[], ReuseKey], lacking: set[str]
    ) -> tuple[dict[str, list[dict]] | None, CacheState]:
        """(reusable data, cache state) for a hook: looked up at order-sign when the prefetch lacks keys.

        `key` may be a function that makes the key: it is called only when the cache is read."""
        if hook != READ_AT or not lacking or not self.enabled:
            return None, "skip"
        data = self.get(key() if callable(key) else key)
        if not data or not lacking & data.keys():
            return None, "miss"
        return {k: v for k, v in data.items() if k in lacking}, "hit"

    def after_resolve(
        self,
        hook: str,
        key: ReuseKey | Callable[[], ReuseKey],
        resolved: Mapping[str, Sequence[dict]],
        fetched: set[str],
    ) -> None:
        """Keep what an order-select had to fetch from the FHIR server (failed keys are absent).

        Keys the client prefetched are not kept: the client sends them again at order-sign, and
        holding fewer patient data in memory is also the cheaper path on every hook. A `key`
        function is called only when something is kept.
        """
        if hook == STORE_AT and fetched:
            self.put(key() if callable(key) else key, {k: v for k, v in resolved.items() if k in fetched})
