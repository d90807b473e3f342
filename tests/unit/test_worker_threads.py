"""`worker.torch_threads` (SG_WORKER__TORCH_THREADS) reaches the worker process: torch uses that
many intra-op threads once the worker starts (several CPU workers on one machine each take their
share instead of all of them spinning on every core). Unset, torch's own default stays.

Each case runs in a fresh interpreter (torch's thread count is per process) on the embedded
deployment (SQLite, filesystem broker, file store), so the worker's start-up checks pass.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from streamguard.cli_service import create_key, embedded_env
from streamguard.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

#: Imports the worker's Celery app, then sends the signal a starting worker sends.
SCRIPT = """
import sys
import torch
from celery import signals
import worker.celery_app  # noqa: F401 - connects the worker's start-up handlers
before = torch.get_num_threads()
getattr(signals, sys.argv[1]).send(sender=None)
print("threads", before, torch.get_num_threads())
"""


def threads_after_start(tmp_path: Path, signal: str, setting: str | None) -> tuple[int, int]:
    env = embedded_env(tmp_path)
    create_key(env["SG_DB__URL"], "t")  # a migrated database: the preflight checks pass
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    if setting is not None:
        env["SG_WORKER__TORCH_THREADS"] = setting
    done = subprocess.run([sys.executable, "-c", SCRIPT, signal], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("threads ")][-1]
    before, after = (int(x) for x in line.split()[1:])
    return before, after


@pytest.mark.parametrize("signal", ["worker_init", "worker_process_init"])
def test_the_setting_sets_torch_threads_when_the_worker_starts(tmp_path: Path,
                                                               signal: str) -> None:
    assert threads_after_start(tmp_path, signal, "3") == (1, 3)


def test_unset_leaves_torch_default(tmp_path: Path) -> None:
    assert threads_after_start(tmp_path, "worker_init", None) == (1, 1)


def test_the_setting_must_be_positive() -> None:
    assert Settings(worker={"torch_threads": 2}).worker.torch_threads == 2
    assert Settings().worker.torch_threads is None
    with pytest.raises(ValidationError, match="torch_threads"):
        Settings(worker={"torch_threads": 0})
