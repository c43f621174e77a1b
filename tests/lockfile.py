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


def pins(lock: str) -> dict[str, Pin]:
    """name → Pin; a requirement line that is neither a pin nor a hash fails loudly."""
    out: dict[str, Pin] = {}
    current: Pin | None = None
    for line in (REQUIREMENTS / lock).read_text("utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if m := _PIN.match(line):
            marker = Marker(m["marker"]) if m["marker"] else None
            current = Pin(canonicalize_name(m["name"]), m["version"], marker, set())
            assert current.name not in out, f"{lock}: {current.name} pinned twice"
            out[current.name] = current
        elif (m := _HASH.match(line)) and current is not None:
            current.hashes.add(m["digest"])
        else:
            raise AssertionError(f"{lock}: not a pinned requirement or its hash: {line!r}")
    return out
