#!/usr/bin/env bash
# A throwaway local PostgreSQL (Debian's packages) for the feedback-store tests.
#
#   scripts/postgres.sh install      apt-get install postgresql when its server binaries are missing
#   scripts/postgres.sh start DIR    install if needed, create a cluster in DIR (a fresh, empty or
#                                    missing directory whose parents the postgres user may enter, e.g.
#                                    `mktemp -d` then chmod 755 or a new name under /tmp), start it on 127.0.0.1 at a free port, create
#                                    the database `hematotox_test` and print its URL on stdout:
#                                    postgresql://postgres:PASSWORD@127.0.0.1:PORT/hematotox_test
#   scripts/postgres.sh stop DIR     stop the cluster started in DIR (its files stay until DIR is removed)
#
# The server listens on 127.0.0.1 only, with a random password (scram-sha-256) and its Unix socket
# inside DIR. As root the cluster belongs to the `postgres` user (initdb refuses to run as root).
# Progress goes to stderr; stdout carries only the URL.
set -euo pipefail

die() { echo "postgres.sh: $*" >&2; exit 2; }

bindir() {
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" ]] && echo "$d"
}

cmd_install() {
    if bindir >/dev/null; then
        return 0
    fi
    command -v apt-get >/dev/null || die "PostgreSQL is not installed and apt-get is not available"
    local sudo=""
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null || die "PostgreSQL is not installed and installing it needs root"
        sudo="sudo -n"
    fi
    echo "postgres.sh: installing postgresql (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >&2
    $sudo apt-get install -y -qq --no-install-recommends postgresql >&2
    bindir >/dev/null || die "postgresql installed but no server binaries under /usr/lib/postgresql"
}

as_owner() {
    # Run a PostgreSQL binary as the cluster's owner.
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

cmd_start() {
    local dir="${1:-}"
    [[ -n "$dir" ]] || die "usage: start DIR"
    cmd_install
    local bin port password
    bin="$(bindir)"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    [[ -z "$(ls -A "$dir")" ]] || die "$dir is not empty"
    mkdir -p "$dir/data" "$dir/sock"
    password="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
    printf '%s\n' "$password" >"$dir/pwfile"
    chmod 700 "$dir/data" "$dir/sock"
    chmod 600 "$dir/pwfile"
    if [[ "$(id -u)" == 0 ]]; then
        getent passwd postgres >/dev/null || die "the postgres user does not exist (is postgresql installed?)"
        chown -R postgres: "$dir"
        chmod 755 "$dir"
        runuser -u postgres -- test -x "$dir" \
            || die "the postgres user cannot reach $dir: give a DIR whose parents it may enter (e.g. under /tmp)"
    fi

    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=scram-sha-256 --pwfile="$dir/pwfile" \
        --encoding=UTF8 --no-locale >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed"; }

    local tries=0
    while :; do
        port="$(free_port)"
        if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
            -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir/sock -c fsync=on" \
            start >&2; then
            break
        fi
        tries=$((tries + 1))
        [[ $tries -lt 3 ]] || { cat "$dir/server.log" >&2 || true; die "the server did not start"; }
    done

    PGPASSWORD="$password" "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres hematotox_test >&2 \
        || die "createdb failed"
    echo "$port" >"$dir/port"
    echo "postgresql://postgres:${password}@127.0.0.1:${port}/hematotox_test"
}

cmd_stop() {
    local dir="${1:-}"
    [[ -n "$dir" && -d "$dir/data" ]] || die "usage: stop DIR (a directory given to start)"
    local bin
    bin="$(bindir)" || die "PostgreSQL is not installed"
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
}

case "${1:-}" in
    install) cmd_install ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) die "usage: $0 install | start DIR | stop DIR" ;;
esac
