#!/usr/bin/env bash
# Property-based run of the OpenAPI spec against a live tern HTTP server (schemathesis).
#
# Installs schemathesis from PyPI into a venv under the cargo target directory if it is not
# there, builds and starts the test server (`examples/serve.rs`: a fresh engine in a temporary
# directory on 127.0.0.1, random port), runs `schemathesis run` against /openapi.json with the
# checks not_a_server_error and response_schema_conformance (no 5xx, every answer matches the
# spec), a bounded number of examples per operation and a time budget, then stops the server.
#
# Usage: adapters/http/tests/schemathesis.sh [max-examples (default 60)]
# Env:   CARGO_TARGET_DIR (default <repo>/target), SCHEMATHESIS_SEED, SCHEMATHESIS_MAX_TIME (the
#        server's own lifetime bound, seconds; the run itself is bounded by the example count)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
examples="${1:-60}"
seed="${SCHEMATHESIS_SEED:-20240101}"
max_time="${SCHEMATHESIS_MAX_TIME:-600}"
venv="$target/schemathesis-venv"
work="$target/schemathesis"
mkdir -p "$work"

if [ ! -x "$venv/bin/schemathesis" ]; then
    echo "installing schemathesis into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
fi
"$venv/bin/schemathesis" --version

# SERVE_BIN: use an already built test server (skips the build).
server_bin="${SERVE_BIN:-}"
if [ -z "$server_bin" ]; then
    (cd "$repo" && cargo build --quiet -p tern-http --example serve)
    server_bin="$target/debug/examples/serve"
fi

port_file="$work/port"
rm -f "$port_file"
# The server stops by itself after --max-seconds even if this script is killed.
"$server_bin" --port-file "$port_file" --disk-usage 0.1 --wait-max-ms 50 --max-seconds $((max_time + 120)) \
    --topic demo >"$work/server.log" 2>&1 &
server_pid=$!
cleanup() {
    if kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

for _ in $(seq 1 200); do
    [ -s "$port_file" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log"; exit 1; }
    sleep 0.05
done
port="$(cat "$port_file")"
base="http://127.0.0.1:$port"
echo "server at $base (pid $server_pid)"

status=0
# Run from the work directory: schemathesis and hypothesis keep their caches in the current one.
# One worker: schemathesis 4.32 on Python 3.11 can crash in hypothesis's source inspection when
# two workers parse at once ("AST constructor recursion depth mismatch").
cd "$work"
"$venv/bin/schemathesis" run "$base/openapi.json" \
    --url "$base" \
    --checks not_a_server_error,response_schema_conformance \
    --max-examples "$examples" \
    --seed "$seed" \
    --workers 1 \
    --request-timeout 10 \
    --phases examples,coverage,fuzzing \
    --suppress-health-check too_slow,filter_too_much,data_too_large \
    --report junit --report-junit-path "$work/junit.xml" \
    2>&1 | tee "$work/output.txt" || status=$?

cleanup
trap - EXIT
if [ "$status" -ne 0 ]; then
    echo "schemathesis: FAILED (exit $status); server log: $work/server.log"
    exit "$status"
fi
echo "schemathesis: passed"
