"""Structured logs: one JSON object per line (`SG_LOG__FORMAT=json`), naming the request, the
tenant and the job each line belongs to.

    SG_LOG__FORMAT=json uvicorn --factory api.main:create_app
    {"time": "2026-11-27T15:02:03.123Z", "level": "INFO", "logger": "uvicorn.access",
     "message": "127.0.0.1:51234 - \\"GET /v1/jobs HTTP/1.1\\" 401", "request_id": "9f2c...",
     "method": "GET", "path": "/v1/jobs", "status": 401}

The context comes from three ContextVars, set where it is known: `request_id_var`
(api.middleware.RequestIdMiddleware, for the whole request, uvicorn's access line included),
`tenant_var` (the API key's tenant, api.deps) and `job_id_var` (the worker's task, and the
threads it starts). `configure_logging` is called by each process at start: the API
(`create_app`), the Celery worker (its `setup_logging` signal) and `streamguard up`.

The `text` format leaves each program's own handlers and format alone (uvicorn's, Celery's).
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from streamguard.settings import LogSettings

#: The id of the HTTP request being handled (X-Request-ID).
request_id_var: ContextVar[str | None] = ContextVar("streamguard_request_id", default=None)
#: The tenant whose API key the request carries.
tenant_var: ContextVar[str | None] = ContextVar("streamguard_tenant", default=None)
#: The job a worker is running.
job_id_var: ContextVar[str | None] = ContextVar("streamguard_job_id", default=None)

CONTEXT_VARS: dict[str, ContextVar[str | None]] = {
    "request_id": request_id_var, "tenant": tenant_var, "job_id": job_id_var}

#: Loggers that programs give handlers of their own; in JSON format they propagate to the root.
PROGRAM_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task",
                   "celery.redirected")

#: Attributes every LogRecord has; anything else on a record came from `extra=` and is kept.
#: (uvicorn's `color_message` is its message with terminal colours: left out.)
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName", "color_message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601, UTC, milliseconds), level, logger, message,
    the context that is known (request_id, tenant, job_id), `extra=` fields, uvicorn's access
    fields (method, path, status), and exc_info / stack_info as text when present.
    """

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in CONTEXT_VARS.items():
            value = var.get()
            if value is not None:
                doc[key] = value
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and key not in doc:
                doc[key] = value
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) \
                and len(record.args) == 5:
            # '%s - "%s %s HTTP/%s" %d': client, method, path (query redacted), version, status
            _client, method, path, _version, status = record.args
            doc.update(method=method, path=path, status=status)
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc_info"] = record.exc_text
        if record.stack_info:
            doc["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class _JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler `configure_logging` installs (recognised when it runs again)."""


def configure_logging(settings: LogSettings) -> None:
    """Apply `settings` to this process's logging (idempotent).

    json: the root logger gets one handler writing JSON lines to stderr (every other root
    handler is removed), uvicorn's and Celery's loggers lose their own handlers and propagate
    to it, and the root level is `settings.level` (INFO when unset). Filters on the loggers
    themselves (the access log's query redaction) still run first. text: only the level, when
    set, is applied to the root logger.
    """
    root = logging.getLogger()
    if settings.format == "json":
        for handler in list(root.handlers):
            root.removeHandler(handler)
        handler = _JsonHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        root.addHandler(handler)
        root.setLevel(settings.level or "INFO")
        logging.captureWarnings(True)  # Python warnings as JSON records, not raw stderr text
        for name in PROGRAM_LOGGERS:
            logger = logging.getLogger(name)
            for own in list(logger.handlers):
                logger.removeHandler(own)
            logger.propagate = True
    elif settings.level is not None:
        root.setLevel(settings.level)
