"""The site's configuration of the clinical rules: settings → `Clinic`, read once at start-up."""

from __future__ import annotations

from service.cards.follow_up_hook import FollowUp
from service.cards.order_hooks import Clinic, prefetch_templates
from service.cards.suggestions import DEFAULT_DRUGS, Drug
from service.clinical.follow_up import FollowUpRules
from service.web.rationale import PATH as RATIONALE_PATH
from service.web.settings import Settings
from service.web.site_rules import ferritin_uln, infusion_procedure_codes, lab_rules, site_value_sets


def clinic_from_settings(s: Settings) -> Clinic:
    c = s.clinical
    vs = site_value_sets(s)
    rules = lab_rules(s)
    r = s.recommendations
    drugs = {**DEFAULT_DRUGS, **{k: Drug(d.rxnorm, d.display, d.dose) for k, d in r.drugs.items()}}
    return Clinic(
        vs,
        rules,
        prefetch_templates(vs),
        ferritin_uln=ferritin_uln(s),
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
    return FollowUp(rules, drugs, infusion_procedure_codes(s), f.infusion_count)
