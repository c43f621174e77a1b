"""The README's demo requests stay true: each example answers with the group its name promises."""

import json
from pathlib import Path

import pytest

from cds_hooks.validate import card_violations

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.mark.parametrize(
    "name,group",
    [
        ("order-sign-high.json", "high"),
        ("order-sign-low.json", "low"),
        ("order-select-indeterminate.json", "indeterminate"),
        ("order-sign-provisional.json", "indeterminate"),
    ],
)
def test_example(client, name, group):
    req = json.loads((EXAMPLES / name).read_text())
    r = client.post(f"/cds-services/hematotox-{req['hook']}", json=req)
    assert r.status_code == 200
    assert card_violations(r.json()) == []
    assert r.json()["cards"][0]["extension"]["hematotox-cds"]["hematotox"]["confirmed"]["group"] == group
