#!/usr/bin/env bash
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check api worker streamguard tests benchmarks scripts
.venv/bin/mypy api worker streamguard
