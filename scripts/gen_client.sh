#!/usr/bin/env bash
# Regenerate the typed Python client (clients/python, package streamguard_client) from the
# checked-in OpenAPI document (docs/openapi.json) with openapi-python-client, pinned in
# pyproject's dev extra, and its config clients/python/openapi-python-client.yaml.
#
# Usage: scripts/gen_client.sh [OUT_DIR [DOCUMENT]]     (`make client`: clients/python from
#        docs/openapi.json; another DOCUMENT is for checking, e.g. `git show HEAD:docs/openapi.json`;
#        relative paths are from the repository root)
#
# Idempotent: the same document, generator and ruff write the same files. The drift test
# (tests/unit/test_client_drift.py) runs this script into a temp dir and compares the result with
# clients/python. Everything in OUT_DIR is replaced except build leftovers (*.egg-info).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${1:-clients/python}
document=${2:-docs/openapi.json}
config=clients/python/openapi-python-client.yaml
generator=$root/.venv/bin/openapi-python-client
[ -x "$generator" ] || { echo "gen_client: $generator missing: run scripts/install.sh" >&2; exit 1; }
if [ -d "$out" ] && [ -n "$(ls -A "$out")" ] && [ ! -f "$out/openapi-python-client.yaml" ]; then
  echo "gen_client: $out is not empty and holds no generated client; refusing to replace it" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$config" "$work/openapi-python-client.yaml"
# The generator's post-hooks call `ruff` by name: the venv's, not whichever is on PATH.
if ! PATH="$root/.venv/bin:$PATH" "$generator" generate --path "$document" --meta pdm \
    --config "$work/openapi-python-client.yaml" --output-path "$work/client" >"$work/log" 2>&1; then
  cat "$work/log" >&2
  exit 1
fi
# Success prints only "Generating <path>"; anything else is a warning about a part of the
# document it skipped (an unsupported content type, say), which must not pass silently.
if grep -v '^Generating ' "$work/log" | grep -q .; then
  cat "$work/log" >&2
  echo "gen_client: the generator reported problems (above)" >&2
  exit 1
fi

# The hand-written part of the README, under the generated title and description.
readme=$work/client/README.md
{
  head -n 2 "$readme"
  cat <<'EOF'

## StreamGuard

Generated from `docs/openapi.json` by `make client` (`scripts/gen_client.sh`): do not edit by
hand, `tests/unit/test_client_drift.py` fails on any difference. Install with
`pip install -e clients/python`; `docs/client.md` has a worked example (create a job, follow it,
read its metrics). In short:

```python
from streamguard_client import AuthenticatedClient
from streamguard_client.api.jobs import list_jobs

client = AuthenticatedClient(base_url="http://127.0.0.1:8000", token="sg_...")
page = list_jobs.sync(client=client, limit=5)
```
EOF
  tail -n +3 "$readme"
} >"$work/README.md"
mv "$work/README.md" "$readme"
cp "$work/openapi-python-client.yaml" "$work/client/openapi-python-client.yaml"

mkdir -p "$out"
find "$out" -mindepth 1 -maxdepth 1 ! -name '*.egg-info' -exec rm -rf {} +
cp -R "$work/client/." "$out/"
echo "gen_client: wrote $out from $document"
