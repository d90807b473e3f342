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
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import logging
import re
import shutil
import sys
import tarfile
import tempfile
import textwrap
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import httpx
from pydantic import ValidationError

from streamguard.cli import EXIT_CODES, add_config_flags, config_fields_from_args
from streamguard.contract import JobConfig, JobStatus
from streamguard.errors import InvalidTrainConfig, StreamGuardError
from streamguard.remote import (
    ApiError,
    Event,
    EventFollower,
    ServerUnreachable,
    VerificationFailed,
    add_remote_flags,
    check,
    download_verified,
    make_client,
    request,
    request_patiently,
    unreachable,
)
from streamguard.spec import describe_validation_error

EXIT_REFUSED = 2
WATCH_EXIT = {**{k: v for k, v in EXIT_CODES.items() if k != "preempted"},
              JobStatus.TIMED_OUT.value: 7, JobStatus.FAILED.value: 8}
EXIT_UNREACHABLE = 10
EXIT_SERVER_ERROR = 11
EXIT_VERIFICATION = 12
EXIT_INTERRUPTED = 130
ID_RE = re.compile(r"^[0-9a-f]{32}$")
PAGE = 200  # the API's largest page

Handler = Callable[[argparse.Namespace], int]


def say(text: str = "", file: TextIO | None = None) -> None:
    out = file or sys.stdout
    out.write(text + "\n")
    out.flush()


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


# --- formatting (pure) -----------------------------------------------------------------------

def num(value: Any, digits: int = 4) -> str:
    """A float with `digits` decimals; `-` for None."""
    return "-" if value is None else f"{float(value):.{digits}f}"


def share(count: int, total: int) -> str:
    """`92 (46.0%)`."""
    return f"{count} ({100.0 * count / total:.1f}%)" if total else f"{count} (-)"


