#!/usr/bin/env bash
# The static checks, all of them even when one fails; exits 1 if any failed. scripts/test.sh runs
# them before pytest, so CI fails on any of them:
#   ruff check and ruff format --check   lint and format (pyproject.toml [tool.ruff])
#   lint-imports                         the layers (pyproject.toml [tool.importlinter], docs/ARCHITECTURE.md)
#   mypy                                 types, strict for service/clinical (pyproject.toml [tool.mypy])
# Needs .venv with the lint extra (scripts/test.sh installs it from requirements/test.txt).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
failed=()
check() {  # NAME COMMAND...
    local name="$1"
    shift
    if ! "$@"; then
        failed+=("$name")
    fi
}
quiet() {  # COMMAND...: its output only when it fails (lint-imports lists every kept contract)
    local out
    out="$("$@" 2>&1)" || { printf '%s\n' "$out"; return 1; }
}
check "ruff check" .venv/bin/ruff check --quiet .
check "ruff format" .venv/bin/ruff format --check --quiet .
check "lint-imports" quiet .venv/bin/lint-imports --no-logo
check "mypy" .venv/bin/mypy
if ((${#failed[@]})); then
    echo "lint.sh: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "lint.sh: ruff, ruff format, lint-imports and mypy passed" >&2
