"""The site's clinical configuration as the cohort workers need it: plain, picklable values.

`ValueSets` holds read-only mapping proxies, which do not pickle, so a worker rebuilds it from the
site's extensions (``value_sets`` caches it per process).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property

from service.clinical.labs import LabRules
from service.clinical.valuesets import ValueSets, value_sets


@dataclass(frozen=True)
class CohortRules:
    rules: LabRules
    ferritin_uln: Decimal | None = None
    m_easix_crp_mg_per_l: bool = False
    extra_diabetes_snomed: frozenset[str] = frozenset()
    # Procedure codes (system, code) that record a CAR-T infusion at this site (§9.2; none shipped).
    procedure_codes: frozenset[tuple[str, str]] = frozenset()
    extra_loinc: Mapping[str, list[str]] = field(default_factory=dict)
    extra_ld_rxnorm: Mapping[str, list[str]] = field(default_factory=dict)
    extra_cart_rxnorm: Mapping[str, list[str]] = field(default_factory=dict)
    extra_drug_rxnorm: Mapping[str, list[str]] = field(default_factory=dict)

    @cached_property
    def vs(self) -> ValueSets:
        return value_sets(self.extra_loinc, self.extra_ld_rxnorm, self.extra_cart_rxnorm, self.extra_drug_rxnorm)

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state.pop("vs", None)  # the cached ValueSets: rebuilt on first use in the worker
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