def duration(seconds: float | None) -> str:
    """`1h02m`, `3m05s`, `42s`; `-` for None."""
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Aligned columns: text left, numbers (and `-`) right."""
    rows = [list(r) for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def numeric(i: int) -> bool:
        return bool(rows) and all(re.fullmatch(r"-|[-+]?[\d.,]+%?|\d+ \(.*\)", r[i] or "-")
                                  for r in rows)

    right = [numeric(i) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w)
                         for c, w, r in zip(cells, widths, right, strict=True)).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def distribution(dist: Mapping[str, int]) -> tuple[str, str]:
    """(`predicted vulnerable / safe`, `actual vulnerable / safe`) with percentages."""
    pv, ps = int(dist["predicted_vulnerable"]), int(dist["predicted_safe"])
    av, as_ = int(dist["actual_vulnerable"]), int(dist["actual_safe"])
    return (f"{share(pv, pv + ps)} / {share(ps, pv + ps)}",
            f"{share(av, av + as_)} / {share(as_, av + as_)}")


#: The epoch table of `watch` and `metrics`: (header, width) - fixed, since `watch` prints a row
#: at a time.
EPOCH_COLUMNS = (("epoch", 5), ("train_loss", 10), ("val_loss", 8), ("acc", 6), ("F1", 6),
                 ("MCC", 7), ("AUC", 6), ("predicted vuln / safe", 25),
                 ("actual vuln / safe", 25))


def epoch_cells(record: Mapping[str, Any]) -> list[str]:
    """One epoch record as table cells (EPOCH_COLUMNS plus a note: best, replayed)."""
    predicted, actual = distribution(record["prediction_distribution"])
    notes = [n for n, flag in (("best", record.get("is_best")),
                               ("replayed", record.get("replayed"))) if flag]
    return [str(record["epoch"]), num(record.get("train_loss")), num(record.get("val_loss")),
            num(record["accuracy"], 3), num(record["f1"], 3), num(record["mcc"], 3),
            num(record.get("roc_auc"), 3), predicted, actual, ", ".join(notes)]


def fixed_row(cells: Sequence[str]) -> str:
    widths = [w for _, w in EPOCH_COLUMNS]
    parts = [c.rjust(w) if i < 7 else c.ljust(w)
             for i, (c, w) in enumerate(zip(cells, widths, strict=False))]
    return "  ".join([*parts, *cells[len(widths):]]).rstrip()


def epoch_header() -> str:
    return fixed_row([h for h, _ in EPOCH_COLUMNS])


def flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested objects as `parent.child` keys; lists joined with ` | ` (CSV cells)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, list):
            out[name] = " | ".join(str(v) for v in value)
        else:
            out[name] = value
    return out


def to_csv(records: Sequence[Mapping[str, Any]]) -> str:
    """The records as CSV, one row each; `epoch` and `step` first, then columns in first-seen
    order."""
    rows = [flatten(r) for r in records]
    columns: dict[str, None] = dict.fromkeys(k for k in ("epoch", "step")
                                             if any(k in row for row in rows))
    for row in rows:
        columns.update(dict.fromkeys(row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


# --- watch -------------------------------------------------------------------------------------

class WatchPrinter:
    """Turns job events into output: a tqdm bar for steps (stderr), a table row per epoch and
    its warnings, a line per status change, checkpoint and test result (stdout)."""

    def __init__(self, *, progress: bool, epochs: int | None = None,
                 out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.progress, self.epochs = progress, epochs
        self.out, self.err = out or sys.stdout, err or sys.stderr
        self.bar: Any = None
        self.header_done = False
        self.warned: set[tuple[int, str]] = set()

    def line(self, text: str, *, err: bool = False) -> None:
        """One line on stdout (stderr with `err`), above the bar if there is one."""
        file = self.err if err else self.out
        if self.bar is not None:
            from tqdm import tqdm

            tqdm.write(text, file=file)
        else:
            say(text, file)

    def handle(self, event: Event) -> None:
        d = event.data
        if event.kind == "step":
            self.step(d)
        elif event.kind == "epoch":
            if not self.header_done:
                self.line(epoch_header())
                self.header_done = True
            self.line(fixed_row(epoch_cells(d)))
            for text in d.get("warnings") or []:
                self.warned.add((int(d["epoch"]), text))
                self.line(f"      WARNING {text}")
        elif event.kind == "warning":
            if (int(d["epoch"]), d["message"]) not in self.warned:
                self.line(f"      WARNING epoch {d['epoch']}: {d['message']}")
        elif event.kind == "status":
            origin = f" (from {d['from']})" if d.get("from") else ""
            attempt = f" attempt {d['attempt']}" if d.get("attempt") and \
                "attempt" not in str(d.get("reason")) else ""
            reason = f": {d['reason']}" if d.get("reason") else ""
            self.line(f"status  {d['status']}{origin}{attempt}{reason}")
        elif event.kind == "checkpoint":
            at = f"epoch {d['epoch']}" + (f" step {d['step']}" if d.get("step") else "")
            self.line(f"checkpoint {d['name']} <- {at} ({human_bytes(d['size_bytes'])}, "
                      f"sha256 {str(d['sha256'])[:12]})")
        elif event.kind == "test":
            predicted, actual = distribution(d["prediction_distribution"])
            self.line(f"test (best epoch {d.get('best_epoch')}): acc {num(d['accuracy'], 3)}  "
                      f"F1 {num(d['f1'], 3)}  MCC {num(d['mcc'], 3)}  "
                      f"AUC {num(d.get('roc_auc'), 3)}  predicted {predicted}  actual {actual}")
        else:  # a kind newer than this client
            self.line(f"{event.kind} {json.dumps(d)[:200]}")

    def step(self, d: Mapping[str, Any]) -> None:
        if not self.progress:
            return
        from tqdm import tqdm

        total = int(d["total_steps"])
        if self.bar is None or self.bar.total != total:
            self.close()
            self.bar = tqdm(total=total, unit="step", file=self.err, dynamic_ncols=True)
        self.bar.n = int(d["step"])
        epochs = f"/{self.epochs}" if self.epochs else ""
        replayed = " (replayed)" if d.get("replayed") else ""
        self.bar.set_postfix_str(f"epoch {d['epoch']}{epochs} loss {num(d['train_loss'])} "
                                 f"lr {float(d['lr']):.2e}{replayed}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def follow(client: httpx.Client, job_id: str, args: argparse.Namespace) -> int:
    """Print the job's events until it ends; its exit code (WATCH_EXIT)."""
    jsonl = getattr(args, "jsonl", False)
    printer = WatchPrinter(progress=not (args.no_progress or jsonl))

    def notice(text: str) -> None:  # reconnects: stderr, stdout is the job's story
        printer.line(f"streamguard: {text}", err=True)

    # a server restarting now is waited for, as a dropped stream is
    job = request_patiently(client, f"/v1/jobs/{job_id}", patience_s=args.reconnect_s,
                            notice=notice)
    printer.epochs = int(job["config"]["epochs"])

    if not jsonl:
        name = f" '{job['name']}'" if job.get("name") else ""
        say(f"job {job_id}{name}: {job['status']}, model {job['config']['model']}, "
            f"{job['config']['epochs']} epoch(s)")
    follower = EventFollower(client, job_id, reconnect_s=args.reconnect_s, notice=notice)
    status = None
    try:
        for event in follower.events():
            if jsonl:
                say(json.dumps({"id": event.id, "kind": event.kind, "data": event.data}))
            else:
                printer.handle(event)
            if event.terminal:
                status = str(event.data["status"])
    finally:
        printer.close()
    assert status is not None  # the follower ends only after a terminal status
    code = WATCH_EXIT.get(status, EXIT_SERVER_ERROR)
    if not jsonl:
        say(f"job {job_id} ended {status}" + ("" if code == 0 else f" (exit code {code})"))
    return code


