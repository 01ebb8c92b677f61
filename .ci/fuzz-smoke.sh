#!/usr/bin/env bash
# Fuzz smoke test: replay the committed seeds and past findings, then run every cargo-fuzz
# target for a short time on stable (no sanitizer). Fails on any finding.
#
#   FUZZ_SECONDS   seconds per target (default 20)
#   FUZZ_TARGETS   space-separated targets (default: every target `cargo fuzz list` reports)
#   FUZZ_JOBS      targets run at once (default 1)
#
# Targets are discovered from fuzz/Cargo.toml, so a new [[bin]] there is picked up without
# editing this script (six today: record_decode, cq_entry_decode, tag_expression, engine_recover,
# quic_frame_decode, http_request; at the default 20 s each that is two minutes of fuzzing after
# the build). A finding is saved under fuzz/artifacts/<target>/; reproduce it with
# `cargo fuzz run --sanitizer none <target> fuzz/artifacts/<target>/<file>`, then add the file
# to fuzz/regressions/<target>/ once the bug is fixed.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
seconds="${FUZZ_SECONDS:-20}"
jobs="${FUZZ_JOBS:-1}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

echo "fuzz-smoke: replaying seeds and regressions"
cargo test --manifest-path fuzz/Cargo.toml --quiet

if [[ -n "${FUZZ_TARGETS:-}" ]]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    mapfile -t targets < <(cargo fuzz list)
    # A fuzz_targets/<t>.rs without its [[bin]] would silently never run.
    for f in fuzz/fuzz_targets/*.rs; do
        t="$(basename "$f" .rs)"
        if [[ " ${targets[*]} " != *" $t "* ]]; then
            echo "fuzz-smoke: $f has no [[bin]] in fuzz/Cargo.toml"
            exit 1
        fi
    done
fi

# Build every target first, so the time budget is spent fuzzing.
for t in "${targets[@]}"; do
    cargo fuzz build --sanitizer none --debug-assertions "$t"
done

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT

run_one() {
    local t="$1"
    local corpus="fuzz/corpus/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    local seeds=()
    [[ -d "fuzz/seeds/$t" ]] && seeds=("fuzz/seeds/$t")
    # The first corpus directory receives new inputs (gitignored); fuzz/seeds/<t> is read only.
    if cargo fuzz run --sanitizer none --debug-assertions "$t" "$corpus" "${seeds[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$logs/$t.log" 2>&1; then
        echo "fuzz-smoke: $t ok ($(grep -E '^stat::number_of_executed_units' "$logs/$t.log" | awk '{print $2}') execs in ${seconds}s)"
        return 0
    fi
    echo "fuzz-smoke: $t FAILED; last lines of its log:"
    tail -n 60 "$logs/$t.log"
    return 1
}

failed=()
pids=()
names=()
for t in "${targets[@]}"; do
    run_one "$t" &
    pids+=("$!")
    names+=("$t")
    if ((${#pids[@]} >= jobs)); then
        wait "${pids[0]}" || failed+=("${names[0]}")
        pids=("${pids[@]:1}")
        names=("${names[@]:1}")
    fi
done
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || failed+=("${names[$i]}")
done

if ((${#failed[@]})); then
    echo "fuzz-smoke: findings in: ${failed[*]}"
    exit 1
fi
echo "fuzz-smoke: all ${#targets[@]} targets ran ${seconds}s without a finding"
