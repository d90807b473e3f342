"""worker/metrics.py: what a run's records turn into, checkpoint upload timing through the
store, and when the metrics port is (not) served."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from streamguard.settings import WorkerSettings
from streamguard.storage import LocalArtifactStore
from worker.metrics import PrometheusSink, TimedStore, WorkerMetrics, serve


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_steps_epochs_rates_warnings_and_stops_are_counted() -> None:
    registry = CollectorRegistry()
    sink = PrometheusSink(WorkerMetrics(registry))
    sink.start({"effective_batch": 16, "start_step": 0})
    sink.log_step({"step": 20, "epoch": 1, "samples_per_s": 160.0})  # 0.1 s a step
    sink.log_step({"step": 40, "epoch": 1, "samples_per_s": 320.0})
    sink.log_epoch({"epoch": 1, "step": 40, "epoch_time_s": 3.5})
    sink.event("warning", {"message": "not_separating_yet: no safe predictions ..."})
    sink.event("warning", {"message": "class safe predicted 3 times for 40 actual ..."})
    sink.event("rollback", {"to_step": 20})
    sink.log_step({"step": 30, "epoch": 2, "samples_per_s": 320.0})  # 10 more after rollback
    sink.finish("collapsed", "why")

    assert value(registry, "streamguard_worker_optimizer_steps_total") == 50
    assert value(registry, "streamguard_worker_epochs_total") == 1
    assert value(registry, "streamguard_worker_samples_per_second") == 320.0
    assert value(registry, "streamguard_worker_step_duration_seconds_count") == 3
    assert abs(value(registry, "streamguard_worker_step_duration_seconds_sum") - 0.2) < 1e-9
    assert value(registry, "streamguard_worker_epoch_duration_seconds_sum") == 3.5
    assert value(registry, "streamguard_worker_guard_warnings_total",
                 kind="not_separating_yet") == 1
    assert value(registry, "streamguard_worker_guard_warnings_total", kind="collapse_risk") == 1
    assert value(registry, "streamguard_worker_rollbacks_total") == 1
    assert value(registry, "streamguard_worker_stops_total", reason="collapsed") == 1


def test_a_resumed_run_counts_only_its_own_steps() -> None:
    registry = CollectorRegistry()
    sink = PrometheusSink(WorkerMetrics(registry))
    sink.start({"effective_batch": 8, "start_step": 100})
    sink.log_step({"step": 110, "epoch": 3, "samples_per_s": 80.0})
    assert value(registry, "streamguard_worker_optimizer_steps_total") == 10


def test_checkpoint_upload_time_is_observed_once_per_checkpoint_folder(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    store = TimedStore(LocalArtifactStore(tmp_path / "store"))
    sink = PrometheusSink(WorkerMetrics(registry), uploads=store)
    (tmp_path / "w.bin").write_bytes(b"x" * 1000)
    store.put_file(tmp_path / "w.bin", "ck/epoch-0001/w.bin")
    store.put_bytes(b"{}", "ck/last.json")
    assert store.exists("ck/epoch-0001/w.bin") and store.get_bytes("ck/last.json") == b"{}"
    sink.event("checkpoint", {"name": "last", "key_prefix": "ck/epoch-0001"})
    sink.event("checkpoint", {"name": "best", "key_prefix": "ck/epoch-0001"})  # same upload
    assert value(registry, "streamguard_worker_checkpoint_upload_duration_seconds_count") == 1
    assert value(registry, "streamguard_worker_checkpoint_upload_duration_seconds_sum") > 0
    assert store.take_upload_s() == 0.0  # taken by the observation


def test_the_exposition_has_help_texts_and_conventional_names() -> None:
    from prometheus_client import generate_latest

    registry = CollectorRegistry()
    PrometheusSink(WorkerMetrics(registry)).finish("completed", "")
    families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    ours = [f for f in families if f.name.startswith("streamguard_worker_")]
    assert len(ours) >= 9 and all(f.documentation for f in ours)
    counters = {f.name for f in ours if f.type == "counter"}
    assert "streamguard_worker_stops" in counters  # exposed as ..._stops_total
    assert all(f.name.endswith("_seconds") for f in ours if f.type == "histogram")
    # no GPU in this process: no GPU family rather than zeros
    assert not any("gpu" in f.name for f in ours)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_is_off_at_port_0_and_under_prefork_and_answers_otherwise() -> None:
    assert not serve(WorkerSettings())  # the default: no port
    port = free_port()
    assert not serve(WorkerSettings(metrics_port=port), "prefork")
    assert not serve(WorkerSettings(metrics_port=port),
                     type("TaskPool", (), {"__module__": "celery.concurrency.prefork"}))
    assert serve(WorkerSettings(metrics_port=port), "solo")
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert "# HELP streamguard_worker_optimizer_steps_total" in text
