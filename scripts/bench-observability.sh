#!/usr/bin/env bash
# Reproduces docs/benchmarks.md "Observability overhead": the SIP call engine (`outcall bench
# sip`) against a SIPp UAS on loopback, with metrics and tracing off and on, in one run.
#
#   instructions (default): each configuration once under valgrind's callgrind, which counts
#     the instructions the process executes: repeatable on a busy machine, unlike CPU time.
#     The Prometheus recorder's one-time installation is reported apart and left out.
#   MODE=cpu: CPU ms per call from /proc, off and on alternated ROUNDS times, medians.
#
# "metrics": the Prometheus recorder, rendered once a second as a scrape would.
# "logs": JSON lines at info (one per call, with the call span's trace id) written to a file.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
need_debs sipp:sip-tester valgrind
cargo build --release --locked -p outcall
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/outcall"
MODE="${MODE:-instructions}"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
(cd "$work" && sipp -sf "$ROOT/tests/sipp/uas_bench.xml" -i 127.0.0.1 -p 26070 -nostdin \
  >/dev/null 2>&1) &
sleep 0.5

args() { # $1: off|metrics|logs|both -> global flags and bench flags
  case "$1" in
    off) echo "--log-filter warn bench sip" ;;
    metrics) echo "--log-filter warn bench sip --metrics" ;;
    logs) echo "--log-filter info --log-json bench sip" ;;
    both) echo "--log-filter info --log-json bench sip --metrics" ;;
  esac
}

if [ "$MODE" = cpu ]; then
  CALLS="${CALLS:-5000}" CPS="${CPS:-500}" ROUNDS="${ROUNDS:-5}"
  cpu() { # CPU ms per call of one run
    # shellcheck disable=SC2046
    "$BIN" $(args "$1") --trunk 127.0.0.1:26070 --calls "$CALLS" --cps "$CPS" 2>"$work/log" |
      awk -F'|' '/^\| outcall/ {gsub(/ /,"",$9); print $9}'
  }
  printf '| round | off: CPU ms/call | on: CPU ms/call | on / off |\n|---|---|---|---|\n'
  : >"$work/off"; : >"$work/on"
  for i in $(seq 1 "$ROUNDS"); do
    off=$(cpu off); on=$(cpu both)
    echo "$off" >>"$work/off"; echo "$on" >>"$work/on"
    printf '| %s | %s | %s | %s |\n' "$i" "$off" "$on" \
      "$(awk -v a="$on" -v b="$off" 'BEGIN{printf "%.3f", a/b}')"
  done
  med() { sort -n "$1" | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
  awk -v a="$(med "$work/on")" -v b="$(med "$work/off")" \
    'BEGIN{printf "\nmedian CPU per call: off %.3f ms, on %.3f ms: %+.1f %%\n", b, a, (a/b-1)*100}'
  exit 0
fi

CALLS="${CALLS:-1000}" CPS="${CPS:-100}"
instructions() { # $1: configuration -> "total install"
  # shellcheck disable=SC2046
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" \
    "$BIN" $(args "$1") --trunk 127.0.0.1:26070 --calls "$CALLS" --cps "$CPS" \
    >"$work/out" 2>"$work/err"
  grep -q "| outcall.* | $CALLS | $CALLS | 0 |" "$work/out" || {
    cat "$work/out" >&2
    echo "$1: not every call was answered" >&2
    exit 1
  }
  total=$(grep -o 'Collected : [0-9]*' "$work/err" | awk '{print $3}')
  install=$(callgrind_annotate --inclusive=yes "$work/cg.out" 2>/dev/null |
    awk '/telemetry::install_metrics \[/ && !n {gsub(/,/,"",$1); print $1; n=1}')
  echo "$total ${install:-0}"
}
printf '| configuration | instructions | recorder install (once) | per call | vs off |\n'
printf '|---|---|---|---|---|\n'
base=""
for c in off metrics logs both; do
  read -r total install < <(instructions "$c")
  per=$(( (total - install) / CALLS ))
  [ -n "$base" ] || base=$per
  printf '| %s | %s | %s | %s | %s |\n' "$c" "$total" "$install" "$per" \
    "$(awk -v a="$per" -v b="$base" 'BEGIN{printf "%+.1f %%", (a/b-1)*100}')"
done
echo
echo "$CALLS calls at $CPS cps under callgrind; per call = (instructions - recorder install) / calls"
