#!/usr/bin/env bash
# Reproduces the number-pool figures in docs/benchmarks.md: an import of generated numbers into
# the embedded store (SQLite), then the in-memory pipeline per stage on one core.
#   IMPORT=10000000 PIPELINE=1000000 bash scripts/bench-import.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
cargo build --release --locked -p outcall
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/outcall"
"$BIN" bench import --import "${IMPORT:-10000000}" --pipeline "${PIPELINE:-1000000}"
