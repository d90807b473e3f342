#!/usr/bin/env bash
# The GPU figures of issue 10, in one call of under 8 minutes on one H100/H200.
#
# Here (once):   bash scripts/gpu_prepare.sh      -> .gpu/wheels, .gpu/data (ignored by git)
# On the GPU:    bash benchmarks/gpu.sh           (carry `.gpu`; results under $OUT or .gpu/out)
#
# The machine's Python brings torch, transformers, tokenizers and safetensors; the wheels in
# .gpu/wheels (pydantic and friends, accelerate for Trainer) are unpacked beside them into
# .gpu/site, never over them. Every step has its own time limit, so one slow step cannot eat the
# rest; each prints its figures and a JSON line into its own log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-.gpu/out}
mkdir -p "$OUT" .gpu/site
PY=${PYTHON:-python3}
$PY - <<'PYEOF'
import glob, importlib.util, zipfile
for wheel in sorted(glob.glob(".gpu/wheels/*.whl")):
    top = wheel.split("/")[-1].split("-")[0].lower()
    if importlib.util.find_spec(top) is None:  # keep whatever the machine already has
        zipfile.ZipFile(wheel).extractall(".gpu/site")
PYEOF
export PYTHONPATH=".gpu/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export STREAMGUARD_DEVIGN_DIR=${STREAMGUARD_DEVIGN_DIR:-$PWD/.gpu/data}
export TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    echo "=== $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    echo "    exit $? after $((SECONDS - t0)) s; last lines:"
    tail -n 12 "$OUT/$name.log" | sed 's/^/    /'
}

# 1. RoBERTa-base size, bf16, max length 512, batch 32: Trainer (dynamic, grouped) against the
#    loop's default, packed and compiled variants, with MFU on real tokens.
step trainer 270 $PY benchmarks/trainer_vs_hf.py --model random-roberta-base --precision bf16 \
    --samples 6000 --val-samples 1000 --max-len 512 --batch-size 32 \
    --variants default,packed,compiled
# 2. Padded vs packed steps by attention backend (flex needs attention dropout 0).
step packing 90 $PY benchmarks/packing.py --model random-roberta-base --max-len 512 \
    --batch-size 32 --steps 20 --warmup 3
step packing_nodropout 90 $PY benchmarks/packing.py --model random-roberta-base --max-len 512 \
    --batch-size 32 --steps 20 --warmup 3 --dropout 0 --backends mask,varlen,flex
# 3. Saving `last` off the training thread, GPU to host.
step checkpoint 60 $PY benchmarks/checkpoint_stall.py --device cuda
echo "logs in $OUT"
