"""Reads the pip requirements lock files in requirements/ (scripts/lock.sh writes them)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements"
_PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)(?:\s*;\s*(?P<marker>[^\\]+?))?\s*\\?$"
)
_HASH = re.compile(r"^\s+--hash=sha256:(?P<digest>[0-9a-f]{64})\s*\\?$")


@dataclass
class Pin:
    name: str  # canonical (PEP 503)
    version: str
    marker: Marker | None
    hashes: set[str]

    def applies(self) -> bool:
        """Whether pip installs it on this interpreter and platform."""
        return self.marker is None or self.marker.evaluate()


def all_pins(lock: str) -> list[Pin]:
    """Every pin of the lock; a universal lock may pin one name twice, under disjoint markers (e.g.
    one version for Python 3.11 and a newer one for 3.12+). A line that is neither a pin nor a hash
    fails loudly."""
    out: list[Pin] = []
    for line in (REQUIREMENTS / lock).read_text("utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if m := _PIN.match(line):
            marker = Marker(m["marker"]) if m["marker"] else None
            out.append(Pin(canonicalize_name(m["name"]), m["version"], marker, set()))
        elif (m := _HASH.match(line)) and out:
            out[-1].hashes.add(m["digest"])
        else:
            raise AssertionError(f"{lock}: not a pinned requirement or its hash: {line!r}")
    return out


def pins(lock: str) -> dict[str, Pin]:
    """name → the pin pip installs on this interpreter and platform (at most one per name)."""
    out: dict[str, Pin] = {}
    for pin in all_pins(lock):
        if pin.applies():
            assert pin.name not in out, f"{lock}: two pins of {pin.name} apply here"
            out[pin.name] = pin
    return out
