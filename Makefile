# StreamGuard developer targets. `make up` runs the service with a demo job; `make test` runs
# every test (PostgreSQL and Redis are started when down).
.PHONY: install up test unit lint bench train-devign openapi client

install:
	bash scripts/install.sh

up: install
	.venv/bin/streamguard up

test:
	bash scripts/test.sh

unit: install
	.venv/bin/python -m pytest tests/unit

lint: install
	bash scripts/lint.sh

bench: install
	.venv/bin/python benchmarks/trainer_vs_hf.py
	.venv/bin/python benchmarks/checkpoint_stall.py
	.venv/bin/python benchmarks/token_cache.py
	.venv/bin/python benchmarks/service_overhead.py
	.venv/bin/python benchmarks/api_throughput.py
	.venv/bin/python benchmarks/api_cpu.py
	.venv/bin/python benchmarks/scale_out.py

# A longer CPU run on the full Devign train/valid (tiny model).
train-devign: install
	.venv/bin/streamguard train --train ../shared/data/devign/train.jsonl \
	  --val ../shared/data/devign/valid.jsonl --output-dir runs/devign-tiny --model tiny \
	  --max-seq-len 256 --batch-size 32 --lr 3.5e-4 --epochs 3

# Rewrite the checked-in OpenAPI document from the app (tests/unit/test_openapi_contract.py
# fails until it matches).
openapi: install
	.venv/bin/python -m api.openapi > docs/openapi.json

# Regenerate the typed Python client clients/python from docs/openapi.json
# (tests/unit/test_client_drift.py fails until it matches).
client: install
	bash scripts/gen_client.sh
