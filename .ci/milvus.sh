#!/usr/bin/env bash
# A private, throwaway Milvus standalone server for the tests (the `milvus` PyPI wheel, installed by
# setup.sh into .venv, ships the real server binary with an embedded etcd and local storage).
#   eval "$(.ci/milvus.sh start)"   starts it in a temp dir on 127.0.0.1:19530 and prints the exports
#                                    FACEFINDER_TEST_MILVUS_URI and FACEFINDER_TEST_MILVUS_DIR
#   .ci/milvus.sh stop DIR           stops that server and removes DIR
# Everything but the exports goes to stderr. Garbage collection of dropped segments and message
# retention are set to seconds instead of hours, so the erasure tests can watch deleted vectors leave
# the disk. (Files without metadata keep a 10-minute grace: at 2 s the collector deleted a running
# compaction's output and the server panicked.)
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-start}" in
start)
    [ -x .venv/bin/milvus-server ] || { echo "milvus: run ./setup.sh first (it installs the milvus server wheel)" >&2; exit 1; }
    if .venv/bin/python -c 'import socket; socket.create_connection(("127.0.0.1", 19530), timeout=1)' 2>/dev/null; then
        echo "milvus: port 19530 is taken (another Milvus?); stop it first" >&2; exit 1
    fi
    dir=$(mktemp -d /tmp/facefinder-milvus.XXXXXX)
    env DATACOORD_GC_INTERVAL=2 DATACOORD_GC_MISSINGTOLERANCE=600 DATACOORD_GC_DROPTOLERANCE=10 \
        DATACOORD_COMPACTION_SINGLE_RATIO_THRESHOLD=0.00001 \
        ROCKSMQ_RETENTIONTIMEINMINUTES=1 ROCKSMQ_COMPACTIONINTERVAL=10 \
        nohup .venv/bin/milvus-server --data "$dir/base" >"$dir/server.log" 2>&1 &
    echo $! >"$dir/pid"
    .venv/bin/python - "$dir" >&2 <<'PY'
import socket, sys, time
deadline = time.time() + 120
while time.time() < deadline:
    try:
        socket.create_connection(("127.0.0.1", 19530), timeout=1).close()
        break
    except OSError:
        time.sleep(0.5)
else:
    sys.exit(f"milvus: the server did not start within 120 s; see {sys.argv[1]}/server.log")
from pymilvus import connections, utility
connections.connect(uri="http://127.0.0.1:19530", timeout=60)
print("milvus: server", utility.get_server_version(), "ready", file=sys.stderr)
PY
    echo "export FACEFINDER_TEST_MILVUS_URI=milvus://127.0.0.1:19530"
    echo "export FACEFINDER_TEST_MILVUS_DIR=$dir"
    ;;
stop)
    dir=${2:?usage: milvus.sh stop DIR}
    pid=$(cat "$dir/pid" 2>/dev/null || true)
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    pkill -f "$dir/base/bin/milvus" 2>/dev/null || true
    for _ in $(seq 10); do pgrep -f "$dir/base/bin/milvus" >/dev/null || break; sleep 1; done
    pkill -9 -f "$dir/base/bin/milvus" 2>/dev/null || true  # it can take minutes to shut down gracefully
    for _ in $(seq 10); do pgrep -f "$dir/base/bin/milvus" >/dev/null || break; sleep 1; done
    rm -rf "$dir"
    ;;
*)
    echo "usage: milvus.sh start | stop DIR" >&2
    exit 2
    ;;
esac
