#!/usr/bin/env bash
# Sets everything up on a fresh machine (Python 3.11+) and runs every test:
# unit, HTTP and integration tests against a local FHIR server (sekmet-fhir, own virtualenv), and the
# feedback store on SQLite and on a local PostgreSQL (scripts/postgres.sh); before them the static
# checks (scripts/lint.sh: ruff, ruff format, lint-imports, mypy), which fail the run too.
# Dependencies come from the lock, requirements/test.txt (scripts/lock.sh updates it).
#   scripts/test.sh [--no-lint] [pytest args...]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
source scripts/setup-venv.sh
setup_venv test
scripts/fhir-server.sh install >/dev/null
# PostgreSQL for the feedback-store tests (Debian's packages; skipped with a reason when it cannot be
# installed, except under CI). The tests start their own cluster unless TEST_DATABASE_URL is set.
scripts/postgres.sh install \
    || echo "test.sh: PostgreSQL could not be installed; its tests will be skipped (fail under CI=true)" >&2
if [[ "${1:-}" == "--no-lint" ]]; then
    shift
else
    scripts/lint.sh
fi
exec .venv/bin/python -m pytest "$@"
