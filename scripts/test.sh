#!/usr/bin/env bash
# Sets everything up on a fresh machine (Python 3.11+) and runs every test:
# unit, HTTP and integration tests against a local FHIR server (sekmet-fhir, own virtualenv).
#   scripts/test.sh [pytest args...]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="${PYTHON:-python3}"
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
scripts/fhir-server.sh install >/dev/null
exec .venv/bin/python -m pytest "$@"
