"""Regenerates the example hook requests in examples/ from the worked cases of the tests.

.venv/bin/python examples/make_examples.py
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.cases import BY_NAME, hook_request

HERE = Path(__file__).parent
EXAMPLES = {
    # file: (hook, worked case, patient id)
    "order-sign-high.json": ("order-sign", "T20", "demo-high"),
    "order-sign-low.json": ("order-sign", "T1", "demo-low"),
    "order-select-indeterminate.json": ("order-select", "T23", "demo-indeterminate"),
    "order-sign-provisional.json": ("order-sign", "T35", "demo-provisional"),
}

if __name__ == "__main__":
    for name, (hook, case, patient) in EXAMPLES.items():
        req = hook_request(hook, patient, BY_NAME[case].observations(patient))
        (HERE / name).write_text(json.dumps(req, indent=1) + "\n")
        print("wrote", name)
