#!/usr/bin/env bash
# Create .venv and install StreamGuard with every role's extras and its dev tools (`.[all,dev]`:
# `make up` runs the API and the workers from this one environment). Idempotent; fast when
# nothing changed. torch is pinned to the CPU build for these machines
# (scripts/constraints-cpu.txt); on a GPU host install torch for your CUDA first, then
# `pip install -e '.[all,dev]'` (the package only requires torch>=2.10). One role alone:
# `pip install 'streamguard[api]'` (no torch), `'streamguard[worker]'` (README, "Installing one role").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3.13 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      PY=$cand; break
    fi
  done
fi
[ -n "$PY" ] || { echo "install: need Python >= 3.11" >&2; exit 1; }
stamp=.venv/.installed-$(cat pyproject.toml scripts/constraints-cpu.txt | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then exit 0; fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -c scripts/constraints-cpu.txt -e '.[all,dev]'
rm -f .venv/.installed-*
touch "$stamp"
