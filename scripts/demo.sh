#!/usr/bin/env bash
# Sets everything up on a fresh machine (Python 3.11+) and runs the service on
# http://127.0.0.1:8080 in development mode with the demo configuration.
# Example hook requests are in examples/; see README for the curl commands.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
source scripts/setup-venv.sh
setup_venv
export HEMATOTOX_CONFIG="${HEMATOTOX_CONFIG:-$REPO/examples/demo-config.toml}"
exec .venv/bin/hematotox-cds serve --host 127.0.0.1 --port "${PORT:-8080}"
