#!/usr/bin/env bash
# Sets everything up on a fresh machine (Python 3.11+) and runs every test:
# unit, HTTP and integration tests against a local FHIR server (sekmet-fhir, own virtualenv), and the
# feedback store on SQLite and on a local PostgreSQL (scripts/postgres.sh).
#   scripts/test.sh [pytest args...]
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
exec .venv/bin/python -m pytest "$@"
