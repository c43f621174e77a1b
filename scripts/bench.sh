#!/usr/bin/env bash
# The benchmark suite (issue 6; not part of the tests): sets up .venv, installs wrk from Debian's
# packages when it is missing, and runs bench/run.py, which starts the service and a bare
# FastAPI/uvicorn baseline as their own processes, drives them with wrk, runs the no-prefetch
# fallback against a local sekmet-fhir and prints a markdown table. About 10 minutes on 2 cores.
# The Python peer (issue 15: PyPI's healthchain 0.16.1, bench/healthchain_app.py) gets its own
# virtualenv, bench/.venv-healthchain, with the same uvicorn, uvloop and httptools as our lock; when it
# cannot be installed the bench runs without it and says so in the table.
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
PEER=bench/.venv-healthchain
if [[ ! -x "$PEER/bin/python" ]] || ! "$PEER/bin/python" -c "import healthchain, uvloop, httptools" 2>/dev/null; then
    # The server packages pinned as in our runtime lock, so that both stacks run the same uvicorn.
    pins=$(grep -oE '^(uvicorn|uvloop|httptools)==[^ ;]+' requirements/runtime.txt | tr '\n' ' ')
    rm -rf "$PEER"
    if ! { "${PYTHON:-python3}" -m venv "$PEER" &&
        "$PEER/bin/python" -m pip install --quiet --disable-pip-version-check healthchain==0.16.1 $pins; }; then
        echo "bench.sh: could not install healthchain 0.16.1 into $PEER; the bench runs without the peer" >&2
        rm -rf "$PEER"
    fi
fi
exec .venv/bin/python bench/run.py "$@"
