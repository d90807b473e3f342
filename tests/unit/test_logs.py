"""streamguard/logs.py: the JSON line format, its context fields, and the access log's query
redaction still applied in JSON mode."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from api.middleware import ACCESS_LOGGER, install_log_redaction
from streamguard.logs import (
    JsonFormatter,
    configure_logging,
    job_id_var,
    request_id_var,
    tenant_var,
)
from streamguard.settings import LogSettings, Settings


@pytest.fixture
def json_lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through JsonFormatter into a buffer (the root is left alone)."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("sg-test-json")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, buffer
    logger.removeHandler(handler)


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_line_has_time_level_logger_message_and_the_known_context(
        json_lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buffer = json_lines
    logger.info("plain %s", "line")
    tokens = [request_id_var.set("req-1"), tenant_var.set("t-1"), job_id_var.set("job-1")]
    try:
        logger.warning("with context", extra={"attempt": 2})
    finally:
        job_id_var.reset(tokens[2])
        tenant_var.reset(tokens[1])
        request_id_var.reset(tokens[0])
    plain, rich = lines(buffer)
    assert set(plain) == {"time", "level", "logger", "message"}, plain
    assert plain["message"] == "plain line" and plain["level"] == "INFO"
    assert plain["logger"] == "sg-test-json"
    assert str(plain["time"]).endswith("Z") and "T" in str(plain["time"])  # ISO 8601, UTC
    assert rich["request_id"] == "req-1" and rich["tenant"] == "t-1"
    assert rich["job_id"] == "job-1" and rich["attempt"] == 2 and rich["level"] == "WARNING"


def test_exc_info_is_the_traceback_text(json_lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buffer = json_lines
    try:
        raise ValueError("bad thing")
    except ValueError:
        logger.exception("it failed")
    (line,) = lines(buffer)
    assert line["message"] == "it failed" and line["level"] == "ERROR"
    assert "Traceback" in str(line["exc_info"]) and "ValueError: bad thing" in str(line["exc_info"])


def test_the_access_log_keeps_its_redaction_and_gains_fields(
        json_lines: tuple[logging.Logger, io.StringIO]) -> None:
    _, buffer = json_lines
    install_log_redaction()
    access = logging.getLogger(ACCESS_LOGGER)
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    before = (access.level, access.propagate)
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    try:
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET",
                    "/v1/jobs?api_key=sg_secret", "1.1", 401)
    finally:
        access.removeHandler(handler)
        access.setLevel(before[0])
        access.propagate = before[1]
    text = buffer.getvalue()
    assert "sg_secret" not in text
    (line,) = lines(buffer)
    assert line["path"] == "/v1/jobs?<redacted>" and line["status"] == 401
    assert line["method"] == "GET"


def test_configure_logging_json_puts_one_json_handler_on_the_root(
        capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    uvicorn = logging.getLogger("uvicorn.error")
    saved_uvicorn = (list(uvicorn.handlers), uvicorn.propagate)
    uvicorn.addHandler(logging.StreamHandler())  # what uvicorn's own config leaves there
    uvicorn.propagate = False
    try:
        configure_logging(LogSettings(format="json"))
        configure_logging(LogSettings(format="json", level="DEBUG"))  # again: still one
        assert len(root.handlers) == 1 and root.level == logging.DEBUG
        assert uvicorn.handlers == [] and uvicorn.propagate
        logging.getLogger("sg-test").debug("to stderr")
        uvicorn.info("from uvicorn")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        uvicorn.handlers[:] = saved_uvicorn[0]
        uvicorn.propagate = saved_uvicorn[1]
    err = capsys.readouterr().err.splitlines()
    assert [json.loads(line)["message"] for line in err] == ["to stderr", "from uvicorn"]


def test_log_settings_come_from_the_environment_and_refuse_unknown_formats(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SG_LOG__FORMAT", "json")
    monkeypatch.setenv("SG_LOG__LEVEL", "WARNING")
    assert Settings().log == LogSettings(format="json", level="WARNING")
    monkeypatch.setenv("SG_LOG__FORMAT", "xml")
    with pytest.raises(ValueError, match=r"log\.format[\s\S]*'text' or 'json'"):
        Settings()
