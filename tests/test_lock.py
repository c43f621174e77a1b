"""The lock files (requirements/, scripts/lock.sh): current with pyproject.toml, every pin hashed and
within its range, the runtime lock inside the test lock, and this environment installed from it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.lockfile import all_pins, pins

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]
RUNTIME, TEST = pins("runtime.txt"), pins("test.txt")


def test_both_locks_were_resolved_from_the_dependencies_pyproject_declares_now():
    done = subprocess.run(
        [sys.executable, "scripts/lock_stamp.py", "check", "requirements/runtime.txt", "requirements/test.txt"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_lock_stamp_notices_a_new_dependency(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import lock_stamp
    finally:
        sys.path.remove(str(REPO / "scripts"))
    text = (REPO / "pyproject.toml").read_text("utf-8")
    moved = tmp_path / "pyproject.toml"
    moved.write_text(text.replace('"orjson>=3.9",', '"orjson>=3.9",\n  "scipy>=1.11",'), "utf-8")
    assert lock_stamp.fingerprint(moved) != lock_stamp.fingerprint(REPO / "pyproject.toml")
    # Reordering or reformatting the declarations is not a change.
    reordered = tmp_path / "reordered.toml"
    reordered.write_text(text.replace('  "orjson>=3.9",\n', "").replace('  "fastapi', '  "orjson>=3.9",\n  "fastapi'))
    assert lock_stamp.fingerprint(reordered) == lock_stamp.fingerprint(REPO / "pyproject.toml")


@pytest.mark.parametrize("lock", ["runtime.txt", "test.txt"])
def test_every_pin_carries_hashes(lock):
    every = all_pins(lock)
    assert every and all(pin.hashes for pin in every), [p.name for p in every if not p.hashes]


def test_the_runtime_lock_is_the_test_lock_less_the_extras():
    def keyed(lock: str) -> dict[tuple[str, str], tuple[str, frozenset[str]]]:
        return {(p.name, str(p.marker)): (p.version, frozenset(p.hashes)) for p in all_pins(lock)}

    runtime, test = keyed("runtime.txt"), keyed("test.txt")
    for key, pinned in runtime.items():
        assert test.get(key) == pinned, f"{key[0]} ({key[1]}): runtime {pinned[0]}, test {test.get(key, ('none',))[0]}"
    assert not {"pytest", "hypothesis", "httpx2", "ruff", "mypy", "import-linter"} & set(RUNTIME)


@pytest.mark.parametrize(
    ("lock", "groups"), [(RUNTIME, ["dependencies"]), (TEST, ["dependencies", "test", "lint"])], ids=["runtime", "test"]
)
def test_every_declared_dependency_is_pinned_within_its_range(lock, groups):
    declared = [
        Requirement(r)
        for g in groups
        for r in (PROJECT[g] if g == "dependencies" else PROJECT["optional-dependencies"][g])
    ]
    for req in declared:
        pin = lock.get(canonicalize_name(req.name))
        assert pin is not None, f"{req} is not locked: run scripts/lock.sh"
        assert req.specifier.contains(pin.version, prereleases=True), f"{req.name}=={pin.version} is outside {req}"


def test_this_environment_was_installed_from_the_test_lock():
    wrong = []
    for name, pin in TEST.items():
        if not pin.applies():
            continue
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != pin.version:
            wrong.append(f"{name}: {installed} installed, {pin.version} locked")
    assert not wrong, "run scripts/test.sh (it installs requirements/test.txt): " + "; ".join(wrong)
