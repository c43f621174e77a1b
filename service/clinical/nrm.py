"""NRM risk factors of the DESCAR-T registry and EASIX (clinical-spec §2, §3, §5.3).

Each factor is True / False / None, where None means "cannot tell" (data missing, or no threshold)
and is said so on the card. None of these are combined into a score (spec §4.3 R15).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from typing import Any

from service.clinical.fhirjson import as_dict, dicts, owner
from service.clinical.labs import Component, LabResult, parse_fhir_datetime

SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
CLINICAL_ACTIVE = frozenset({"active", "recurrence", "relapse"})
VERIFICATION_EXCLUDED = frozenset({"refuted", "entered-in-error"})

# SNOMED CT: << 73211009 |Diabetes mellitus|. Without a terminology server the descendants are the
# listed ones; sites add theirs in configuration. Gestational diabetes (11687002) is excluded.
DIABETES_SNOMED = frozenset({"73211009", "46635009", "44054006", "8801005"})
# ICD-10-CM: E08, E09, E10, E11, E13 and pre-existing DM in pregnancy O24.0–O24.3, O24.8;
# not O24.4 (gestational) nor R73.* (prediabetes, hyperglycaemia).
DIABETES_ICD10CM_PREFIXES = ("E08", "E09", "E10", "E11", "E13", "O24.0", "O24.1", "O24.2", "O24.3", "O24.8")
# ICD-10 (WHO): E10–E14 [RECALLED].
DIABETES_ICD10_PREFIXES = ("E10", "E11", "E12", "E13", "E14")

# Reported associations (DESCAR-T multivariate, overall NRM) [SEED-D].
OR_DIABETES = "OR 4.4 (95% CI 1.7–11.8)"
OR_DIABETES_INFECTIOUS = "OR 8.1 (95% CI 2.9–22.8)"
OR_FERRITIN = "OR 2.7 (95% CI 1.0–7.4)"

EASIX_KORELL_CUTOFF = Decimal("4.67")  # strict ">" (Korell 2022)


def _code_of(cc: object, system: str) -> list[str]:
    if not isinstance(cc, dict):
        return []
    return [c["code"] for c in dicts(cc.get("coding")) if c.get("system") == system and isinstance(c.get("code"), str)]


def _status(cc: object) -> str | None:
    codes = [c.get("code") for c in dicts(as_dict(cc).get("coding"))]
    return next((c for c in codes if isinstance(c, str)), None)


def is_diabetes_code(code: object, extra_snomed: frozenset[str] = frozenset()) -> bool:
    if any(c in DIABETES_SNOMED or c in extra_snomed for c in _code_of(code, SNOMED)):
        return True
    for c in _code_of(code, ICD10CM):
        if c.upper().startswith(DIABETES_ICD10CM_PREFIXES):
            return True
    return any(c.upper().startswith(DIABETES_ICD10_PREFIXES) for c in _code_of(code, ICD10))


def diabetes(
    conditions: Iterable[dict[str, Any]] | None, patient_id: str, extra_snomed: frozenset[str] = frozenset()
) -> tuple[bool | None, tuple[str, ...]]:
    """(flag, the Conditions behind it). None when the conditions could not be read at all."""
    if conditions is None:
        return None, ()
    evidence = []
    for c in conditions:
        if not isinstance(c, dict) or c.get("resourceType") != "Condition":
            continue
        # A Condition in this patient's list whose subject cannot be read still counts: never hide a risk
        # factor for a malformed reference (another patient's is left out).
        if owner(c, patient_id) == "other":
            continue
        if _status(c.get("verificationStatus")) in VERIFICATION_EXCLUDED:
            continue
        clinical = _status(c.get("clinicalStatus"))
        # A missing clinicalStatus is read as active: the diagnosis is on the chart, and ignoring it
        # would hide a risk factor (spec §5.3 filters; "in remission" counts only when active).
        if clinical is not None and clinical not in CLINICAL_ACTIVE:
            continue
        if is_diabetes_code(c.get("code"), extra_snomed):
            evidence.append(f"Condition/{c['id']}" if isinstance(c.get("id"), str) else "Condition")
    return bool(evidence), tuple(sorted(evidence))  # sorted: never the order the Conditions came in


@dataclass(frozen=True)
class FerritinFlag:
    elevated: bool | None
    # "reference-range" | "interpretation" | "configured" | None: where the upper limit came from.
    basis: str | None
    uln: Decimal | None


def elevated_ferritin(component: Component, configured_uln: Decimal | None) -> FerritinFlag:
    """Ferritin at LD above the reporting lab's upper limit (spec §3.1 [DESIGN]).

    Uses only the in-window value ("at lymphodepletion"): a stale value cannot tell.
    """
    r = component.used if component.status in ("current", "censored") else None
    if r is None:
        return FerritinFlag(None, None, None)
    if r.reference_high is not None:
        return FerritinFlag(_above(r, r.reference_high), "reference-range", r.reference_high)
    if r.interpretation & {"H", "HH", "HU"}:
        return FerritinFlag(True, "interpretation", None)
    if configured_uln is not None:
        return FerritinFlag(_above(r, configured_uln), "configured", configured_uln)
    return FerritinFlag(None, None, None)


def _above(r: LabResult, uln: Decimal) -> bool | None:
    span = r.span()
    if span.lo > uln or (span.lo == uln and not span.lo_closed):
        return True
    if span.hi <= uln:
        return False
    return None  # a censored value straddling the limit


@dataclass(frozen=True)
class Easix:
    easix: Decimal | None
    s_easix: Decimal | None
    m_easix: Decimal | None

    @property
    def log2(self) -> float | None:
        return math.log2(self.easix) if self.easix is not None and self.easix > 0 else None

    @property
    def above_korell(self) -> bool | None:
        return None if self.easix is None else self.easix > EASIX_KORELL_CUTOFF


def _exact(c: Component | None) -> Decimal | None:
    """An in-window, uncensored value, or None: indices are not computed from intervals."""
    if c is None or c.status != "current" or c.used is None:
        return None
    return c.used.value


def easix(comps: dict[str, Component], crp_unit_mg_per_l: bool = False) -> Easix:
    """EASIX = LDH [U/L] × creatinine [mg/dL] / platelets [10^9/L]; s-EASIX = LDH / platelets;
    m-EASIX = LDH × CRP / platelets with CRP in mg/dL by default (UNVERIFIED, configurable)."""
    ldh, crea, plt, crp = (_exact(comps.get(a)) for a in ("ldh", "creatinine", "platelets", "crp"))
    if plt is None or plt == 0 or ldh is None:
        return Easix(None, None, None)
    crp_used = None if crp is None else (crp * 10 if crp_unit_mg_per_l else crp)
    return Easix(
        ldh * crea / plt if crea is not None else None,
        ldh / plt,
        ldh * crp_used / plt if crp_used is not None else None,
    )


def age_at(birth_date: object, t0: datetime, tz: tzinfo) -> int | None:
    if not isinstance(birth_date, str):
        return None
    parsed = parse_fhir_datetime(birth_date, tz) if len(birth_date) >= 10 else None
    if parsed is None:
        return None
    born: date = parsed[0].date()
    at = t0.astimezone(tz).date()
    return at.year - born.year - ((at.month, at.day) < (born.month, born.day))


ECOG_LOINC = "89247-1"
# LL529-9 answers LA9622-7 … LA9627-6 for ECOG 0–5 [RECALLED, UNVERIFIED].
_ECOG_ANSWERS = {"LA9622-7": 0, "LA9623-5": 1, "LA9624-3": 2, "LA9625-0": 3, "LA9626-8": 4, "LA9627-6": 5}


def ecog(observations: Iterable[dict[str, Any]], patient_id: str) -> int | None:
    """The most recent recorded ECOG performance status, or None when none is recorded. One whose subject
    cannot be read is used only when this patient has none of their own (it must never replace theirs)."""
    best: dict[bool, tuple[datetime, int]] = {}  # surely this patient's → the best so far
    for o in observations:
        if not isinstance(o, dict) or o.get("resourceType") != "Observation":
            continue
        if ECOG_LOINC not in _code_of(o.get("code"), "http://loinc.org"):
            continue
        if o.get("status") not in ("final", "amended", "corrected"):
            continue
        who = owner(o, patient_id)
        if who == "other":
            continue
        value = o.get("valueInteger")
        if not isinstance(value, int) or isinstance(value, bool):
            codes = _code_of(o.get("valueCodeableConcept"), "http://loinc.org")
            value = next((_ECOG_ANSWERS[c] for c in codes if c in _ECOG_ANSWERS), None)
        if value is None or not 0 <= value <= 5:
            continue
        raw = o.get("effectiveDateTime") or o.get("issued")
        # Any JSON may stand there; an undated ECOG still counts, but after every dated one.
        parsed = parse_fhir_datetime(raw, UTC) if isinstance(raw, str) else None
        when = parsed[0] if parsed else datetime.min.replace(tzinfo=UTC)
        # Two scores at one time: the higher (worse) one, whatever their order.
        mine = who == "this"
        if mine not in best or (when, value) > best[mine]:
            best[mine] = (when, value)
    chosen = best.get(True) or best.get(False)
    return chosen[1] if chosen else None


@dataclass(frozen=True)
class NrmProfile:
    diabetes: bool | None
    diabetes_evidence: tuple[str, ...]
    ferritin: FerritinFlag
    easix: Easix
    age: int | None
    ecog: int | None


def nrm_profile(
    comps: dict[str, Component],
    conditions: list[dict[str, Any]] | None,
    patient: dict[str, Any] | None,
    ecog_observations: list[dict[str, Any]],
    patient_id: str,
    t0: datetime,
    tz: tzinfo,
    ferritin_uln: Decimal | None,
    m_easix_crp_mg_per_l: bool = False,
    extra_diabetes_snomed: frozenset[str] = frozenset(),
) -> NrmProfile:
    dm, evidence = diabetes(conditions, patient_id, extra_diabetes_snomed)
    return NrmProfile(
        diabetes=dm,
        diabetes_evidence=evidence,
        ferritin=elevated_ferritin(comps["ferritin"], ferritin_uln),
        easix=easix(comps, m_easix_crp_mg_per_l),
        age=age_at(patient.get("birthDate"), t0, tz) if isinstance(patient, dict) else None,
        ecog=ecog(ecog_observations, patient_id),
    )
