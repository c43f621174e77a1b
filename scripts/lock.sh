#!/usr/bin/env bash
# Regenerates the lock files from pyproject.toml, whose ranges stay the compatibility contract:
#   requirements/test.txt     the service with its test and lint extras (scripts/test.sh, CI)
#   requirements/runtime.txt  the service alone, at the same versions (deploy/Dockerfile, demo.sh, bench.sh)
# Every pin carries the sha256 of each of its files on the index, resolved once for every platform
# and every Python from 3.11 on (a universal resolution), and pip installs them with --require-hashes.
#
#   scripts/lock.sh                      after a change to pyproject.toml: keeps every pin it still allows
#   scripts/lock.sh --upgrade            every pin to the newest release the ranges allow
#   scripts/lock.sh --upgrade-package X  only X (and what it needs)
#
# uv resolves (a pinned version, in its own virtualenv .venv-lock); pip stays the installer.
set -euo pipefail
UV_VERSION="0.13.9"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

VENV=.venv-lock
if [[ "$("$VENV/bin/uv" --version 2>/dev/null)" != "uv $UV_VERSION"* ]]; then
    [[ -x "$VENV/bin/python" ]] || "${PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi

compile() {  # OUTPUT [uv pip compile options...]
    local out="$1" tmp
    shift
    tmp="$(mktemp)"
    # An existing lock is uv's starting point: its pins stay unless the ranges or --upgrade move them.
    [[ ! -f "$out" ]] || cp "$out" "$tmp"
    "$VENV/bin/uv" pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
        --custom-compile-command "scripts/lock.sh" --quiet --output-file "$tmp" "$@"
    { echo "$(python3 scripts/lock_stamp.py | sed 's/^/# pyproject.toml dependencies sha256: /')"; cat "$tmp"; } >"$out"
    rm -f "$tmp"
    echo "lock.sh: $out: $(grep -c '^[A-Za-z0-9].*==' "$out") pins" >&2
}

mkdir -p requirements
compile requirements/test.txt --extra test --extra lint "$@"
# The runtime lock within the test lock: the image runs exactly the versions the tests ran.
compile requirements/runtime.txt --constraint requirements/test.txt
python3 scripts/lock_stamp.py check requirements/test.txt requirements/runtime.txt
