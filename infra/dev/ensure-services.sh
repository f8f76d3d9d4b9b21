#!/usr/bin/env bash
# Start the local services the integration tests talk to, where they are not already running:
# Redis on 127.0.0.1:6379 (broker + result backend) and PostgreSQL on 5432 (MLflow backend store
# for the real `mlflow server` test). Idempotent; safe to run on every `make test`.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 6379; then
  if ! command -v redis-server >/dev/null; then
    echo "redis-server not found: installing it (apt-get)" >&2
    apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server >/dev/null
  fi
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 50); do port_open 6379 && break; sleep 0.1; done
fi
port_open 6379 && echo "redis: up on 127.0.0.1:6379" >&2 || { echo "redis: could not start" >&2; exit 1; }

if ! port_open 5432; then
  if ! compgen -G "/etc/postgresql/*" >/dev/null; then
    echo "postgresql not found: installing it (apt-get)" >&2
    apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    # A fresh, test-only cluster: trust local TCP connections (the tests connect as postgres).
    hba=$(ls /etc/postgresql/*/main/pg_hba.conf | head -1)
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  for _ in $(seq 50); do port_open 5432 && break; sleep 0.2; done
fi
port_open 5432 && echo "postgresql: up on 127.0.0.1:5432" >&2 || { echo "postgresql: could not start" >&2; exit 1; }
