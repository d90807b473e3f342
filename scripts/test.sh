#!/usr/bin/env bash
# The whole test suite: unit, integration (real PostgreSQL, Redis, moto S3, real Celery worker)
# and the real-Devign runs. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/services.sh
data=${STREAMGUARD_DEVIGN_DIR:-../shared/data/devign}
for f in train.jsonl valid.jsonl; do
  [ -f "$data/$f" ] || { echo "test: Devign data missing: $data/$f (set STREAMGUARD_DEVIGN_DIR)" >&2; exit 1; }
done
exec .venv/bin/python -m pytest "$@"
