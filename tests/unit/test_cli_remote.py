"""The remote client without a server: argument parsing, the SSE parser, reconnects with
Last-Event-ID (httpx.MockTransport), download verification, error messages, tables and CSV.

The same commands against a live `streamguard up`: tests/integration/test_cli_remote.py.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamguard.cli import build_parser
from streamguard.cli_download import extract_model
from streamguard.cli_format import distribution, duration, epoch_cells, flatten, table, to_csv
from streamguard.cli_remote import EXIT_REFUSED, EXIT_UNREACHABLE, job_config
from streamguard.cli_watch import WATCH_EXIT, WatchPrinter
from streamguard.errors import InvalidTrainConfig, StreamGuardError
from streamguard.event_stream import Event, EventFollower, SseParser, parse_sse
from streamguard.remote import (
    ApiError,
    ServerUnreachable,
    VerificationFailed,
    api_error,
    download_verified,
    newest,
    request_patiently,
)
from tests.e2e.harness import free_port

JOB = "a" * 32
DIST = {"predicted_vulnerable": 45, "predicted_safe": 55, "actual_vulnerable": 46,
        "actual_safe": 54}


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def epoch(n: int, **extra: Any) -> dict[str, Any]:
    return {"epoch": n, "step": 10 * n, "train_loss": 0.69, "val_loss": 0.68, "accuracy": 0.6,
            "precision": 0.5, "recall": 0.6, "f1": 0.55, "mcc": 0.2, "roc_auc": None,
            "prediction_distribution": DIST, "confusion_matrix": {"true_negative": 1},
            "warnings": [], "is_best": n == 1, "replayed": False, **extra}


def frame(event_id: int, kind: str, data: dict[str, Any]) -> str:
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"


def status(event_id: int, to: str) -> str:
    return frame(event_id, "status", {"status": to, "from": None, "reason": "r"})


# --- arguments ---------------------------------------------------------------------------------

def test_submit_takes_every_train_config_flag_and_types_them() -> None:
    args = parse("submit", "--train", "t.jsonl", "--val", JOB, "--model", "tiny", "--lr", "1e-3",
                 "--epochs", "2", "--no-group-by-length", "--lr-scaling", "linear", "--watch")
    assert (args.train, args.val, args.test, args.watch) == ("t.jsonl", JOB, None, True)
    assert job_config(args) == {"model": "tiny", "lr": 0.001, "epochs": 2,
                                "group_by_length": False, "lr_scaling": "linear"}
    assert args.reconnect_s == 120.0 and not args.no_progress


def test_submit_refuses_a_bad_config_before_uploading_anything() -> None:
    with pytest.raises(InvalidTrainConfig) as err:
        job_config(parse("submit", "--train", "x", "--val", "y", "--lr", "nan",
                         "--model", "/srv/models/x"))
    assert "lr" in err.value.message and "Server paths are never accepted" in err.value.message


def test_submit_config_file_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model": "tiny", "epochs": 5}))
    args = parse("submit", "--train", "x", "--val", "y", "--config", str(config), "--epochs", "3")
    assert job_config(args) == {"model": "tiny", "epochs": 3}
    config.write_text("{not json")
    with pytest.raises(StreamGuardError, match="--config"):
        job_config(args)


@pytest.mark.parametrize("argv", [
    ["watch"], ["download", JOB], ["metrics", JOB, "--format", "xml"],
    ["jobs", "--status", "done"], ["submit", "--train", "x"],
])
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    err = capsys.readouterr().err
    # one line: the error and where the usage is (`streamguard watch --help`), no usage dump
    assert exc.value.code == 2 and err.count("\n") == 1 and "error:" in err and "--help" in err


def test_every_client_command_documents_itself(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["datasets", "upload"], ["datasets", "list"], ["submit"], ["jobs"], ["watch"],
                 ["metrics"], ["cancel"], ["download"]):
        with pytest.raises(SystemExit):
            parse(*argv, "--help")
        text = capsys.readouterr().out
        assert "--url" in text and "--api-key" in text, argv
    with pytest.raises(SystemExit):
        parse("watch", "--help")
    text = capsys.readouterr().out
    assert "Last-Event-ID" in text and "3 collapsed" in text


def test_watch_exit_codes_are_distinct_for_every_bad_ending() -> None:
    bad = {k: v for k, v in WATCH_EXIT.items() if k not in ("completed", "early_stopped")}
    assert WATCH_EXIT["completed"] == WATCH_EXIT["early_stopped"] == 0
    assert set(bad) == {"collapsed", "not_learning", "non_finite_loss", "cancelled", "timed_out",
                        "failed"}
    assert len(set(bad.values())) == len(bad) and 0 not in bad.values()
    assert not set(bad.values()) & {EXIT_REFUSED, EXIT_UNREACHABLE}


# --- errors ------------------------------------------------------------------------------------

def response(status_code: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    request = httpx.Request("GET", "http://sg.test/v1/jobs")
    if isinstance(body, str):
        return httpx.Response(status_code, text=body, request=request, headers=headers)
    return httpx.Response(status_code, json=body, request=request, headers=headers)


def test_api_errors_carry_message_field_request_id_and_details() -> None:
    err = api_error(response(422, {"error": {
        "code": "invalid_train_config", "message": "invalid training config", "field": "config.lr",
        "request_id": "r1", "details": [{"field": "config.lr", "message": "too big"},
                                        {"field": "file", "message": "bad JSON", "line": 3}]}}))
    assert err.status == 422
    assert err.message.splitlines() == ["invalid training config (field: config.lr, request id r1)",
                                        "  - config.lr: too big", "  - file line 3: bad JSON"]
    unauthorized = api_error(response(401, {"error": {"code": "unauthorized", "message": "no"}}))
    assert "STREAMGUARD_API_KEY" in unauthorized.message
    proxy = api_error(response(502, "<html>Bad gateway</html>", {"x-request-id": "p9"}))
    assert proxy.message.startswith("HTTP 502 from http://sg.test/v1/jobs: <html>Bad gateway")
    assert proxy.request_id == "p9"


def test_connection_refused_names_the_url(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    args = parse("jobs", "--url", url, "--api-key", "sg_x", "--timeout", "3")
    assert args.handler(args) == EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert err.startswith(f"streamguard: error: cannot reach the StreamGuard server at {url}")
    assert "Traceback" not in err


def test_no_api_key_is_a_message(capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMGUARD_API_KEY", raising=False)
    args = parse("jobs")
    assert args.handler(args) == EXIT_REFUSED
    assert "no API key" in capsys.readouterr().err


# --- SSE ---------------------------------------------------------------------------------------

def test_sse_parser_follows_the_wire_format() -> None:
    text = (": ping\r\n\r\nretry: 1000\nid: 5\nevent: step\ndata: {\"a\":\ndata:  1}\n\n"
            "event: status\ndata: {\"x\": 1}\n\n"  # no id: not one of ours, skipped
            "id: 6\ndata: {}\n\n")
    events = list(parse_sse(text.splitlines()))
    assert events == [Event(5, "step", {"a": 1}), Event(6, "message", {})]
    parser = SseParser()
    assert [parser.feed(line) for line in ["id: 7", "event: status",
                                           'data: {"status": "collapsed"}']] == [None] * 3
    last = parser.feed("")
    assert last is not None and last.terminal


class FakeServer:
    """A MockTransport answering the event stream from a script of (status, body|exception)
    and GET /v1/jobs/{id} with `job_status`; records the Last-Event-ID of each stream."""

    def __init__(self, script: list[Any], job_status: str = "running") -> None:
        self.script, self.job_status = script, job_status
        self.last_ids: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            self.last_ids.append(request.headers.get("last-event-id"))
            step = self.script.pop(0)
            if isinstance(step, Exception):
                raise step
            code, body = step
            return httpx.Response(code, text=body,
                                  headers={"content-type": "text/event-stream"})
        if request.url.path.endswith("/events/history"):
            return httpx.Response(200, json={"items": [], "next_after_id": None})
        return httpx.Response(200, json={"id": JOB, "status": self.job_status,
                                         "outcome_message": "done"})


def follower(server: FakeServer, **kw: Any) -> tuple[EventFollower, list[str]]:
    notices: list[str] = []
    client = httpx.Client(base_url="http://sg.test", transport=httpx.MockTransport(server))
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    return EventFollower(client, JOB, notice=notices.append, sleep=sleep,
                         clock=lambda: now[0], **kw), notices


def test_follower_resumes_with_last_event_id_and_never_repeats_an_event() -> None:
    server = FakeServer([
        (200, status(1, "running") + frame(2, "step", {"step": 1}) + ": ping\n\n"),  # dropped
        httpx.ConnectError("refused"),  # the server restarting
        (503, '{"error": {"message": "starting"}}'),
        # a server that replays more than asked: the client still prints each id once
        (200, frame(2, "step", {"step": 1}) + frame(3, "epoch", {"epoch": 1})
         + status(4, "completed") + frame(5, "step", {"step": 9})),
    ])
    f, notices = follower(server)
    assert [e.id for e in f.events()] == [1, 2, 3, 4]
    assert server.last_ids == [None, "2", "2", "2"]
    assert notices[0] == ("stream lost (the server closed the stream); reconnecting with "
                          "Last-Event-ID 2 for up to 120 s")
    assert "connection refused" in notices[1] and "HTTP 503" in notices[2]
    assert len(notices) == 4
    assert notices[-1] == "reconnected after 4 s (Last-Event-ID 2)"  # slept 0.5 + 1 + 2 s


def test_follower_gives_up_after_reconnect_s_of_outage() -> None:
    server = FakeServer([(200, status(1, "running"))] + [httpx.ConnectError("refused")] * 50)
    f, notices = follower(server, reconnect_s=10.0)
    seen = []
    with pytest.raises(ServerUnreachable, match="within 10 s"):
        for event in f.events():
            seen.append(event.id)
    assert seen == [1]
    assert 3 < len(server.last_ids) < 8  # backoff 0.5, 1, 2, 4, 5 s: not a busy loop
    assert len(notices) == 2  # each reason once, not one line per attempt


def test_follower_ends_a_closed_stream_of_a_finished_job_from_the_job() -> None:
    server = FakeServer([(200, status(1, "running"))], job_status="cancelled")
    f, _ = follower(server)
    events = list(f.events())
    assert [(e.kind, e.data["status"]) for e in events] == [("status", "running"),
                                                           ("status", "cancelled")]


def test_follower_does_not_retry_a_refusal() -> None:
    server = FakeServer([(404, json.dumps({"error": {"message": "job not found",
                                                      "field": "job_id"}}))])
    f, _ = follower(server)
    with pytest.raises(ApiError, match="job not found"):
        list(f.events())


def test_the_first_request_of_watch_waits_for_a_restarting_server() -> None:
    answers: list[Any] = [httpx.ConnectError("refused"), httpx.Response(503, json={}),
                          httpx.Response(200, json={"id": JOB})]

    def handle(_request: httpx.Request) -> httpx.Response:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = httpx.Client(base_url="http://sg.test", transport=httpx.MockTransport(handle))
    notices: list[str] = []
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    kw: dict[str, Any] = {"notice": notices.append, "sleep": sleep, "clock": lambda: now[0]}
    assert request_patiently(client, "/v1/jobs/x", patience_s=60, **kw) == {"id": JOB}
    assert len(notices) == 2 and "cannot reach" in notices[0] and "HTTP 503" in notices[1]
    answers[:] = [httpx.Response(404, json={"error": {"message": "job not found"}})]
    with pytest.raises(ApiError, match="job not found"):
        request_patiently(client, "/v1/jobs/x", patience_s=60, **kw)
    answers[:] = [httpx.ConnectError("refused")] * 20
    with pytest.raises(ServerUnreachable):
        request_patiently(client, "/v1/jobs/x", patience_s=5, **kw)


# --- watch output ------------------------------------------------------------------------------

def test_watch_prints_rows_warnings_once_and_marks_replays() -> None:
    out = io.StringIO()
    printer = WatchPrinter(progress=False, epochs=2, out=out, err=io.StringIO())
    for e in [Event(1, "status", {"status": "running", "from": "queued", "reason": "claimed",
                                  "attempt": 1}),
              Event(2, "step", {"step": 1, "epoch": 1, "total_steps": 4, "train_loss": 0.7,
                                "lr": 1e-3}),
              Event(3, "epoch", epoch(1, warnings=["class safe predicted 10 times"])),
              Event(4, "warning", {"epoch": 1, "message": "class safe predicted 10 times"}),
              Event(5, "warning", {"epoch": 1, "message": "something else"}),
              Event(6, "epoch", epoch(1, replayed=True, is_best=False)),
              Event(7, "checkpoint", {"name": "best", "epoch": 1, "size_bytes": 2_000_000,
                                      "sha256": "ab" * 32}),
              Event(8, "novel", {"x": 1})]:
        printer.handle(e)
    lines = out.getvalue().splitlines()
    assert lines[0] == "status  running (from queued) attempt 1: claimed"
    assert lines[1].split()[:3] == ["epoch", "train_loss", "val_loss"]
    assert lines[2].split()[0] == "1" and lines[2].endswith("best")
    assert "45 (45.0%) / 55 (55.0%)" in lines[2] and "46 (46.0%) / 54 (54.0%)" in lines[2]
    assert sum("class safe predicted 10 times" in line for line in lines) == 1
    assert "WARNING epoch 1: something else" in lines[4]
    assert lines[5].endswith("replayed") and lines[5].split()[0] == "1"
    assert lines[6] == f"checkpoint best <- epoch 1 (2.0 MB, sha256 {'ab' * 6})"
    assert lines[7].startswith("novel ")
    assert sum(line.split()[:1] == ["epoch"] for line in lines) == 1  # one header


def test_watch_prints_mid_epoch_evaluations_and_rollbacks() -> None:
    out = io.StringIO()
    printer = WatchPrinter(progress=False, epochs=4, out=out, err=io.StringIO())
    evaluation = {**epoch(2), "step": 200, "val_loss": 0.6838,
                  "warnings": ["not_separating_yet: class safe predicted 3 times"]}
    printer.handle(Event(1, "evaluation", evaluation))
    printer.handle(Event(2, "rollback", {
        "epoch": 2, "step": 300, "to_epoch": 1, "to_step": 150, "lr_factor": 0.5, "rollback": 1,
        "max_rollbacks": 2, "reason": "no safe predictions on 54 safe validation examples"}))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("eval  step 200 (epoch 2): val_loss 0.6838")
    assert "45 (45.0%) / 55 (55.0%)" in lines[0]
    assert lines[1] == "      WARNING not_separating_yet: class safe predicted 3 times"
    assert lines[2] == ("ROLLBACK 1/2 at step 300 (epoch 2): no safe predictions on 54 safe "
                        "validation examples; back to the best checkpoint (epoch 1, step 150), "
                        "LR x0.5")


def test_watch_progress_bar_tolerates_replayed_steps() -> None:
    err = io.StringIO()
    printer = WatchPrinter(progress=True, epochs=2, out=io.StringIO(), err=err)
    for step, replayed in ((5, False), (10, False), (5, True), (20, False)):
        printer.handle(Event(step, "step", {"step": step, "epoch": 1, "total_steps": 20,
                                            "train_loss": 0.5, "lr": 1e-4,
                                            "replayed": replayed}))
    printer.close()
    assert "20/20" in err.getvalue() and "(replayed)" in err.getvalue()


def test_lists_page_with_the_cursor_up_to_the_limit() -> None:
    asked: list[dict[str, str]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        q = dict(request.url.params)
        asked.append(q)
        start = int(q.get("cursor", "0"))
        items = [{"id": str(i)} for i in range(start, min(start + int(q["limit"]), 450))]
        nxt = str(start + len(items)) if start + len(items) < 450 else None
        return httpx.Response(200, json={"items": items, "next_cursor": nxt})

    client = httpx.Client(base_url="http://sg.test", transport=httpx.MockTransport(handle))
    items, more = newest(client, "/v1/jobs", 300, {"status": "running"})
    assert [i["id"] for i in items] == [str(i) for i in range(300)] and more
    assert asked == [{"status": "running", "limit": "200"},
                     {"status": "running", "limit": "100", "cursor": "200"}]
    items, more = newest(client, "/v1/jobs", 1000)
    assert len(items) == 450 and not more
    with pytest.raises(StreamGuardError, match="--limit"):
        newest(client, "/v1/jobs", 0)


# --- tables and CSV ------------------------------------------------------------------------------

def test_table_aligns_numbers_right_and_text_left() -> None:
    lines = table(["id", "rows", "note"], [["a", "5", "x"], ["bbb", "1200", "-"]])
    assert lines == ["id   rows  note", "a       5  x", "bbb  1200  -"]


def test_small_formatters() -> None:
    assert duration(None) == "-" and duration(42) == "42s" and duration(185) == "3m05s"
    assert duration(3725) == "1h02m"
    assert distribution({"predicted_vulnerable": 0, "predicted_safe": 0, "actual_vulnerable": 1,
                         "actual_safe": 3}) == ("0 (-) / 0 (-)", "1 (25.0%) / 3 (75.0%)")
    assert epoch_cells(epoch(2))[6] == "-"  # no AUC


def test_csv_flattens_nested_fields_and_parses_back() -> None:
    rows = [epoch(1, warnings=["a", "b"]), epoch(2)]
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert list(parsed[0])[:2] == ["epoch", "step"]
    assert [r["epoch"] for r in parsed] == ["1", "2"]
    assert parsed[0]["prediction_distribution.predicted_vulnerable"] == "45"
    assert parsed[0]["warnings"] == "a | b" and parsed[1]["roc_auc"] == ""
    assert flatten({"a": {"b": {"c": 1}}}) == {"a.b.c": 1}


# --- download ----------------------------------------------------------------------------------

def model_archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = b'{"model_type": "roberta"}'
        info = tarfile.TarInfo("model/config.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def archive_server(data: bytes, seen: list[httpx.Request]) -> Callable[[httpx.Request],
                                                                      httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "sg.test":
            return httpx.Response(307, headers={"location": "http://s3.test/presigned?sig=1"})
        return httpx.Response(200, content=data)

    return handle


@pytest.fixture
def archive() -> bytes:
    return model_archive()


def test_download_follows_a_presigned_redirect_without_the_key(tmp_path: Path,
                                                                archive: bytes) -> None:
    seen: list[httpx.Request] = []
    client = httpx.Client(base_url="http://sg.test", headers={"Authorization": "Bearer k"},
                          transport=httpx.MockTransport(archive_server(archive, seen)))
    dest = tmp_path / "a.tar.gz"
    # the redirect goes through a fresh client: give it the same transport
    with pytest.MonkeyPatch.context() as mp:
        real = httpx.Client

        def plain(**kw: Any) -> httpx.Client:
            return real(transport=httpx.MockTransport(archive_server(archive, seen)), **kw)

        mp.setattr(httpx, "Client", plain)
        download_verified(client, "/v1/jobs/x/checkpoints/best/download", dest,
                          sha256=hashlib.sha256(archive).hexdigest(), size=len(archive))
    assert dest.read_bytes() == archive
    assert [r.url.host for r in seen] == ["sg.test", "s3.test"]
    assert "authorization" not in seen[1].headers
    assert extract_model(dest, tmp_path, force=False) == ["config.json"]
    assert (tmp_path / "config.json").is_file()
    with pytest.raises(StreamGuardError, match="--force"):
        extract_model(dest, tmp_path, force=False)


@pytest.mark.parametrize(("sha", "size", "why"), [
    ("0" * 64, None, "sha256"), (None, 1, "size"),
])
def test_a_download_that_does_not_match_is_deleted(tmp_path: Path, archive: bytes,
                                                   sha: str | None, size: int | None,
                                                   why: str) -> None:
    client = httpx.Client(base_url="http://sg.test", transport=httpx.MockTransport(
        lambda _r: httpx.Response(200, content=archive)))
    dest = tmp_path / "a.tar.gz"
    with pytest.raises(VerificationFailed, match=f"{why} .*deleted"):
        download_verified(client, "/d", dest, sha256=sha or hashlib.sha256(archive).hexdigest(),
                          size=size)
    assert not dest.exists()


def test_an_archive_outside_model_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("etc/passwd")
        tar.addfile(info, io.BytesIO(b""))
    (tmp_path / "a.tar.gz").write_bytes(buffer.getvalue())
    (tmp_path / "out").mkdir()
    with pytest.raises(StreamGuardError, match="not under model/"):
        extract_model(tmp_path / "a.tar.gz", tmp_path / "out", force=False)
