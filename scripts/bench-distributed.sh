#!/usr/bin/env bash
# Reproduces the distributed-mode figures in docs/benchmarks.md on this machine's engines:
# CDR ingest through NATS and RabbitMQ into PostgreSQL (against PostgreSQL alone and the bus
# alone), and the Redis claim throughput of three nodes (against redis-benchmark).
#   CDRS=200000 TASKS=200000 bash scripts/bench-distributed.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
bash scripts/services.sh
need_debs redis-benchmark:redis-tools
cargo build --release --locked -p outcall -p outcall-queue --bins --examples
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/release"
for bus in nats rabbitmq; do
  log "CDR ingest through $bus"
  "$TARGET/outcall" bench ingest --bus "$bus" --cdrs "${CDRS:-200000}"
done
log "Redis claims from three processes"
"$TARGET/examples/claim_bench" --nodes 3 --tasks "${TASKS:-200000}" --batch 50
