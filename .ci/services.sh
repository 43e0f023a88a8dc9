#!/usr/bin/env bash
# Start every broker service the tests need that is not answering on loopback.
# The commands are this machine kind's own (python-svc notes); each is a no-op when the service runs.
set -u

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2
  for _ in $(seq 1 60); do up "$port" && return 0; sleep 1; done
  echo "services: $name did not come up on port $port" >&2
  return 1
}

start() {
  local port=$1 name=$2; shift 2
  if up "$port"; then echo "services: $name is up"; return 0; fi
  echo "services: starting $name"
  "$@" >/dev/null 2>&1 || true
  wait_port "$port" "$name"
}

status=0
# the Kafka TLS tests put a socat TLS front before Tansu (tests/security/tls_support.py)
command -v socat >/dev/null || { apt-get update -q >/dev/null 2>&1; apt-get install -y -q socat >/dev/null 2>&1; } \
  || echo "services: socat missing (the Kafka TLS tests need it)" >&2
start 5432 postgresql bash -c 'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start' || status=1
start 6379 redis redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
  --dir /var/lib/redis --logfile /var/log/redis/ci.log || status=1
start 5672 rabbitmq rabbitmq-server -detached || status=1
start 4222 nats start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
  -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log || status=1
exit $status
