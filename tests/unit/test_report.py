"""The job report (streamguard/report.py, streamguard/cli_report.py) from hand-built records in
the API's JSON shapes: PNG bytes, the figure's text (never pixels), the escaped HTML, paging
through a fake server, a local `streamguard train` directory, and the CLI's errors.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import matplotlib.image
import pytest
from matplotlib.text import Text

from streamguard.cli import build_parser
from streamguard.errors import StreamGuardError
from streamguard.report import (
    ReportData,
    ReportError,
    build_figure,
    collect_local,
    collect_remote,
    render_html,
    render_png,
)

JOB_ID = "ab" * 16
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HOSTILE = "<script>alert('x')</script> $\\frac{1}{0}$ & \"q\""


def epoch(n: int, predicted_vulnerable: int = 45, roc_auc: float | None = 0.7,
          warnings: list[str] | None = None) -> dict[str, Any]:
    """An EpochMetricRead as GET /v1/jobs/{id}/metrics returns it (100 validation rows)."""
    return {
        "epoch": n, "step": 10 * n, "train_loss": 0.7 - 0.05 * n, "val_loss": 0.69 - 0.02 * n,
        "accuracy": 0.6, "precision": 0.5, "recall": 0.55, "f1": 0.5 + 0.01 * n, "mcc": 0.2,
        "roc_auc": roc_auc,
        "confusion_matrix": {"true_negative": 30, "false_positive": 25, "false_negative": 20,
                             "true_positive": 25},
        "prediction_distribution": {"predicted_vulnerable": predicted_vulnerable,
                                    "predicted_safe": 100 - predicted_vulnerable,
                                    "actual_vulnerable": 45, "actual_safe": 55},
        "lr": 1e-4, "train_samples_per_s": 50.0, "epoch_time_s": 2.0,
        "warnings": warnings or [], "is_best": n == 1, "collapse_streak": 0, "replayed": False,
        "created_at": "2026-11-27T08:00:00Z", "updated_at": "2026-11-27T08:00:00Z",
    }


def steps(epochs: int, per_epoch: int = 5) -> list[dict[str, Any]]:
    """StepMetricRead items: `per_epoch` points per epoch."""
    total = epochs * per_epoch
    return [{"step": s, "epoch": (s - 1) // per_epoch + 1,
             "epoch_progress": ((s - 1) % per_epoch + 1) / per_epoch, "total_steps": total,
             "train_loss": 0.7 - 0.001 * s, "lr": 1e-4 * min(1.0, s / 3), "grad_norm": 1.0,
             "samples_per_s": 40.0, "replayed": False,
             "created_at": "2026-11-27T08:00:00Z", "updated_at": "2026-11-27T08:00:00Z"}
            for s in range(1, total + 1)]


def job(status: str = "completed", message: str | None = "completed 3 epoch(s)",
        name: str | None = "tiny", best_epoch: int | None = 1) -> dict[str, Any]:
    """The fields of a JobRead the report reads."""
    return {"id": JOB_ID, "name": name, "status": status, "outcome_message": message,
            "best_epoch": best_epoch,
            "config": {"collapse_warn_ratio": 0.3, "collapse_stop_ratio": 0.2}}


def collapsed() -> ReportData:
    warning = "class vulnerable predicted for 11% of its count (under 30%)"
    return ReportData(
        job=job("collapsed", "class vulnerable received 0 predictions at epoch 3"),
        epochs=[epoch(1), epoch(2, 5, warnings=[warning]), epoch(3, 0, roc_auc=None)],
        steps=steps(3), warnings=[{"epoch": 2, "message": warning}])


def texts(data: ReportData) -> list[str]:
    """Every text of the figure, line breaks (wrapping) read as spaces."""
    return [" ".join(t.get_text().split()) for t in build_figure(data).findobj(Text)]


def test_png_has_the_magic_bytes_and_the_documented_size() -> None:
    png = render_png(collapsed())
    assert png.startswith(PNG_MAGIC) and 20_000 < len(png) < 2_000_000
    assert matplotlib.image.imread(io.BytesIO(png)).shape[:2] == (900, 1300)


def test_collapsed_job_is_annotated_with_its_stop_reason_and_warnings() -> None:
    found = texts(collapsed())
    assert any("stopped: collapsed: class vulnerable received 0" in t for t in found), found
    assert "epoch with a collapse warning" in found
    assert "warn: 30% of actual" in found and "stop: 20% of actual" in found
    assert any("status: collapsed" in t and "best epoch: 1" in t for t in found)


def test_completed_job_has_no_stop_note_and_missing_roc_auc_is_named() -> None:
    data = ReportData(job=job(), epochs=[epoch(1, roc_auc=None)])  # one epoch, no steps
    found = texts(data)
    assert not any(t.startswith("stopped:") for t in found)
    assert "ROC-AUC: n/a" in found
    assert render_png(data).startswith(PNG_MAGIC)


@pytest.mark.parametrize("status", ["queued", "cancelled"])
def test_job_without_records_renders_a_figure_saying_so(status: str) -> None:
    data = ReportData(job=job(status, None if status == "queued" else "cancelled while queued",
                              name=None, best_epoch=None))
    found = texts(data)
    assert f"No epochs or steps recorded yet (status {status})." in found
    assert any(t.startswith("stopped: cancelled") for t in found) == (status == "cancelled")
    assert render_png(data).startswith(PNG_MAGIC)
    assert "No epochs recorded yet." in render_html(data)


def test_running_job_with_steps_but_no_epoch_yet() -> None:
    found = texts(ReportData(job=job("running", None), steps=steps(1)))
    assert any(t.startswith("No evaluation yet") for t in found)


def test_non_finite_and_null_values_are_gaps_not_errors() -> None:
    bad = epoch(2) | {"val_loss": None, "train_loss": float("nan"), "mcc": float("inf")}
    data = ReportData(job=job("non_finite_loss", "loss is nan at step 12"),
                      epochs=[epoch(1), bad], steps=steps(2))
    assert render_png(data).startswith(PNG_MAGIC)


def test_html_is_self_contained_and_escapes_every_job_string() -> None:
    data = collapsed()
    data.job["name"] = HOSTILE
    data.job["outcome_message"] = "<img src=x onerror=alert(1)>"
    data.warnings.append({"epoch": 3, "message": "<b>bold</b>"})
    page = render_html(data)
    assert "<script>" not in page and "<img src=x" not in page and "<b>bold" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    assert 'src="data:image/png;base64,' in page and "default-src 'none'" in page
    assert "http://" not in page and "https://" not in page  # loads nothing
    assert page.count("<tr>") == 1 + 3  # header + one row per epoch
    # and the figure draws the same name as text, not as mathtext (which would raise here)
    assert any(HOSTILE in t for t in texts(data))


# --- gathering -------------------------------------------------------------------------------

def fake_server(data: ReportData, requests: list[str]) -> httpx.MockTransport:
    """The API's paging, two items a page, plus an epoch event among the warnings."""
    events = [{"id": 1, "kind": "epoch", "data": data.epochs[0]}] + [
        {"id": i + 2, "kind": "warning", "data": w} for i, w in enumerate(data.warnings)]

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(f"{request.url.path}?{request.url.query.decode()}")
        path, q = request.url.path, request.url.params
        if request.headers.get("authorization") != "Bearer k":
            return httpx.Response(401, json={"error": {"code": "unauthorized",
                                                       "message": "unknown key"}})
        if path == f"/v1/jobs/{JOB_ID}":
            return httpx.Response(200, json=data.job)
        if path.endswith("/metrics"):
            offset = int(q["offset"])
            more = offset + 2 < len(data.epochs)
            return httpx.Response(200, json={"items": data.epochs[offset:offset + 2],
                                             "next_offset": offset + 2 if more else None})
        if path.endswith("/steps"):
            after = int(q["after_step"])
            page = [s for s in data.steps if s["step"] > after][:2]
            last = page and page[-1]["step"] < data.steps[-1]["step"]
            return httpx.Response(200, json={"items": page, "next_after_step":
                                             page[-1]["step"] if last else None})
        if path.endswith("/events/history"):
            after = int(q["after_id"])
            page = [e for e in events if e["id"] > after][:2]
            last = page and page[-1]["id"] < events[-1]["id"]
            return httpx.Response(200, json={"items": page, "next_after_id":
                                             page[-1]["id"] if last else None})
        return httpx.Response(404, json={"error": {"code": "not_found",
                                                   "message": f"job {path} not found"}})
    return httpx.MockTransport(handler)


