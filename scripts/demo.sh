#!/usr/bin/env bash
# The main job on a fresh machine: a payment-reminder campaign of 200 numbers (plus a bad row
# and a duplicate) run to completion by `outcall campaign run` on embedded defaults (SQLite in
# demo-output/data), against a local SIPp carrier that answers by the number's last digit:
# 0-5 answer (the synthesized prompt is played and echoed back, calls are recorded), 6-7 busy
# (retried twice), 8 rings until our 3 s ring timeout (retried once), 9 empty number.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

need_debs sipp:sip-tester espeak-ng:espeak-ng curl:curl

log "building outcall (release)"
cargo build --release --locked -p outcall
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/outcall"

OUT="$ROOT/demo-output"
rm -rf "$OUT/data"
mkdir -p "$OUT"
espeak-ng -s 150 -w "$OUT/prompt.wav" \
  "Hello. This is a payment reminder from Outcall. Press 1 to confirm, or 2 to hear this message again."

log "starting the SIPp carrier on 127.0.0.1:25060 (tests/sipp/uas_mix.xml)"
(cd "$OUT" && exec sipp -sf "$ROOT/tests/sipp/uas_mix.xml" -i 127.0.0.1 -mi 127.0.0.1 -p 25060 \
   -nostdin -rtp_echo >/dev/null 2>&1) &
SIPP=$!
trap 'kill $SIPP 2>/dev/null || true' EXIT
sleep 0.5

log "running examples/campaign.toml with examples/numbers.csv"
"$BIN" campaign run --file examples/campaign.toml --contacts examples/numbers.csv \
  --data-dir "$OUT/data"
log "recordings: $OUT/data/recordings/1/ · database: $OUT/data/outcall.db (numbers encrypted)"
