"""`streamguard` as a client of a remote server: datasets, submit, jobs, watch, metrics, cancel,
download. Every command takes `--url` / STREAMGUARD_URL and `--api-key` / STREAMGUARD_API_KEY.

    export STREAMGUARD_URL=http://gpu-box:8000 STREAMGUARD_API_KEY=sg_...
    streamguard submit --train train.jsonl --val valid.jsonl --model tiny --epochs 3 --watch
    streamguard jobs --status running
    streamguard watch JOB                       # steps as a bar, each epoch as a table row
    streamguard metrics JOB --format csv > metrics.csv
    streamguard download JOB --checkpoint best --out model/

Exit codes (docs/cli.md): 0 success (`watch`: completed or early_stopped); 2 a refused request
or bad arguments; `watch` on a job that ended otherwise: 3 collapsed, 4 non_finite_loss,
5 cancelled, 7 timed_out, 8 failed; 10 server unreachable (or the event stream could not be
recovered within --reconnect-s); 11 a server error (5xx); 12 a download that failed its sha256
or size check; 130 interrupted.

This module holds the flags and the command handlers; the work is elsewhere: the HTTP calls in
`streamguard/remote.py`, the event stream in `streamguard/event_stream.py`, the live `watch`
output in `streamguard/cli_watch.py`, tables and CSV in `streamguard/cli_format.py`, the
checkpoint download in `streamguard/cli_download.py`.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import ValidationError

from streamguard.cli import add_config_flags, config_fields_from_args
from streamguard.cli_download import fetch_checkpoint, place_checkpoint
from streamguard.cli_format import (
    EPOCH_COLUMNS,
    dataset_row,
    describe_dataset,
    epoch_cells,
    human_bytes,
    job_row,
    num,
    say,
    share,
    table,
    to_csv,
)
from streamguard.cli_watch import EXIT_SERVER_ERROR, add_watch_flags, follow
from streamguard.contract import JobConfig, JobStatus
from streamguard.errors import InvalidTrainConfig, StreamGuardError
from streamguard.remote import (
    ApiError,
    ServerUnreachable,
    VerificationFailed,
    add_remote_flags,
    all_metrics,
    make_client,
    newest,
    post_job,
    request,
    upload,
)
from streamguard.spec import describe_validation_error

if TYPE_CHECKING:  # imported where used: `streamguard --help` stays fast
    import httpx

EXIT_REFUSED = 2
EXIT_UNREACHABLE = 10
EXIT_VERIFICATION = 12
EXIT_INTERRUPTED = 130
ID_RE = re.compile(r"^[0-9a-f]{32}$")

Handler = Callable[[argparse.Namespace], int]


def fail(text: str) -> None:
    say(f"streamguard: error: {text}", sys.stderr)


def _reporting(handler: Handler) -> Handler:
    """Expected failures as one message on stderr and a documented exit code, no traceback."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        for name in ("httpx", "httpcore"):  # `main` logs INFO to stdout: not every request
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            return handler(args)
        except VerificationFailed as exc:
            fail(exc.message)
            return EXIT_VERIFICATION
        except ServerUnreachable as exc:
            fail(exc.message)
            return EXIT_UNREACHABLE
        except ApiError as exc:
            fail(exc.message)
            return EXIT_SERVER_ERROR if exc.status >= 500 else EXIT_REFUSED
        except StreamGuardError as exc:
            fail(exc.message)
            return EXIT_REFUSED
        except KeyboardInterrupt:
            say("\nstreamguard: interrupted (a job on the server keeps running)", sys.stderr)
            return EXIT_INTERRUPTED

    return run


# --- watch (the loop and its printer: streamguard/cli_watch.py) --------------------------------

