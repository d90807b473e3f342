#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432), Redis (127.0.0.1:6379) and RabbitMQ (127.0.0.1:5672)
# answer; start them with the machine's own commands when they are down. Fails loudly when they
# cannot be reached: the integration tests never skip a missing service.
set -uo pipefail

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
rabbit_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

if ! pg_up; then
  echo "services: starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  for _ in $(seq 30); do pg_up && break; sleep 1; done
fi
if ! redis_up; then
  echo "services: starting Redis" >&2
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  for _ in $(seq 30); do redis_up && break; sleep 1; done
fi
if ! rabbit_up && command -v rabbitmq-server >/dev/null; then
  echo "services: starting RabbitMQ" >&2
  rabbitmq-server -detached || true
  for _ in $(seq 60); do rabbit_up && break; sleep 1; done
fi
ok=0
rabbit_up || { echo "services: RabbitMQ at 127.0.0.1:5672 is not reachable" >&2; ok=1; }
pg_up || { echo "services: PostgreSQL at 127.0.0.1:5432 is not reachable" >&2; ok=1; }
redis_up || { echo "services: Redis at 127.0.0.1:6379 is not reachable" >&2; ok=1; }
[ $ok -eq 0 ] && echo "services: PostgreSQL, Redis and RabbitMQ answer" >&2
exit $ok
