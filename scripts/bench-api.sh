#!/usr/bin/env bash
# Load on the HTTP API with wrk (release build, loopback), in one run:
#   1. GET /healthz            (no auth, no database: the peer the others are compared with)
#   2. GET /v1/campaigns/1/stats (API key checked, campaign counts read from SQLite)
#   3. POST /v1/calls          (a one-contact campaign created and started per request, each
#                               call placed on a local SIPp carrier that answers)
# Prints requests/s and latency percentiles for each. Env: DURATION (s, default 10),
# CONNECTIONS (default 32), THREADS (default 2), CONTACTS in the stats campaign (default 10000).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
need_debs wrk:wrk sipp:sip-tester curl:curl
cargo build --release --locked -p outcall
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/outcall"
DURATION="${DURATION:-10}" CONNECTIONS="${CONNECTIONS:-32}" THREADS="${THREADS:-2}"
CONTACTS="${CONTACTS:-10000}"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; rm -rf "$work"' EXIT
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
sip_port=26070
(cd "$work" && sipp -sf "$ROOT/tests/sipp/uas_answer_wait_bye.xml" -i 127.0.0.1 -p "$sip_port" \
  -nostdin >/dev/null 2>&1) &
cat >"$work/outcall.toml" <<TOML
max_concurrent_calls = 5000
[[trunks]]
name = "sipp"
host = "127.0.0.1"
port = $sip_port
max_cps = 5000
max_concurrent = 5000
TOML
password="bench-$(date +%s)-password"
OUTCALL_ADMIN_PASSWORD="$password" RUST_LOG=warn "$BIN" serve -c "$work/outcall.toml" \
  --data-dir "$work/data" --listen "127.0.0.1:$port" >"$work/serve.log" 2>&1 &
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
base="http://127.0.0.1:$port"
token="$(curl -fsS -X POST "$base/v1/auth/login" -H 'content-type: application/json' \
  --data-binary "{\"username\":\"admin\",\"password\":\"$password\"}" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
key="$(curl -fsS -X POST "$base/v1/api-keys" -H "authorization: Bearer $token" \
  -H 'content-type: application/json' --data-binary '{"name":"bench","role":"operator"}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"
auth=(-H "authorization: Bearer $key")
curl -fsS -X POST "$base/v1/campaigns" "${auth[@]}" -H 'content-type: application/json' \
  --data-binary '{"name":"stats","trunks":["sipp"]}' >/dev/null
python3 -c "
print('number')
for i in range($CONTACTS): print('138%08d' % i)" >"$work/numbers.csv"
curl -fsS -X POST "$base/v1/campaigns/1/contacts" "${auth[@]}" -H 'content-type: text/csv' \
  --data-binary @"$work/numbers.csv" >/dev/null
cat >"$work/post_call.lua" <<'LUA'
-- wrk.format uses only the headers it is given, so the command line's are added to these.
counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{"to": "139%08d", "trunk": "sipp", "max_duration_secs": 1}',
    (counter * 7919 + math.random(0, 999)) % 100000000)
  local headers = {}
  for k, v in pairs(wrk.headers) do headers[k] = v end
  headers["content-type"] = "application/json"
  return wrk.format("POST", "/v1/calls", headers, body)
end
LUA
run() { # name, extra wrk args...
  local name="$1"; shift
  local out="$work/wrk-$RANDOM.txt"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" >"$out" 2>&1
  python3 - "$name" "$out" <<'PY'
import re, sys
name, path = sys.argv[1], sys.argv[2]
text = open(path).read()
def ms(v):
    n, u = re.match(r"([\d.]+)(\w+)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[u]
pct = {m.group(1): ms(m.group(2)) for m in re.finditer(r"^\s+(50|75|90|99)%\s+(\S+)", text, re.M)}
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
errors = re.search(r"Socket errors: (.*)", text)
print(f"| {name} | {rps:,.0f} | {pct['50']:.2f} | {pct['90']:.2f} | {pct['99']:.2f} | "
      f"{non2xx.group(1) if non2xx else 0} | {errors.group(1) if errors else 'none'} |")
PY
}
log "wrk: $THREADS threads, $CONNECTIONS connections, ${DURATION} s each"
echo "| endpoint | requests/s | p50 ms | p90 ms | p99 ms | non-2xx | socket errors |"
echo "|---|---|---|---|---|---|---|"
run "GET /healthz" "$base/healthz"
run "GET /v1/campaigns/1/stats" "${auth[@]}" "$base/v1/campaigns/1/stats"
run "POST /v1/calls" "${auth[@]}" -s "$work/post_call.lua" "$base"
calls="$(curl -fsS "$base/v1/cdrs?limit=1000" "${auth[@]}" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["cdrs"]))')"
log "single calls recorded (first page, up to 1000): $calls"