@_reporting
def cmd_watch(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        return follow(client, args.job, args)


# --- datasets ----------------------------------------------------------------------------------

@_reporting
def cmd_datasets_upload(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        ds = upload(client, Path(args.file), args.name)
    for text in describe_dataset(ds):
        say(text)
    return 0


@_reporting
def cmd_datasets_list(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        items, more = newest(client, "/v1/datasets", args.limit)
    rows = [dataset_row(d) for d in items]
    for text in table(["id", "name", "rows", "vulnerable", "dup rows", "size", "created"], rows):
        say(text)
    if more:
        say(f"(more than {args.limit}; pass --limit)")
    return 0


# --- submit ------------------------------------------------------------------------------------

def job_config(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given (`--config` file, then flags), checked as the server will."""
    try:
        fields = config_fields_from_args(args)
    except (OSError, ValueError) as exc:
        raise StreamGuardError(f"--config {args.config}: {exc}") from None
    try:
        config = JobConfig.model_validate(fields)
    except ValidationError as exc:
        raise InvalidTrainConfig(describe_validation_error(exc)) from None
    return dict(config.model_dump(mode="json", exclude_unset=True))


def dataset_ref(client: httpx.Client, split: str, value: str, uploaded: dict[Path, str],
                report: TextIO) -> dict[str, str]:
    """A file that exists is uploaded (once); a 32-hex id or an s3:// URI is used as is."""
    path = Path(value)
    if path.is_file():
        key = path.resolve()
        if key not in uploaded:
            ds = upload(client, path, None)
            uploaded[key] = ds["id"]
            st = ds["stats"]
            say(f"uploaded {path} as dataset {ds['id']} ({st['rows']} rows, vulnerable "
                f"{share(st['n_vulnerable'], st['rows'])})", report)
        return {"dataset_id": uploaded[key]}
    if ID_RE.match(value):
        return {"dataset_id": value}
    if value.startswith("s3://"):
        return {"uri": value}
    raise StreamGuardError(f"--{split} {value!r}: no such file, and not a dataset id "
                           "(32 hex characters) or an s3:// URI", field=split)


@_reporting
def cmd_submit(args: argparse.Namespace) -> int:
    config = job_config(args)  # before any upload: a bad flag costs nothing
    with make_client(args) as client:
        uploaded: dict[Path, str] = {}
        report = sys.stderr if args.quiet else sys.stdout  # -q: stdout is the id alone
        refs = {split: dataset_ref(client, split, value, uploaded, report)
                for split in ("train", "val", "test")
                if (value := getattr(args, split)) is not None}
        body: dict[str, Any] = {"datasets": refs, "config": config}
        if args.name:
            body["name"] = args.name
        if args.max_runtime_s is not None:
            body["max_runtime_s"] = args.max_runtime_s
        headers = {"Idempotency-Key": args.idempotency_key} if args.idempotency_key else {}
        response = post_job(client, body, headers)
        job = response.json()
        if args.quiet:
            say(job["id"])
        else:
            again = " (already submitted with this idempotency key)" \
                if response.status_code == 200 else ""
            say(f"job {job['id']} {job['status']}{again}")
            for text in job.get("warnings") or []:
                say(f"WARNING {text}", sys.stderr)
        if args.watch:
            return follow(client, job["id"], args)
    return 0


# --- jobs, metrics, cancel ---------------------------------------------------------------------

@_reporting
def cmd_jobs(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"status": args.status} if args.status else {}
    with make_client(args) as client:
        items, more = newest(client, "/v1/jobs", args.limit, params)
    rows = [job_row(job) for job in items]
    for text in table(["id", "name", "status", "progress", "ETA", "best", "outcome"], rows):
        say(text)
    if more:
        say(f"(more than {args.limit}; pass --limit)")
    return 0


@_reporting
def cmd_metrics(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        items = all_metrics(client, args.job)
    if args.format == "json":
        say(json.dumps(items, indent=2))
    elif args.format == "csv":
        sys.stdout.write(to_csv(items) if items else "")
    elif not items:
        say(f"job {args.job} has no evaluated epoch yet")
    else:
        headers = [h for h, _ in EPOCH_COLUMNS] + ["note"]
        for text in table(headers, [epoch_cells(r) for r in items]):
            say(text)
    return 0


@_reporting
def cmd_cancel(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        job = request(client, "POST", f"/v1/jobs/{args.job}/cancel")
    if job["status"] == "cancelled":
        say(f"job {job['id']} cancelled")
    else:
        say(f"job {job['id']} {job['status']}: cancel requested; the worker stops after its "
            "current optimizer step (`streamguard watch` follows it)")
    return 0


# --- download ----------------------------------------------------------------------------------

@_reporting
def cmd_download(args: argparse.Namespace) -> int:
    out = Path(args.out)
    with make_client(args) as client:
        chosen, expected, partial = fetch_checkpoint(
            client, args.job, args.checkpoint, out, expect_sha256=args.expect_sha256,
            progress=not args.no_progress and sys.stderr.isatty())
    where = place_checkpoint(partial, out, job=args.job, name=chosen["name"],
                             archive=args.archive, force=args.force)
    metrics = chosen.get("metrics") or {}
    score = f", F1 {num(metrics['f1'], 3)}" if metrics.get("f1") is not None else ""
    say(f"checkpoint {chosen['name']} of job {args.job} (epoch {chosen['epoch']}{score}): "
        f"{human_bytes(chosen['size_bytes'])}, sha256 {expected} verified")
    say(f"saved to {where}")
    return 0


# --- the parsers -------------------------------------------------------------------------------

def _parser(sub: Any, name: str, help_text: str, handler: Handler,
            epilog: str | None = None) -> argparse.ArgumentParser:
    description = textwrap.fill(help_text[:1].upper() + help_text[1:] + ".", width=88)
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help_text, description=description,
        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_remote_flags(p)
    p.set_defaults(handler=handler)
    return p


WATCH_EPILOG = """exit codes: 0 completed or early_stopped; 3 collapsed; 4 non_finite_loss;
5 cancelled; 7 timed_out; 8 failed; 2 refused (bad key, unknown job); 10 server unreachable
for --reconnect-s; 11 server error; 130 interrupted (the job keeps running).
A dropped stream (a server restart) is resumed with Last-Event-ID; no event prints twice."""


def register(sub: Any) -> None:
    """Add the remote-client commands to the `streamguard` subcommands."""
    ds = sub.add_parser("datasets", help="upload and list datasets on the server",
                        description="Upload and list datasets on the server.")
    ds_sub = ds.add_subparsers(dest="datasets_command", required=True)
    p = _parser(ds_sub, "upload", "upload a JSONL split (func, target) and print its "
                "inspection: rows, class balance, duplicates, lengths", cmd_datasets_upload)
    p.add_argument("file", help="JSONL file: one {\"func\": str, \"target\": 0|1} a line")
    p.add_argument("--name", default=None, help="a label (default: the file name)")
    p = _parser(ds_sub, "list", "list your datasets, newest first", cmd_datasets_list)
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")

    p = _parser(sub, "submit", "submit a training job (uploading dataset files first)",
                cmd_submit, epilog="FILE|ID: an existing file is uploaded; 32 hex characters "
                "name an uploaded dataset; s3://... names an object in your area.\n"
                "Config flags are those of `streamguard train`; --config reads a JSON file of "
                "them (flags win).\n" + WATCH_EPILOG.replace("exit codes:", "with --watch:"))
    p.add_argument("--train", required=True, metavar="FILE|ID", help="training split")
    p.add_argument("--val", required=True, metavar="FILE|ID",
                   help="validation split (model selection, collapse guard)")
    p.add_argument("--test", default=None, metavar="FILE|ID",
                   help="test split, evaluated with the best checkpoint")
    p.add_argument("--name", default=None, help="a label for the job")
    p.add_argument("--max-runtime-s", type=int, default=None, metavar="S",
                   help="wall-time limit of the job (>= 60; at most the server's)")
    p.add_argument("--idempotency-key", default=None, metavar="KEY",
                   help="repeat the submission safely: the same key and body give the same job")
    p.add_argument("--config", default=None, help="JSON file of config fields (flags win)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the job id")
    p.add_argument("--watch", action="store_true", help="follow the job (as `watch`) after")
    add_watch_flags(p)
    add_config_flags(p)

    p = _parser(sub, "jobs", "list your jobs, newest first: status, progress, ETA, best "
                "metric, outcome", cmd_jobs)
    p.add_argument("--status", default=None, choices=[s.value for s in JobStatus],
                   help="only jobs in this status")
    p.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")

    p = _parser(sub, "watch", "follow a job live: steps as a progress bar, each epoch as a "
                "table row with its prediction distribution and warnings", cmd_watch,
                epilog=WATCH_EPILOG)
    p.add_argument("job", help="job id")
    add_watch_flags(p)

    p = _parser(sub, "metrics", "print a job's per-epoch validation metrics", cmd_metrics)
    p.add_argument("job", help="job id")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="table (default); json: the API's records; csv: one row per epoch, "
                        "nested fields as parent.child columns")

    p = _parser(sub, "cancel", "cancel a job (queued: at once; running: after its current "
                "step)", cmd_cancel)
    p.add_argument("job", help="job id")

    p = _parser(sub, "download", "download a checkpoint's model, verify its sha256 and size, "
                "and unpack it into a folder", cmd_download,
                epilog="The archive is streamed to a temp file in --out and checked against "
                "the listed sha256 and size (or --expect-sha256); a mismatch deletes it and "
                "exits 12. The model folder's files are then placed directly in --out "
                "(loadable with from_pretrained).")
    p.add_argument("job", help="job id")
    p.add_argument("--checkpoint", default="best", metavar="best|last|NAME",
                   help="which checkpoint (default: best)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to put the model in")
    p.add_argument("--expect-sha256", default=None, metavar="HEX",
                   help="require this sha256 instead of the listed one (a pinned model)")
    p.add_argument("--archive", action="store_true",
                   help="keep the verified .tar.gz in DIR instead of unpacking it")
    p.add_argument("--force", action="store_true", help="replace files already in DIR")
    p.add_argument("--no-progress", action="store_true", help="no download progress bar")
