"""The site's configuration of the clinical rules: settings → `Clinic`, read once at start-up."""

from __future__ import annotations

from decimal import Decimal
from zoneinfo import ZoneInfo

from service.cards.follow_up_hook import FollowUp
from service.cards.order_hooks import Clinic, prefetch_templates
from service.cards.suggestions import DEFAULT_DRUGS, Drug
from service.clinical.follow_up import FollowUpRules
from service.clinical.labs import LabRules
from service.clinical.valuesets import value_sets
from service.cohort.config import CohortRules
from service.web.rationale import PATH as RATIONALE_PATH
from service.web.settings import Settings


def clinic_from_settings(s: Settings) -> Clinic:
    c = s.clinical
    vs = value_sets(c.extra_loinc, c.extra_ld_rxnorm, c.extra_cart_rxnorm, c.extra_drug_rxnorm)
    rules = LabRules(
        tz=ZoneInfo(s.service.timezone),
        lookback_days=c.lookback_days,
        inclusive_boundaries=c.inclusive_boundaries,
        accept_preliminary=c.accept_preliminary,
        # str() first: a TOML float such as 0.1 must become Decimal("0.1"), not its binary expansion.
        configured_factors={k: Decimal(str(v)) for k, v in c.unit_factors.items()},
    )
    r = s.recommendations
    drugs = {**DEFAULT_DRUGS, **{k: Drug(d.rxnorm, d.display, d.dose) for k, d in r.drugs.items()}}
    return Clinic(
        vs,
        rules,
        prefetch_templates(vs),
        ferritin_uln=None if c.ferritin_uln_ng_ml is None else Decimal(str(c.ferritin_uln_ng_ml)),
        disabled=frozenset(r.disabled),
        indeterminate_as_high=r.treat_indeterminate_as_high,
        drugs=drugs,
        monitoring=r.monitoring_schedule,
        m_easix_crp_mg_per_l=r.m_easix_crp_mg_per_l,
        extra_diabetes_snomed=frozenset(c.extra_diabetes_snomed),
        rationale_url=s.service.public_base_url.rstrip("/") + RATIONALE_PATH,
        follow_up=_follow_up(s),
    )


def _follow_up(s: Settings) -> FollowUp:
    f = s.follow_up
    rules = FollowUpRules(
        prolonged_run_days=f.prolonged_run_days,
        cbc_high_early_days=f.cbc_interval_high_early_days,
        cbc_high_late_days=f.cbc_interval_high_late_days,
        cbc_low_early_days=f.cbc_interval_low_early_days,
        indeterminate_as_high=s.recommendations.treat_indeterminate_as_high,
        disabled=frozenset(s.recommendations.disabled),
    )
    # Only what the site configured: [recommendations.drugs] (not the shipped defaults) under
    # [follow_up.drugs], which wins for the same key.
    configured = {**s.recommendations.drugs, **f.drugs}
    drugs = {
        k: Drug(d.rxnorm, d.display, d.dose) for k, d in configured.items() if k in ("fluoroquinolone", "azole", "gcsf")
    }
    codes = frozenset((system, code) for system, _, code in (c.partition("|") for c in f.infusion_procedure_codes))
    return FollowUp(rules, drugs, codes, f.infusion_count)


def cohort_rules_from_settings(s: Settings) -> CohortRules:
    """The same clinical configuration for `hematotox-cds cohort`, in the picklable form its workers need."""
    clinic, c = clinic_from_settings(s), s.clinical
    return CohortRules(
        rules=clinic.rules,
        ferritin_uln=clinic.ferritin_uln,
        m_easix_crp_mg_per_l=clinic.m_easix_crp_mg_per_l,
        extra_diabetes_snomed=clinic.extra_diabetes_snomed,
        extra_loinc=c.extra_loinc,
        extra_ld_rxnorm=c.extra_ld_rxnorm,
        extra_cart_rxnorm=c.extra_cart_rxnorm,
        extra_drug_rxnorm=c.extra_drug_rxnorm,
        procedure_codes=clinic.follow_up.procedure_codes,
    )