def test_collect_remote_pages_through_everything() -> None:
    data, requests = collapsed(), []
    with httpx.Client(base_url="http://sg", transport=fake_server(data, requests),
                      headers={"Authorization": "Bearer k"}) as client:
        got = collect_remote(client, JOB_ID)
    assert got.job == data.job and got.epochs == data.epochs and got.steps == data.steps
    assert got.warnings == data.warnings  # the epoch event is not a warning
    assert sum("/steps" in r for r in requests) == 8  # 15 points, 2 a page


def test_collect_remote_quotes_the_servers_error_message() -> None:
    with httpx.Client(base_url="http://sg", transport=fake_server(collapsed(), []),
                      headers={"Authorization": "Bearer k"}) as client, \
            pytest.raises(ReportError, match="HTTP 404: job .* not found"):
        collect_remote(client, "cd" * 16)


def test_collect_remote_refuses_a_server_that_is_not_streamguard() -> None:
    html = httpx.MockTransport(lambda _request: httpx.Response(200, text="<html>hi</html>"))
    with httpx.Client(base_url="http://sg", transport=html) as client, \
            pytest.raises(ReportError, match="unexpected shape"):
        collect_remote(client, JOB_ID)


def write_run(out: Path, data: ReportData) -> None:
    """A `streamguard train --output-dir` as the trainer leaves it (JsonlSink, result.json)."""
    out.mkdir()
    trainer = [{k: v for k, v in e.items() if k not in ("created_at", "updated_at", "replayed")}
               | {"confusion_matrix": [[30, 25], [20, 25]]} for e in data.epochs]
    (out / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in trainer))
    (out / "steps.jsonl").write_text("".join(json.dumps(s) + "\n" for s in data.steps))
    (out / "result.json").write_text(json.dumps({
        "outcome": "collapsed", "message": data.job["outcome_message"], "best_epoch": 1,
        "warnings": data.warnings, "config": data.job["config"]}))


