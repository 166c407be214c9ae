#!/usr/bin/env bash
# A private, throwaway PostgreSQL server for the tests (Debian's `postgresql` package).
#   eval "$(.ci/postgres.sh start)"   installs PostgreSQL if missing, initdb's a cluster in a temp dir,
#                                      starts it on 127.0.0.1 at a free port and prints the exports
#                                      FACEFINDER_TEST_POSTGRES_URL and FACEFINDER_TEST_POSTGRES_DIR
#   .ci/postgres.sh stop DIR           stops that cluster and removes DIR
# Everything but the exports goes to stderr. Only listens on 127.0.0.1; trust auth (test data only).
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

# Runs a PostgreSQL binary as the `postgres` user when we are root (initdb refuses to run as root).
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "${1:-start}" in
start)
    if [ -z "$(bindir)" ] || [ ! -x "$(bindir)/initdb" ]; then
        echo "postgres: installing the Debian postgresql package" >&2
        as_root apt-get update -qq >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    fi
    bin=$(bindir)
    dir=$(mktemp -d /tmp/facefinder-pg.XXXXXX)
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >/dev/null
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >&2
    echo "export FACEFINDER_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
    echo "export FACEFINDER_TEST_POSTGRES_DIR=$dir"
    ;;
stop)
    dir=${2:?usage: postgres.sh stop DIR}
    as_pg "$(bindir)/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
    rm -rf "$dir"
    ;;
*)
    echo "usage: postgres.sh start | stop DIR" >&2
    exit 2
    ;;
esac
