#!/usr/bin/env bash
# Reproduces docs/benchmarks.md: the SIP call engine against a SIPp UAS on loopback, compared
# in the same run with SIPp's own UAC on the same scenario.
#   1. signalling only: N calls at CPS (default 5000 at 1000/s), answer then immediate BYE
#   2. media: M concurrent answered calls with G.711 RTP both ways (SIPp echoes the RTP)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
need_debs sipp:sip-tester
cargo build --release --locked -p outcall
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/outcall"
CALLS="${CALLS:-5000}" CPS="${CPS:-1000}"
MEDIA_CALLS="${MEDIA_CALLS:-2000}" MEDIA_CPS="${MEDIA_CPS:-200}" HOLD_MS="${HOLD_MS:-15000}"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

log "signalling: $CALLS calls at $CPS cps (outcall, then sipp's UAC)"
(cd "$work" && sipp -sf "$ROOT/tests/sipp/uas_bench.xml" -i 127.0.0.1 -p 26060 -nostdin \
  >/dev/null 2>&1) &
sleep 0.5
"$BIN" bench sip --trunk 127.0.0.1:26060 --calls "$CALLS" --cps "$CPS" \
  --compare-sipp "$ROOT/tests/sipp/uac_bench.xml"

log "media: $MEDIA_CALLS answered calls at $MEDIA_CPS cps, ${HOLD_MS} ms of G.711 each way"
(cd "$work" && sipp -sf "$ROOT/tests/sipp/uas_answer_wait_bye.xml" -i 127.0.0.1 -mi 127.0.0.1 \
  -p 26062 -nostdin -rtp_echo >/dev/null 2>&1) &
sleep 0.5
"$BIN" bench sip --trunk 127.0.0.1:26062 --calls "$MEDIA_CALLS" --cps "$MEDIA_CPS" \
  --hold-ms "$HOLD_MS" --media
