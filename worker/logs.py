"""JSON logs for the Celery workers (training and inference) when `log.format` is json.

Celery configures logging itself unless a receiver is connected to its `setup_logging` signal;
then it leaves it to us (streamguard.logs.configure_logging: one JSON line per record on
stderr, Celery's own loggers included) and does not redirect stdout. Its start-up banner is
plain text printed to stdout, so it is switched off (`--quiet`) in JSON format, and so are
transformers' progress bars (`save_pretrained` draws one per checkpoint on stderr). The training
task's log lines name their job (`job_id`, bound in worker.celery_app).
"""

from __future__ import annotations

from typing import Any

from celery.signals import celeryd_init, setup_logging

from streamguard.logs import configure_logging
from streamguard.settings import LogSettings


def install_json_logging(settings: LogSettings) -> bool:
    """Hand Celery's logging to `configure_logging` when `settings.format` is json (True);
    text leaves Celery's own format as it was (False)."""
    if settings.format != "json":
        return False

    def configure(**_kwargs: Any) -> None:
        configure_logging(settings)

    def no_banner(instance: Any = None, **_kwargs: Any) -> None:
        if instance is not None:
            instance.quiet = True  # the banner is not a log line (and not JSON)

    configure_logging(settings)  # now: what Celery warns before its signal is JSON too
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # tqdm bars are not log lines
    setup_logging.connect(configure, weak=False)
    celeryd_init.connect(no_banner, weak=False)
    return True
