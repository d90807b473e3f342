"""`streamguard keys create` and the pieces of `streamguard up` that need no running services
(the full `up --exit-after-demo` run is an end-to-end test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamguard.cli import build_parser, main
from streamguard.cli_service import embedded_env, format_event, sse_messages


def test_keys_create_migrates_and_prints_a_working_key(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from streamguard.db.session import make_engine, make_session_factory
    from streamguard.db.tenants import authenticate

    assert main(["keys", "create", "--tenant", "acme", "--data-dir", str(tmp_path)]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert key.startswith("sg_")
    engine = make_engine(f"sqlite:///{tmp_path}/streamguard.db")
    with make_session_factory(engine)() as session:
        tenant = authenticate(session=session, key=key)
        assert tenant is not None and tenant.name == "acme"
    engine.dispose()


def test_up_flags() -> None:
    args = build_parser().parse_args(["up", "--no-demo", "--port", "9000", "--exit-after-demo"])
    assert (args.demo, args.port, args.exit_after_demo, args.demo_epochs) == (False, 9000, True, 4)
    assert args.api_workers == 1  # SQLite: one API process unless asked
    args = build_parser().parse_args(["up", "--api-workers", "2"])
    assert args.api_workers == 2


def test_embedded_env_drops_inherited_servers(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SG_REDIS__URL", "redis://elsewhere:6379/0")
    monkeypatch.setenv("SG_BROKER__URL", "redis://elsewhere:6379/1")
    env = embedded_env(tmp_path)
    assert "SG_REDIS__URL" not in env and "SG_BROKER__URL" not in env
    assert env["SG_DB__URL"] == f"sqlite:///{tmp_path}/streamguard.db"
    assert env["SG_STORAGE__URI"] == (tmp_path / "artifacts").as_uri()


def test_embedded_env_passes_on_the_log_format_and_the_metrics_port(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SG_LOG__FORMAT", "json")
    monkeypatch.setenv("SG_WORKER__METRICS_PORT", "9101")
    monkeypatch.setenv("SG_WORKER__QUEUE", "elsewhere")  # state: still dropped
    env = embedded_env(tmp_path)
    assert env["SG_LOG__FORMAT"] == "json" and env["SG_WORKER__METRICS_PORT"] == "9101"
    assert "SG_WORKER__QUEUE" not in env


def test_sse_messages_parse_ids_kinds_data_and_skip_pings() -> None:
    lines = [": ping", "id: 7", "event: epoch", 'data: {"epoch": 1}', "", ": ping", "",
             "id: 8", "event: status", 'data: {"status": "completed"}', ""]
    assert list(sse_messages(iter(lines))) == [("7", "epoch", '{"epoch": 1}'),
                                               ("8", "status", '{"status": "completed"}')]


def test_epoch_line_shows_metrics_and_prediction_percentages() -> None:
    line = format_event("epoch", {"epoch": 2, "train_loss": 0.5, "val_loss": 0.4, "f1": 0.8,
                                  "mcc": 0.6, "is_best": True,
                                  "prediction_distribution": {"predicted_vulnerable": 45,
                                                              "predicted_safe": 55}})
    assert line == ("epoch 2  train_loss 0.5000  val_loss 0.4000  F1 0.8000  MCC 0.6000  "
                    "predicted vulnerable 45 (45.0%) / safe 55 (55.0%)  (best)")
