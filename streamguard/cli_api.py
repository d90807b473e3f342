"""`streamguard api`: the HTTP API the production way, N uvicorn worker processes on one port.

    streamguard db upgrade                             # once, before the API starts
    streamguard api --host 0.0.0.0 --workers 4         # 4 processes; default SG_API__WORKERS (1)

One API process holds the GIL, so it serves about one core's worth of requests; `--workers N`
runs uvicorn's supervisor and N processes of `api.main:serve_app` sharing the port (the kernel
spreads connections over them; a process that dies is replaced). With one worker it is the
single process `uvicorn --factory api.main:serve_app` runs, nothing else.

With several, each scrape of GET /metrics reaches one of them, so their Prometheus counters
must be summed: this launcher creates a fresh, empty folder, puts it in PROMETHEUS_MULTIPROC_DIR
before any worker starts (prometheus_client reads the variable when it is first imported) and
removes it at exit; api/metrics.py then serves the sum over every process. An operator may set
PROMETHEUS_MULTIPROC_DIR instead (a tmpfs, say; even with one worker): it must be writable, and
the metric files a previous run left there are deleted at start, so counters begin at zero with
the server, as they do in one process.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from streamguard.errors import StreamGuardError

#: prometheus_client's multiprocess folder variable (read by it in every API process).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The files prometheus_client writes there: `counter_<pid>.db`, `gauge_livesum_<pid>.db`, ...
METRIC_FILE = re.compile(r"^(counter|histogram|summary|gauge_[a-z]+)_\d+\.db$")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
#: The ASGI factory every worker process calls.
APP_FACTORY = "api.main:serve_app"


def positive_int(text: str) -> int:
    """argparse type: a whole number above 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(sub: Any) -> None:
    """Add `api` to the `streamguard` subcommands."""
    p = sub.add_parser("api", help="serve the HTTP API: N worker processes on one port "
                                   "(migrate first: streamguard db upgrade)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind [127.0.0.1]")
    p.add_argument("--port", type=int, default=8000, help="port to bind [8000]")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="API worker processes [SG_API__WORKERS, else 1]; above 1, /metrics "
                        "sums every process's counters (PROMETHEUS_MULTIPROC_DIR)")
    p.add_argument("--no-proxy-headers", dest="proxy_headers", action="store_false",
                   help="ignore X-Forwarded-For/-Proto (by default trusted from "
                        "--forwarded-allow-ips)")
    p.add_argument("--forwarded-allow-ips", default=None,
                   help="proxies whose X-Forwarded-* headers are trusted, comma-separated or * "
                        "[uvicorn's: $FORWARDED_ALLOW_IPS, else 127.0.0.1]")
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS,
                   help="uvicorn's log level [info]")
    p.set_defaults(handler=cmd_api)


def api_workers(args: argparse.Namespace) -> int:
    """--workers, else the `api.workers` setting (SG_API__WORKERS)."""
    if args.workers is not None:
        return int(args.workers)
    from streamguard.settings import get_settings

    return get_settings().api.workers


@contextmanager
def metrics_dir(workers: int) -> Iterator[Path | None]:
    """The PROMETHEUS_MULTIPROC_DIR of this server run, set in os.environ for the workers it
    spawns; None (and nothing set) for one worker unless the operator set one."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        folder = Path(given)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for entry in folder.iterdir():  # counts of an earlier run must not carry over
                if METRIC_FILE.match(entry.name):
                    entry.unlink()
        except OSError as exc:
            raise StreamGuardError(f"{MULTIPROC_ENV}={given}: not a writable folder ({exc})",
                                   field=MULTIPROC_ENV) from None
        if not os.access(folder, os.W_OK):
            raise StreamGuardError(f"{MULTIPROC_ENV}={given}: not writable",
                                   field=MULTIPROC_ENV)
        yield folder
        return
    if workers == 1:
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="streamguard-api-metrics-"))
    os.environ[MULTIPROC_ENV] = str(folder)
    try:
        yield folder
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn  # the [api] extra: a missing one is named by streamguard.cli.main

    workers = api_workers(args)
    with metrics_dir(workers) as folder:
        if folder is not None:
            sys.stderr.write(f"streamguard api: {workers} worker process(es); Prometheus "
                             f"metrics summed over them in {folder}\n")
        options: dict[str, Any] = {"host": args.host, "port": args.port, "workers": workers,
                                   "factory": True, "proxy_headers": args.proxy_headers,
                                   "log_level": args.log_level}
        if args.forwarded_allow_ips is not None:
            options["forwarded_allow_ips"] = args.forwarded_allow_ips
        # One worker: this process serves (as `uvicorn --factory` does). More: uvicorn's
        # supervisor spawns fresh interpreters (so each imports prometheus_client anew, with
        # the variable above already set) and replaces any that dies.
        uvicorn.run(APP_FACTORY, **options)
    return 0
