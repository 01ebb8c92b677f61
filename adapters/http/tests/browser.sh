#!/usr/bin/env bash
# The console page in a real headless browser: Debian's chromium driven by playwright-core.
#
# Installs what is missing (chromium from Debian with apt-get; playwright-core from npm into
# <target>/browser-node, which never downloads a browser of its own), builds and starts the test
# server (`examples/serve.rs`, fresh engine, 127.0.0.1, random port), runs
# tests/browser/console.test.js, stops the server. The screenshot is <target>/console.png.
#
# Usage: adapters/http/tests/browser.sh
# Env:   CARGO_TARGET_DIR (default <repo>/target), CHROMIUM (default /usr/bin/chromium),
#        SERVE_BIN (an already built test server; skips the build)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../../.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
work="$target/browser"
node_dir="$target/browser-node"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
mkdir -p "$work" "$node_dir"

if [ ! -x "$CHROMIUM" ]; then
    echo "installing chromium from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi
"$CHROMIUM" --version 2>/dev/null || true

if [ ! -d "$node_dir/node_modules/playwright-core" ]; then
    echo "installing playwright-core into $node_dir"
    [ -f "$node_dir/package.json" ] || echo '{"private": true}' >"$node_dir/package.json"
    (cd "$node_dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --silent playwright-core@1)
fi

server_bin="${SERVE_BIN:-}"
if [ -z "$server_bin" ]; then
    (cd "$repo" && cargo build --quiet -p tern-http --example serve)
    server_bin="$target/debug/examples/serve"
fi

port_file="$work/port"
rm -f "$port_file"
"$server_bin" --port-file "$port_file" --disk-usage 0.1 --max-seconds 300 >"$work/server.log" 2>&1 &
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
base="http://127.0.0.1:$(cat "$port_file")"
echo "server at $base (pid $server_pid)"

status=0
NODE_PATH="$node_dir/node_modules" timeout 120 node "$here/browser/console.test.js" "$base" \
    "$target/console.png" || status=$?
cleanup
trap - EXIT
if [ "$status" -ne 0 ]; then
    echo "browser test: FAILED (exit $status); server log: $work/server.log"
    exit "$status"
fi
echo "browser test: passed; screenshot $target/console.png"
