"""The fingerprint of pyproject.toml's dependency declarations, which each lock file records.

    python3 scripts/lock_stamp.py                 print the fingerprint of pyproject.toml as it is
    python3 scripts/lock_stamp.py check LOCK...   exit 1, saying what to run, when a lock file was
                                                  resolved from other declarations

scripts/lock.sh writes the line; scripts/setup-venv.sh checks it before installing, so that a
dependency added to pyproject.toml without a new lock fails at once instead of going unused.
Standard library only: it runs before any virtualenv exists.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PREFIX = "# pyproject.toml dependencies sha256: "


def fingerprint(pyproject: Path = REPO / "pyproject.toml") -> str:
    # The parsed declarations, sorted: reformatting or reordering pyproject.toml needs no new lock.
    project = tomllib.loads(pyproject.read_text("utf-8"))["project"]
    declared = {
        "requires-python": project.get("requires-python"),
        "dependencies": sorted(project.get("dependencies", [])),
        "optional-dependencies": {k: sorted(v) for k, v in project.get("optional-dependencies", {}).items()},
    }
    return hashlib.sha256(json.dumps(declared, sort_keys=True).encode()).hexdigest()


def recorded(lock: Path) -> str | None:
    for line in lock.read_text("utf-8").splitlines():
        if line.startswith(PREFIX):
            return line[len(PREFIX) :].strip()
    return None


def main(argv: list[str]) -> int:
    if not argv:
        print(fingerprint())
        return 0
    if argv[0] != "check" or len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    current = fingerprint()
    stale = []
    for name in argv[1:]:
        lock = Path(name)
        if not lock.is_file():
            print(f"lock_stamp: {name} is missing: run scripts/lock.sh", file=sys.stderr)
            return 1
        if recorded(lock) != current:
            stale.append(name)
    if stale:
        print(
            f"lock_stamp: {', '.join(stale)} no longer match the dependencies in pyproject.toml: "
            "run scripts/lock.sh and commit requirements/",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
