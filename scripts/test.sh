#!/usr/bin/env bash
# Runs every test: formatting, lints, unit tests, the SIPp integration tests and a short fuzz run.
# Installs what it needs (sip-tester, openssl, cargo-nextest, cargo-fuzz, schemathesis), and runs
# Schemathesis against a running server's OpenAPI document.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

need_debs sipp:sip-tester curl:curl openssl:openssl
need_nextest
bash scripts/services.sh  # PostgreSQL, Redis, RabbitMQ, NATS: started when down
python3 -c 'import aiosmtpd' 2>/dev/null || python3 -m pip install --quiet 'aiosmtpd==1.4.6'  # SMTP server of the alert mail test
command -v moto_server >/dev/null || python3 -m pip install --quiet 'moto[server]==5.1.18'  # S3 API of the recordings test

log "format"
cargo fmt --all -- --check

log "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

if [ "${OUTCALL_SKIP_FUZZ:-0}" != "1" ]; then
  log "fuzz: parse_untrusted for ${OUTCALL_FUZZ_SECONDS:-45} s"
  bash scripts/fuzz.sh "${OUTCALL_FUZZ_SECONDS:-45}"
fi

if [ "${OUTCALL_SKIP_SCHEMATHESIS:-0}" != "1" ]; then
  log "api contract: schemathesis for ${OUTCALL_SCHEMATHESIS_SECONDS:-60} s"
  bash scripts/schemathesis.sh "${OUTCALL_SCHEMATHESIS_SECONDS:-60}"
fi

log "deploy files: promtool check and test rules, yamllint, dashboard queries"; bash scripts/check-deploy.sh
log "deploy files (distributed): compose, kubernetes, kamailio, dockerfile"; OUTCALL_DEPLOY_SKIP_CARGO=1 bash scripts/check-deploy-dist.sh
log "tests (unit and SIPp integration)"
cargo nextest run --workspace --locked --no-fail-fast
