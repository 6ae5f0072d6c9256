#!/usr/bin/env bash
# Reproduces the scheduler figures in docs/benchmarks.md: queue and scheduler throughput with a
# null call engine (one core), then due-time-to-INVITE latency against a SIPp UAS at 1,000 CPS.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
need_debs sipp:sip-tester
cargo build --release --locked -p outcall
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/outcall"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
(cd "$work" && sipp -sf "$ROOT/tests/sipp/uas_bench.xml" -i 127.0.0.1 -p 26070 -nostdin \
  >/dev/null 2>&1) &
sleep 0.5
"$BIN" bench scheduler --queue-tasks 1000000 --memory-tasks 50000 --sqlite-tasks 20000 \
  --trunk 127.0.0.1:26070 --cps "${CPS:-1000}" --calls "${CALLS:-5000}"
