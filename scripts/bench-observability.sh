#!/usr/bin/env bash
# Reproduces docs/benchmarks.md "Observability overhead": the SIP call engine against a SIPp
# UAS on loopback, with metrics and tracing off, then on (Prometheus recorder with a render
# every second, JSON logs at info with every call's span and trace id written to a file),
# alternated ROUNDS times in one run so both see the same machine. CPU per call is the cost.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
need_debs sipp:sip-tester
cargo build --release --locked -p outcall
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/outcall"
CALLS="${CALLS:-5000}" CPS="${CPS:-500}" ROUNDS="${ROUNDS:-3}"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
(cd "$work" && sipp -sf "$ROOT/tests/sipp/uas_bench.xml" -i 127.0.0.1 -p 26070 -nostdin \
  >/dev/null 2>&1) &
sleep 0.5
run() { # $1: off|on
  if [ "$1" = on ]; then
    "$BIN" --log-filter info --log-json bench sip --trunk 127.0.0.1:26070 --calls "$CALLS" \
      --cps "$CPS" --metrics 2>"$work/log.jsonl"
  else
    "$BIN" --log-filter warn bench sip --trunk 127.0.0.1:26070 --calls "$CALLS" --cps "$CPS" \
      2>/dev/null
  fi | awk -F'|' '/^\| outcall/ {gsub(/ /,"",$9); gsub(/ /,"",$7); print $9, $7}'
}
declare -a off_cpu on_cpu
printf '| round | off: CPU ms/call | on: CPU ms/call | on / off |\n|---|---|---|---|\n'
for i in $(seq 1 "$ROUNDS"); do
  read -r off calls_off < <(run off)
  read -r on calls_on < <(run on)
  printf '| %s | %s | %s | %s |\n' "$i" "$off" "$on" "$(awk -v a="$on" -v b="$off" 'BEGIN{printf "%.3f", a/b}')"
  off_cpu+=("$off"); on_cpu+=("$on")
done
lines=$(wc -l <"$work/log.jsonl")
traced=$(grep -c '"trace_id"' "$work/log.jsonl" || true)
echo
echo "last 'on' run: $lines JSON log lines, $traced with a trace_id"
printf '%s\n' "${off_cpu[@]}" | sort -n | awk '{a[NR]=$1} END{m=a[int((NR+1)/2)]; print "median off:", m}' >"$work/off"
printf '%s\n' "${on_cpu[@]}" | sort -n | awk '{a[NR]=$1} END{m=a[int((NR+1)/2)]; print "median on:", m}' >"$work/on"
cat "$work/off" "$work/on"
paste -d' ' "$work/off" "$work/on" | awk '{printf "cost of metrics and tracing: %+.1f %% CPU per call\n", ($6/$3-1)*100}'
