#!/usr/bin/env bash
# Rewrite fuzz/seeds/<target>/ from files a real engine writes (see fuzz/tests/seeds.rs), then
# replay them through every target's checks. Rerun after a format change; commit the result.
set -euo pipefail
cd "$(dirname "$0")"
cargo test --test seeds -- --ignored --nocapture
cargo test --test replay
du -sh seeds/*
