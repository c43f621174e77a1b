#!/usr/bin/env bash
# The benchmark suite (issue 6; not part of the tests): sets up .venv, installs wrk from Debian's
# packages when it is missing, and runs bench/run.py, which starts the service and a bare
# FastAPI/uvicorn baseline as their own processes, drives them with wrk, runs the no-prefetch
# fallback against a local sekmet-fhir and prints a markdown table. About 6 minutes on 2 cores.
#   scripts/bench.sh [--duration 10] [--repeat 3] [--connections 16] [--quick] [--no-fallback] [--json FILE]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
source scripts/setup-venv.sh
setup_venv
if ! command -v wrk >/dev/null; then
    SUDO=""; [[ "$(id -u)" == 0 ]] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq wrk >/dev/null
fi
exec .venv/bin/python bench/run.py "$@"
