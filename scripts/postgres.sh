#!/usr/bin/env bash
# A throwaway PostgreSQL 16 server with pgvector, on a loopback port, in a temporary folder: for the
# PostgreSQL tests (`.ci/run`) and the replica benchmarks. The server comes from the PyPI wheel
# `pgserver` (PostgreSQL 16 with the `vector` extension; Debian has no pgvector package here),
# installed into a virtualenv beside the data folder. Nothing is installed system-wide.
#
#   eval "$(scripts/postgres.sh start)"   # prints export lines: AFFINITY_TEST_POSTGRES, PGPASSWORD, AFFINITY_PG_DIR
#   scripts/postgres.sh stop "$AFFINITY_PG_DIR"
#
# PostgreSQL refuses to run as root: as root the server runs as the `postgres` user (made by
# Debian's postgresql package; created here when missing). Host connections use a password
# (scram-sha-256), which the store reads from PGPASSWORD, never from the URL.
set -euo pipefail

start() {
    local dir venv bin port user password
    dir="$(mktemp -d "${TMPDIR:-/tmp}/affinity-pg.XXXXXX")"
    chmod 755 "$dir"
    venv="${AFFINITY_PG_VENV:-$dir/venv}"
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install -q pgserver >&2
    fi
    bin="$("$venv/bin/python" -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("pgserver").origin).parent / "pginstall" / "bin")')"
    run=()
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        run=(runuser -u postgres --)
        # The wheel's files must be readable by that user.
        chmod -R a+rX "$venv" >/dev/null 2>&1 || true
    fi
    mkdir -p "$dir/data" "$dir/socket" "$dir/log"
    [ "$(id -u)" = 0 ] && chown -R postgres "$dir/data" "$dir/socket" "$dir/log"
    password="affinity-$RANDOM$RANDOM"
    printf '%s\n' "$password" > "$dir/pwfile"
    [ "$(id -u)" = 0 ] && chown postgres "$dir/pwfile"
    "${run[@]}" "$bin/initdb" -D "$dir/data" -U postgres --pwfile="$dir/pwfile" --auth-host=scram-sha-256 --auth-local=trust -E UTF8 >"$dir/log/initdb.log" 2>&1
    rm -f "$dir/pwfile"
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
    "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log/server.log" -w -t 60 \
        -o "-p $port -c listen_addresses=127.0.0.1 -k $dir/socket -c max_connections=200 -c fsync=on -c synchronous_commit=on" start >&2
    "${run[@]}" "$bin/psql" -h "$dir/socket" -p "$port" -U postgres -qAt -c "CREATE DATABASE affinity_test" >&2
    "${run[@]}" "$bin/psql" -h "$dir/socket" -p "$port" -U postgres -d affinity_test -qAt -c "CREATE EXTENSION IF NOT EXISTS vector" >&2
    echo "export AFFINITY_PG_DIR='$dir'"
    echo "export AFFINITY_PG_BIN='$bin'"
    echo "export AFFINITY_TEST_POSTGRES='postgres://postgres@127.0.0.1:$port/affinity_test'"
    echo "export PGPASSWORD='$password'"
}

stop() {
    local dir="$1" bin
    [ -d "$dir/data" ] || { echo "no server folder at $dir" >&2; return 1; }
    bin="${AFFINITY_PG_BIN:-$(ls -d "$dir"/venv/lib/python*/site-packages/pgserver/pginstall/bin | head -1)}"
    run=()
    [ "$(id -u)" = 0 ] && run=(runuser -u postgres --)
    "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
    rm -rf "$dir"
}

case "${1:-}" in
    start) start ;;
    stop) stop "${2:-${AFFINITY_PG_DIR:-}}" ;;
    *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
