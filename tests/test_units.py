"""Unit normalisation and conversion (clinical-spec §6), exact decimals."""

from decimal import Decimal

import pytest

from service.clinical.units import UnitRejected, is_plausible, normalise_unit, to_canonical

D = Decimal


@pytest.mark.parametrize(
    "analyte,value,unit,expected",
    [
        ("anc", "1200", "/uL", "1.2"),
        ("anc", "1.2", "10*3/uL", "1.2"),
        ("anc", "1.2", "K/uL", "1.2"),
        ("anc", "1.2", "x10E3/uL", "1.2"),
        ("anc", "1.2", "10^3/uL", "1.2"),
        ("anc", "1.2", "thou/uL", "1.2"),
        ("anc", "1.2", "10³/µL", "1.2"),
        ("anc", "1.2", "x10E9/L", "1.2"),
        ("anc", "1.2", "10^9/L", "1.2"),
        ("anc", "1.2", "Gpt/L", "1.2"),
        ("anc", "1.2", "/nl", "1.2"),
        ("anc", "1200", "cells/uL", "1.2"),
        ("anc", "1200", "/µl", "1.2"),
        ("anc", "1200", "/cmm", "1.2"),
        ("anc", "1200", "{cells}/uL", "1.2"),
        ("anc", "1200", "10*6/L", "1.2"),
        ("platelets", "70", "G/L", "70"),
        ("platelets", "75500", "/mm3", "75.5"),
        ("platelets", "175", "10*3/mm3", "175"),
        ("hemoglobin", "90", "g/L", "9.0"),
        ("hemoglobin", "9.0", "g/dl", "9.0"),
        ("hemoglobin", "9.0", "g/100mL", "9.0"),
        ("hemoglobin", "9000", "mg/dL", "9"),
        ("hemoglobin", "5.58", "mmol/L", "8.98938"),
        ("hemoglobin", "5.59", "mmol/L", "9.00549"),
        ("crp", "30", "mg/L", "3.0"),
        ("crp", "30", "ug/mL", "3.0"),
        ("crp", "3.0", "mg/dL", "3.0"),
        ("ferritin", "650", "ug/L", "650"),
        ("ferritin", "650", "µg/L", "650"),
        ("ferritin", "650", "mcg/L", "650"),
        ("ferritin", "0.65", "mg/L", "650"),
        ("ldh", "250", "IU/L", "250"),
        ("ldh", "250", "[IU]/L", "250"),
        ("ldh", "4.17", "ukat/L", "250.2"),
        ("ldh", "4170", "nkat/L", "250.2"),
        ("creatinine", "88.4", "umol/L", "1"),
        ("creatinine", "0.0884", "mmol/L", "1"),
        ("creatinine", "10", "mg/L", "1"),
    ],
)
def test_conversion_is_exact(analyte, value, unit, expected):
    assert to_canonical(analyte, D(value), unit) == D(expected)


@pytest.mark.parametrize(
    "analyte,unit",
    [
        ("anc", "10*6/uL"),
        ("platelets", "10*12/L"),  # RBC-scale units on a count
        ("crp", "nmol/L"),
        ("ferritin", "pmol/L"),  # molar factors UNVERIFIED: off by default
        ("anc", "furlongs"),
        ("hemoglobin", None),
        ("hemoglobin", ""),
        ("ferritin", "G/L"),
        ("crp", "%"),
        ("anc", "g/dL"),
    ],
)
def test_rejected_units(analyte, unit):
    with pytest.raises(UnitRejected):
        to_canonical(analyte, D(1), unit)


def test_g_per_l_is_giga_on_counts_but_grams_on_hemoglobin():
    assert normalise_unit("G/L", "platelets") == "10*9/L"
    assert normalise_unit("g/L", "hemoglobin") == "g/L"
    assert to_canonical("hemoglobin", D(90), "g/L") == D(9)


def test_molar_factor_only_when_configured():
    assert to_canonical("crp", D(300), "nmol/L", {"crp:nmol/L": D("0.0105")}) == D("3.15")


@pytest.mark.parametrize(
    "analyte,value,ok",
    [
        ("anc", "1200", False),
        ("anc", "100", True),
        ("hemoglobin", "1.9", False),
        ("hemoglobin", "25", True),
        ("platelets", "2001", False),
        ("crp", "100.1", False),
        ("ferritin", "200000", True),
        ("ldh", "19", False),
        ("creatinine", "0.09", False),
    ],
)
def test_plausibility(analyte, value, ok):
    assert is_plausible(analyte, D(value)) is ok


def test_sites_cannot_add_codes_the_spec_excludes():
    from service.clinical.valuesets import value_sets

    with pytest.raises(ValueError, match="11039-5"):
        value_sets({"crp": ["11039-5"]})
    assert "99999-9" in value_sets({"platelets": ["99999-9"]}).lab_codes
