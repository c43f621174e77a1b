# Sourced by demo.sh, test.sh and bench.sh (from the repository root): `setup_venv [EXTRAS]` creates
# .venv with the machine's python3 (or $PYTHON) when it is missing and installs the project into it,
# editable, with the optional dependency group EXTRAS (e.g. test).
setup_venv() {
    [[ -x .venv/bin/python ]] || "${PYTHON:-python3}" -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${1:+[$1]}"
}
