"""The training core imports no infrastructure (STYLE rule 1)."""

import ast
import subprocess
import sys
from pathlib import Path

FORBIDDEN = ["fastapi", "celery", "redis", "boto3", "sqlalchemy", "streamguard.settings",
             "streamguard.db", "api", "worker"]
ALLOWED_STREAMGUARD = {"streamguard.training", "streamguard.spec", "streamguard.errors",
                       "streamguard.sinks", "streamguard.storage", "streamguard.manifest",
                       "streamguard.datasets", "streamguard.tokenizer"}
TRAINING = Path(__file__).resolve().parents[2] / "streamguard" / "training"


def loaded_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"import sys; {code}; "
                          f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))"],
                         capture_output=True, text=True, check=True)
    return set(filter(None, out.stdout.strip().split(",")))


def test_training_core_loads_no_infrastructure_modules():
    # transformers may pull boto3 in through accelerate; only what *we* add is checked.
    baseline = loaded_after(
        "import torch, safetensors.torch; from transformers import AutoConfig, AutoTokenizer, "
        "AutoModelForSequenceClassification, RobertaForSequenceClassification, "
        "get_linear_schedule_with_warmup")
    ours = loaded_after("import streamguard.training, streamguard.training.run")
    assert ours - baseline == set()


def test_training_sources_import_only_allowed_modules():
    for path in TRAINING.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                if name.startswith("streamguard"):
                    assert any(name == a or name.startswith(a + ".")
                               for a in ALLOWED_STREAMGUARD), f"{path.name} imports {name}"
                assert name.split(".")[0] not in {"fastapi", "celery", "redis", "boto3",
                                                  "sqlalchemy", "api", "worker"}, path.name
