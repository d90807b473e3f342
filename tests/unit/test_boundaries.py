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


def _imports(package: str) -> set[tuple[str, str]]:
    """(file, imported module) for every import in a top-level package of the repository."""
    root = TRAINING.parents[1] / package
    found = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {(path.name, a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.add((path.name, node.module or ""))
    return found


def test_api_and_worker_never_import_each_other():
    """They share only `streamguard` (the contract, db, storage): STYLE rule 1."""
    api_to_worker = {(f, m) for f, m in _imports("api") if m.split(".")[0] == "worker"}
    worker_to_api = {(f, m) for f, m in _imports("worker") if m.split(".")[0] == "api"}
    assert api_to_worker == set() and worker_to_api == set()
    # And at run time: importing the whole API loads no worker module, and the reverse.
    assert not [m for m in _loaded("import api.main, api.openapi") if m.startswith("worker")]
    assert not [m for m in _loaded("import worker.runtime, worker.sinks") if m.startswith("api")]


def test_the_contract_is_written_once():
    """The task name, channel and key layout are spelled only in streamguard/contract.py."""
    repo = TRAINING.parents[1]
    for literal in ('"worker.tasks.train_job"', '"job:{', 'datasets/{', 'tenants/{'):
        hits = [p.relative_to(repo).as_posix() for package in ("api", "worker", "streamguard")
                for p in (repo / package).rglob("*.py") if literal in p.read_text()]
        assert hits == ["streamguard/contract.py"], (literal, hits)


def _loaded(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", f"import sys; {code}; "
                          "print(','.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip().split(",")
