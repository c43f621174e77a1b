#!/usr/bin/env bash
# Local FHIR R4 server (sekmet-fhir) for integration tests.
#
#   scripts/fhir-server.sh install              create $REPO/.venv-fhir with sekmet-fhir (idempotent)
#   scripts/fhir-server.sh serve PORT [DIR]     run it in the foreground on 127.0.0.1:PORT, data in DIR
#                                               (a fresh temp dir when DIR is omitted)
#
# sekmet pins clash with the service's dependencies, hence its own virtualenv.
# Env: PYTHON (interpreter for the venv, default python3),
#      FHIR_SERVER_TOKEN (when set, the server accepts only `Authorization: Bearer $FHIR_SERVER_TOKEN`).
set -euo pipefail

SEKMET_VERSION="0.1.1"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv-fhir"
SEKMET="$VENV/bin/sekmet"

die() { echo "fhir-server.sh: $*" >&2; exit 2; }

installed() {
    [[ -x "$SEKMET" ]] && "$VENV/bin/python" - "$SEKMET_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if version("sekmet-fhir") == sys.argv[1] else 1)
PY
}

cmd_install() {
    if installed; then
        echo "sekmet-fhir $SEKMET_VERSION already installed in $VENV"
        return 0
    fi
    [[ -d "$VENV" ]] || "${PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "sekmet-fhir==$SEKMET_VERSION"
    installed || die "sekmet-fhir $SEKMET_VERSION did not install into $VENV"
    echo "sekmet-fhir $SEKMET_VERSION installed in $VENV"
}

cmd_serve() {
    local port="${1:-}" dir="${2:-}"
    [[ "$port" =~ ^[0-9]+$ ]] || die "usage: serve PORT [DIR]"
    installed || die "sekmet-fhir is not installed: run '$0 install' first"
    [[ -n "$dir" ]] || dir="$(mktemp -d "${TMPDIR:-/tmp}/sekmet-fhir.XXXXXX")"
    mkdir -p "$dir/data"

    # The YAML keys follow sekmet.config.Settings. Inbound traffic logging is off: the test data
    # would otherwise be copied into a second table for no benefit.
    {
        echo "host: 127.0.0.1"
        echo "port: $port"
        echo "base_url: http://127.0.0.1:$port/fhir"
        echo "data_dir: $dir/data"
        echo "log_inbound: false"
        echo "simulator: {enabled: false}"
        if [[ -n "${FHIR_SERVER_TOKEN:-}" ]]; then
            echo "server_auth: {types: [bearer], tokens: [\"$FHIR_SERVER_TOKEN\"]}"
        fi
    } >"$dir/settings.yaml"
    chmod 600 "$dir/settings.yaml"

    # sekmet resolves some paths (keys/, scenarios/) against the working directory: keep them in DIR.
    cd "$dir"
    # exec, so that the caller's process id is the server's and terminating it stops the server.
    exec "$SEKMET" serve -c "$dir/settings.yaml" --host 127.0.0.1 --port "$port"
}

case "${1:-}" in
    install) cmd_install ;;
    serve) shift; cmd_serve "$@" ;;
    *) die "usage: $0 install | serve PORT [DIR]" ;;
esac
