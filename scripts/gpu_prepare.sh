#!/usr/bin/env bash
# Prepare the GPU benchmark's carry-on folder `.gpu/` (ignored by git) for a lent GPU machine
# that has PyTorch, transformers, tokenizers and safetensors but none of this project's other
# dependencies and no ../shared: wheels (Python 3.12, manylinux) of the pure dependencies the
# benchmarks import, at the versions this checkout's .venv runs, and the Devign splits.
#
#   bash scripts/gpu_prepare.sh          # then run benchmarks/gpu.sh there, carrying `.gpu`
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEVIGN=${STREAMGUARD_DEVIGN_DIR:-../shared/data/devign}
mkdir -p .gpu/wheels .gpu/data
pins=$($PY - <<'PYEOF'
from importlib.metadata import version
names = ["pydantic", "pydantic_core", "annotated_types", "typing_inspection",
         "typing_extensions", "accelerate", "psutil"]
print(" ".join(f"{n}=={version(n)}" for n in names))
PYEOF
)
$PY -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 -d .gpu/wheels $pins
for split in train valid; do
    test -f "$DEVIGN/$split.jsonl" || { echo "missing $DEVIGN/$split.jsonl" >&2; exit 1; }
    cp "$DEVIGN/$split.jsonl" .gpu/data/
done
du -sh .gpu
