#!/usr/bin/env bash
# Runs Schemathesis against the OpenAPI document of a running `outcall serve` (fresh data
# directory, first admin from the environment): property-based requests to every operation,
# failing on any 5xx and on any response that breaks the document (status code, content type,
# body schema). Usage: bash scripts/schemathesis.sh [seconds, default 120]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
budget="${1:-120}"
# The script sits beside the interpreter pip installs into (pyenv shims may not know it yet).
st="$(python3 -c 'import os,sys; print(os.path.join(os.path.dirname(sys.executable), "schemathesis"))')"
if [ ! -x "$st" ]; then
  python3 -m pip install --quiet 'schemathesis==4.32.5'
fi
[ -x "$st" ] || st="$(command -v schemathesis)"
need_debs curl
cargo build --quiet --bin outcall
bin="${CARGO_TARGET_DIR:-target}/debug/outcall"
work="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
password="schemathesis-$(date +%s)-pw"
OUTCALL_ADMIN_PASSWORD="$password" "$bin" serve --data-dir "$work/data" --listen "127.0.0.1:$port" \
    >"$work/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
token="$(curl -fsS -X POST "http://127.0.0.1:$port/v1/auth/login" -H 'content-type: application/json' \
    --data-binary "{\"username\":\"admin\",\"password\":\"$password\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
"$st" run "http://127.0.0.1:$port/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-time "$budget" --max-examples 25 --workers 2 --seed 20261122 \
    --request-timeout 10 --warnings off
