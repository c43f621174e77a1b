# Sourced by demo.sh, test.sh and bench.sh (from the repository root): `setup_venv [LOCK]` creates
# .venv with the machine's python3 (or $PYTHON) when it is missing, installs into it the pinned,
# hash-checked dependencies of requirements/LOCK.txt (`runtime` by default, `test` for the tests:
# scripts/lock.sh writes both) and then the project itself, editable, without resolving again.
# It refuses a lock that pyproject.toml's dependencies have moved past (scripts/lock_stamp.py).
setup_venv() {
    local lock="requirements/${1:-runtime}.txt"
    "${PYTHON:-python3}" scripts/lock_stamp.py check "$lock" || return 1
    [[ -x .venv/bin/python ]] || "${PYTHON:-python3}" -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r "$lock"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
}
