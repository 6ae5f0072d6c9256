#!/usr/bin/env bash
# Single calls: builds Outcall, starts a local SIPp carrier and places real
# calls through it, printing each call's state transitions and classified CDR.
#   - an answered call that plays a synthesized prompt, recorded in both directions (echo)
#   - a busy number (486, Q.850 17), an empty number (404, Q.850 1), a number that rings out
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

need_debs sipp:sip-tester espeak-ng:espeak-ng

log "building outcall (release)"
cargo build --release --locked -p outcall
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/outcall"

OUT="$ROOT/demo-output"
mkdir -p "$OUT"
PROMPT="$OUT/prompt.wav"
espeak-ng -s 150 -w "$PROMPT" "Hello. This is a payment reminder from Outcall. Press 1 to confirm, or 2 to hear this message again."

PORT="${OUTCALL_DEMO_PORT:-25060}"
run_one() {
  local scenario="$1" to="$2"; shift 2
  log "carrier scenario ${scenario}: calling ${to}"
  (cd "$OUT" && timeout 120 sipp -sf "$ROOT/tests/sipp/$scenario" -i 127.0.0.1 -mi 127.0.0.1 \
      -p "$PORT" -m 1 -nostdin -rtp_echo >/dev/null 2>&1) &
  local sipp_pid=$!
  sleep 0.5
  "$BIN" call --trunk "127.0.0.1:$PORT" --to "$to" --caller-id 02150000001 "$@"
  wait "$sipp_pid" || true
}

run_one uas_answer_echo.xml 13800138000 --prompt "$PROMPT" --record "$OUT/answered.wav"
run_one uas_busy.xml 13900139000
run_one uas_404_cause1.xml 13700137000
run_one uas_ring_no_answer.xml 13600136000 --ring-timeout 3

log "recording of the answered call (left: prompt sent, right: carrier echo): $OUT/answered.wav"