def test_collect_local_reads_a_train_output_dir(tmp_path: Path) -> None:
    write_run(tmp_path / "run", collapsed())
    got = collect_local(tmp_path / "run")
    assert got.job["status"] == "collapsed" and got.job["name"] == "run"
    assert [e["epoch"] for e in got.epochs] == [1, 2, 3] and len(got.steps) == 15
    assert any(t.startswith("stopped: collapsed") for t in texts(got))
    with pytest.raises(ReportError, match="no metrics.jsonl"):
        collect_local(tmp_path)


# --- the command -----------------------------------------------------------------------------

def run_cli(*argv: str) -> int:
    args = build_parser().parse_args(["report", *argv])
    return int(args.handler(args))


def test_cli_draws_a_local_run_as_png_and_html(tmp_path: Path) -> None:
    write_run(tmp_path / "run", collapsed())
    assert run_cli("--from-dir", str(tmp_path / "run"), "--out", str(tmp_path / "r.png")) == 0
    assert (tmp_path / "r.png").read_bytes().startswith(PNG_MAGIC)
    assert run_cli("--from-dir", str(tmp_path / "run"), "--out", str(tmp_path / "r.HTML")) == 0
    assert "stopped: collapsed" in (tmp_path / "r.HTML").read_text()


@pytest.mark.parametrize(("argv", "message"), [
    (["--out", "x.svg"], "accepted extensions: .png, .html"),
    (["--out", "x"], "accepted extensions: .png, .html"),
    (["--url", "http://127.0.0.1:9", "--api-key", "k", "--out", "x.png"], "cannot reach"),
])
def test_cli_errors_are_messages(argv: list[str], message: str, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StreamGuardError, match=message):
        run_cli(JOB_ID, *argv)
    assert not list(tmp_path.iterdir())  # nothing written
    with pytest.raises(StreamGuardError, match="not a job id"):
        run_cli("../datasets", "--out", "x.png")
