"""`streamguard api`: the worker count (flag, then setting) and the Prometheus multiprocess
folder the launcher prepares for its workers (tests/integration/test_api_workers.py runs it)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from streamguard.cli_api import MULTIPROC_ENV, api_workers, metrics_dir
from streamguard.errors import StreamGuardError
from streamguard.settings import ApiSettings, get_settings

ROOT = Path(__file__).resolve().parents[2]


def test_workers_setting_defaults_to_one_and_must_be_positive() -> None:
    assert ApiSettings().workers == 1
    assert ApiSettings(workers=4).workers == 4
    for bad in (0, -1):
        with pytest.raises(ValidationError, match="workers"):
            ApiSettings(workers=bad)


def test_the_flag_wins_over_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SG_API__WORKERS", "3")
    get_settings.cache_clear()
    try:
        assert api_workers(argparse.Namespace(workers=None)) == 3
        assert api_workers(argparse.Namespace(workers=2)) == 2
    finally:
        get_settings.cache_clear()


def test_one_worker_gets_no_multiprocess_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    with metrics_dir(1) as folder:
        assert folder is None and MULTIPROC_ENV not in os.environ


def test_several_get_a_fresh_folder_removed_at_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    with metrics_dir(2) as folder:
        assert folder is not None and folder.is_dir() and not any(folder.iterdir())
        assert os.environ[MULTIPROC_ENV] == str(folder)
    assert not folder.exists() and MULTIPROC_ENV not in os.environ


def test_an_operators_folder_is_kept_but_its_old_counts_are_dropped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "prom"
    folder.mkdir()
    stale = [folder / "counter_123.db", folder / "gauge_livesum_9.db", folder / "histogram_4.db"]
    for path in stale:
        path.write_bytes(b"x")
    (folder / "notes.txt").write_text("not ours")
    monkeypatch.setenv(MULTIPROC_ENV, str(folder))
    with metrics_dir(1) as used:  # set by the operator: used even with one worker
        assert used == folder
        assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert folder.is_dir() and os.environ[MULTIPROC_ENV] == str(folder)


def test_an_operators_folder_that_is_a_file_is_a_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path / "file"))
    with pytest.raises(StreamGuardError, match="PROMETHEUS_MULTIPROC_DIR=.*not a writable"), \
            metrics_dir(2):
        pass


def test_multiprocess_metrics_leave_out_the_process_collectors(tmp_path: Path) -> None:
    """ApiMetrics in a process that imported prometheus_client with the folder set: counts go
    to the folder's files, /metrics reads them back, no process/GC/platform collectors."""
    code = (
        "from api.metrics import ApiMetrics\n"
        "m = ApiMetrics()\n"
        "assert m.multiprocess\n"
        "m.observe('GET', '/v1/jobs', 200, 0.01)\n"
        "m.observe('GET', '/v1/jobs', 200, 0.02)\n"
        "m.set_sse_streams(3)\n"
        "print(m.exposition()[0].decode())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT),
                               MULTIPROC_ENV: str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert ('streamguard_http_requests_total{method="GET",route="/v1/jobs",status="200"} 2.0'
            in out), out
    assert "streamguard_sse_connections 3.0" in out, out
    assert "process_cpu_seconds_total" not in out and "python_gc" not in out, out
    assert any(p.name.startswith("counter_") for p in tmp_path.iterdir())
