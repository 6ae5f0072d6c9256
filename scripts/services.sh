#!/usr/bin/env bash
# Starts the engines the distributed mode is tested against, when they are not running:
# PostgreSQL (127.0.0.1:5432), Redis (6379), RabbitMQ (5672) and NATS with JetStream (4222).
# Installs the Debian packages of those that are missing. Idempotent.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 120); do
    up "$port" && return 0
    sleep 0.5
  done
  echo "error: $name did not start on 127.0.0.1:$port" >&2
  return 1
}

if ! up 5432; then
  need_debs pg_ctlcluster:postgresql
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
  wait_port 5432 PostgreSQL
fi
# The tests connect as postgres to the database `test` over TCP without a password.
if ! psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; then
  log "PostgreSQL: creating database test"
  su postgres -c "psql -c 'create database test'" >/dev/null 2>&1 || true
fi

if ! up 6379; then
  need_debs redis-server:redis-server
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port 6379 Redis
fi

if ! up 5672; then
  need_debs rabbitmq-server:rabbitmq-server
  log "starting RabbitMQ"
  rabbitmq-server -detached
  wait_port 5672 RabbitMQ
fi

if ! up 4222; then
  need_debs nats-server:nats-server
  log "starting NATS (JetStream)"
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_port 4222 NATS
fi
log "engines up: PostgreSQL, Redis, RabbitMQ, NATS"
