"""The shared drug matcher over the supportive drug classes (G-CSF, antivirals, PJP, fluoroquinolones, azoles)."""

import pytest

from service.clinical.medications import drug_in_class
from service.clinical.valuesets import RXNORM, value_sets

VS = value_sets()


def coded(code: str, text: str | None = None) -> dict:
    cc: dict = {"coding": [{"system": RXNORM, "code": code}]}
    if text:
        cc["text"] = text
    return {"resourceType": "MedicationAdministration", "medicationCodeableConcept": cc}


def named(text: str) -> dict:
    return {"resourceType": "MedicationRequest", "medicationCodeableConcept": {"text": text}}


@pytest.mark.parametrize(
    ("resource", "drug_class", "drug"),
    [
        (coded("68442"), "gcsf", "filgrastim"),
        (named("Pegfilgrastim-jmdb 6 MG/0.6ML Prefilled Syringe"), "gcsf", "pegfilgrastim"),
        (named("Zarxio 480 mcg"), "gcsf", "filgrastim"),
        (named("valACYclovir 500 mg tablet"), "antiviral", "valacyclovir"),
        (named("Sulfamethoxazole / Trimethoprim 800/160 mg"), "pjp", "trimethoprim-sulfamethoxazole"),
        (named("Levofloxacin 500 MG Oral Tablet"), "fluoroquinolone", "levofloxacin"),
        (named("posaconazole DR tablet"), "azole", "posaconazole"),
    ],
)
def test_drugs_match_by_code_or_name(resource, drug_class, drug):
    assert drug_in_class(resource, [], VS, drug_class) == drug


def test_other_classes_and_unrelated_drugs_do_not_match():
    assert drug_in_class(named("Levofloxacin 500 MG"), [], VS, "gcsf") is None
    assert drug_in_class(named("Fludarabine 25 mg/mL"), [], VS, "antiviral") is None
    assert drug_in_class(coded("24698"), [], VS, "gcsf") is None


def test_site_codes_extend_a_drug_and_an_unknown_drug_is_refused():
    vs = value_sets(extra_drug_rxnorm={"filgrastim": ["9999001"]}, extra_cart_rxnorm={"tisagenlecleucel": ["9999002"]})
    assert drug_in_class(coded("9999001"), [], vs, "gcsf") == "filgrastim"
    assert vs.product_rxnorm["9999002"] == "tisagenlecleucel"
    with pytest.raises(ValueError, match="unknown drug"):
        value_sets(extra_drug_rxnorm={"aspirin": ["1191"]})