def add_watch_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reconnect-s", type=float, default=120.0, metavar="S",
                   help="give up when the server stays unreachable this long (default: 120)")
    p.add_argument("--no-progress", action="store_true", help="no step progress bar")
    p.add_argument("--jsonl", action="store_true",
                   help="print each event as one JSON line ({id, kind, data}) instead")


@_reporting
def cmd_watch(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        return follow(client, args.job, args)


# --- datasets ----------------------------------------------------------------------------------

def upload(client: httpx.Client, path: Path, name: str | None) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = {"name": name} if name else {}
            files = {"file": (path.name, fh, "application/x-ndjson")}
            return dict(request(client, "POST", "/v1/datasets", data=data, files=files))
    except OSError as exc:
        raise StreamGuardError(f"cannot read {path}: {exc.strerror or exc}") from None


def describe_dataset(ds: Mapping[str, Any]) -> list[str]:
    """The dataset id and its inspection, a few lines."""
    st = ds["stats"]
    rows, dup, chars = int(st["rows"]), st["duplicates"], st.get("chars")
    lines = [f"dataset {ds['id']} '{ds['name']}' ({human_bytes(ds['size_bytes'])}, "
             f"sha256 {ds['sha256'][:12]})",
             f"  rows {rows}: vulnerable {share(st['n_vulnerable'], rows)}, "
             f"safe {share(st['n_safe'], rows)}",
             f"  duplicates: {dup['rows']} rows in {dup['groups']} groups, "
             f"{dup['conflicting_groups']} with both labels"]
    if chars:
        lines.append(f"  length (chars): min {chars['min']}, median {chars['p50']}, "
                     f"p90 {chars['p90']}, p99 {chars['p99']}, max {chars['max']}")
    return lines


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
    rows = [[d["id"], d["name"], str(d["stats"]["rows"]),
             share(d["stats"]["n_vulnerable"], d["stats"]["rows"]),
             str(d["stats"]["duplicates"]["rows"]), human_bytes(d["size_bytes"]),
             d["created_at"][:19].replace("T", " ")] for d in items]
    for text in table(["id", "name", "rows", "vulnerable", "dup rows", "size", "created"], rows):
        say(text)
    if more:
        say(f"(more than {args.limit}; pass --limit)")
    return 0


def newest(client: httpx.Client, path: str, limit: int,
           params: Mapping[str, Any] | None = None) -> tuple[list[dict[str, Any]], bool]:
    """Up to `limit` items of a cursor-paged list (pages of at most PAGE); whether more
    exist."""
    if limit < 1:
        raise StreamGuardError(f"--limit {limit}: give 1 or more", field="limit")
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {**(params or {}), "limit": min(PAGE, limit - len(items))}
        if cursor:
            query["cursor"] = cursor
        page = request(client, "GET", path, params=query)
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor or len(items) >= limit:
            return items, bool(cursor)


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
        response = _post_job(client, body, headers)
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


def _post_job(client: httpx.Client, body: dict[str, Any],
              headers: dict[str, str]) -> httpx.Response:
    try:
        return check(client.post("/v1/jobs", json=body, headers=headers))
    except httpx.TransportError as exc:
        raise unreachable(str(client.base_url).rstrip("/"), exc) from None


# --- jobs, metrics, cancel ---------------------------------------------------------------------

def job_row(job: Mapping[str, Any]) -> list[str]:
    progress = job["progress"]
    best = "-" if job.get("best_metric") is None else \
        f"{job['selection_metric']} {num(job['best_metric'], 3)} (ep {job['best_epoch']})"
    outcome = (job.get("outcome_message") or "")
    outcome = outcome if len(outcome) <= 60 else outcome[:57] + "..."
    eta = duration(job.get("eta_s")) if job["status"] == "running" else "-"
    return [job["id"], job.get("name") or "-", job["status"], f"{progress['percent']:.0f}%",
            eta, best, outcome]


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


def all_metrics(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = request(client, "GET", f"/v1/jobs/{job_id}/metrics",
                       params={"offset": offset, "limit": PAGE})
        items.extend(page["items"])
        offset = page["next_offset"]
    return items


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

def extract_model(archive: Path, out: Path, *, force: bool) -> list[str]:
    """Unpack the archive's `model/` folder into `out` (files directly in it); the names."""
    with tempfile.TemporaryDirectory(dir=out, prefix=".extract-") as tmp:
        with tarfile.open(archive, mode="r:gz") as tar:
            names = tar.getnames()
            if not names or not all(n == "model" or n.startswith("model/") for n in names):
                raise StreamGuardError(f"unexpected archive layout (not under model/): "
                                       f"{names[:5]}")
            tar.extractall(tmp, filter="data")
        model = Path(tmp) / "model"
        entries = sorted(p.name for p in model.iterdir())
        clashes = [n for n in entries if (out / n).exists()]
        if clashes and not force:
            raise StreamGuardError(f"{out} already has {', '.join(clashes[:5])}; pass --force "
                                   "to replace them, or choose another --out")
        for name in entries:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            (model / name).replace(target)
    return entries


@_reporting
def cmd_download(args: argparse.Namespace) -> int:
    out = Path(args.out)
    with make_client(args) as client:
        items = request(client, "GET", f"/v1/jobs/{args.job}/checkpoints")["items"]
        chosen = next((c for c in items if c["name"] == args.checkpoint), None)
        if chosen is None:
            have = ", ".join(c["name"] for c in items) or "none yet"
            raise StreamGuardError(f"job {args.job} has no checkpoint {args.checkpoint!r} "
                                   f"(it has: {have})", field="checkpoint")
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        expected = (args.expect_sha256 or chosen["sha256"]).lower()
        partial = out / f".{args.job}-{chosen['name']}.tar.gz.partial"
        bar: Any = None
        if not args.no_progress:
            from tqdm import tqdm

            bar = tqdm(total=chosen["size_bytes"], unit="B", unit_scale=True, file=sys.stderr,
                       desc=f"{chosen['name']}.tar.gz")
        try:
            download_verified(client, f"/v1/jobs/{args.job}/checkpoints/{chosen['name']}/"
                              "download", partial, sha256=expected, size=chosen["size_bytes"],
                              on_bytes=bar.update if bar is not None else lambda _n: None)
        except VerificationFailed as exc:
            if created and not any(out.iterdir()):
                out.rmdir()
            if args.expect_sha256:
                raise
            raise VerificationFailed(exc.message + " (if the job is still running, its "
                                     "checkpoint may have been replaced meanwhile: run the "
                                     "command again)") from None
        except BaseException:
            if created and not any(out.iterdir()):
                out.rmdir()  # leave nothing behind that we made
            raise
        finally:
            if bar is not None:
                bar.close()
    try:
        if args.archive:
            target = out / f"{args.job}-{chosen['name']}.tar.gz"
            partial.replace(target)
            where = str(target)
        else:
            entries = extract_model(partial, out, force=args.force)
            where = f"{out} ({', '.join(entries)})"
    finally:
        partial.unlink(missing_ok=True)
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
