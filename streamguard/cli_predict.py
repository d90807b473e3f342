"""`streamguard predict`: score functions with a trained model, JSONL out.

    streamguard predict --model runs/demo/checkpoints/best valid.jsonl --out scored.jsonl
    streamguard predict --model job:0123...cdef src/parse.c src/util.c        # a server's job
    streamguard predict --model ./exported --device cuda --batch-size 64 a.jsonl b.jsonl

Inputs: JSONL files (`.jsonl`, `.ndjson`; one object per line with a string `func`; every other
field, `id` included, is copied to the output) and C/C++ sources (`.c`, `.cc`, `.cpp`, `.cxx`,
`.h`, `.hh`, `.hpp`: the whole file is one function; the output row names its `file`). Every
input is read and checked before the model loads; a bad line is reported by file and line.
Output rows: the input's fields + `probability` (of "vulnerable"), `label` (0/1, at the model's
threshold), `label_name` and `threshold`, to `--out` or stdout; a progress bar on stderr.

`--model job:ID` downloads the job's best checkpoint through the API (`--url`, `--api-key`,
as the other client commands), verifies its sha256, and keeps it in the cache
(`$STREAMGUARD_CACHE_DIR` or `~/.cache/streamguard`) under the job id and sha256: a second run
against the same checkpoint downloads nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from streamguard.errors import DataError, StreamGuardError

JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson"})
SOURCE_SUFFIXES = frozenset({".c", ".cc", ".cpp", ".cxx", ".h", ".hh", ".hpp"})
JOB_MODEL_RE = re.compile(r"^job:([0-9a-f]{32})$")
#: Bad lines listed per file before "... and N more".
MAX_REPORTED = 10


def register(sub: Any) -> None:
    """Add `predict` to the `streamguard` subcommands."""
    from streamguard.remote import add_remote_flags

    p = sub.add_parser("predict", help="score functions with a trained model (JSONL out)")
    p.add_argument("--model", required=True,
                   help="a model directory (exported model or checkpoint folder) or job:ID "
                        "(that job's best checkpoint, downloaded from the server)")
    p.add_argument("inputs", nargs="+", metavar="FILE",
                   help="JSONL files (rows with `func`) or C/C++ files (one function each)")
    p.add_argument("--out", default=None, help="output JSONL file (default: stdout)")
    p.add_argument("--batch-size", type=int, default=32, help="functions per forward pass")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_remote_flags(p)
    p.set_defaults(handler=cmd_predict)


# --- inputs -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class InputRow:
    """What to score (`func`) and the fields its output row starts with."""

    fields: dict[str, Any]
    func: str


def read_inputs(paths: list[str]) -> list[InputRow]:
    """Every input row, in order: a JSONL row keeps all its fields, a source file its name.

    Raises:
        DataError: unreadable files, unsupported suffixes, or bad JSONL lines (file and line).
    """
    rows: list[InputRow] = []
    for name in paths:
        path = Path(name)
        suffix = path.suffix.lower()
        if suffix not in JSONL_SUFFIXES | SOURCE_SUFFIXES:
            accepted = ", ".join(sorted(JSONL_SUFFIXES | SOURCE_SUFFIXES))
            raise DataError(name, [], summary=f"{name}: unsupported file type {suffix!r}; "
                                              f"accepted: {accepted}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(name, [], summary=f"{name}: cannot read: {exc.strerror}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(name, [], summary=f"{name}: not UTF-8 text (byte "
                                              f"{exc.start})") from None
        if suffix in SOURCE_SUFFIXES:
            if not text.strip():
                raise DataError(name, [], summary=f"{name}: the file is empty")
            rows.append(InputRow({"file": name}, text))
        else:
            rows.extend(parse_jsonl(text, name))
    return rows


def parse_jsonl(text: str, name: str) -> list[InputRow]:
    """The objects of a JSONL text; DataError listing each bad line (1-based) otherwise."""
    rows: list[InputRow] = []
    problems: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append((number, f"not JSON ({exc.msg} at column {exc.colno})"))
            continue
        except ValueError as exc:  # e.g. an integer too long to convert
            problems.append((number, f"not JSON ({exc})"))
            continue
        if not isinstance(row, dict):
            problems.append((number, f"a JSON {type(row).__name__}, expected an object "
                                     "with a string `func`"))
        elif not isinstance(row.get("func"), str):
            problems.append((number, "no string `func` (the function's source text)"))
        elif not _is_unicode(row["func"]):
            problems.append((number, "`func` is not valid Unicode text (a lone surrogate "
                                     "escape such as \\ud800)"))
        else:
            rows.append(InputRow(row, row["func"]))
    if problems:
        raise DataError(name, problems[:MAX_REPORTED], total=len(problems))
    if not rows:
        raise DataError(name, [], summary=f"{name}: no rows (expected one JSON object with a "
                                          "string `func` per line)")
    return rows


def _is_unicode(text: str) -> bool:
    """Whether `text` encodes to UTF-8 (JSON may escape lone surrogates; tokenizers refuse them)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- the model --------------------------------------------------------------------------------

def cache_root() -> Path:
    """Where downloaded checkpoints are kept: $STREAMGUARD_CACHE_DIR or ~/.cache/streamguard."""
    configured = os.environ.get("STREAMGUARD_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "streamguard"


def fetch_job_model(args: argparse.Namespace, job_id: str, *, progress: bool) -> Path:
    """The job's best checkpoint as a model folder in the cache, downloaded (sha256-verified)
    unless the cache has that exact checkpoint already."""
    from streamguard.cli_download import extract_model, fetch_checkpoint
    from streamguard.remote import make_client, request

    with make_client(args) as client:
        items = request(client, "GET", f"/v1/jobs/{job_id}/checkpoints")["items"]
        best = next((c for c in items if c["name"] == "best"), None)
        if best is None:
            raise StreamGuardError(f"job {job_id} has no best checkpoint yet (it has: "
                                   f"{', '.join(c['name'] for c in items) or 'none'}); "
                                   "predictions need a job that finished with a model")
        sha = str(best["sha256"]).lower()
        folder = cache_root() / "models" / f"{job_id}-{sha[:16]}"
        if (folder / "config.json").is_file():
            return folder
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".download-") as tmp:
            _, _, partial = fetch_checkpoint(client, job_id, "best", Path(tmp),
                                             expect_sha256=sha, progress=progress)
            unpacked = Path(tmp) / "model"
            unpacked.mkdir()
            extract_model(partial, unpacked, force=False)
            shutil.rmtree(folder, ignore_errors=True)
            unpacked.replace(folder)
    return folder


def resolve_model(args: argparse.Namespace, *, progress: bool) -> Path:
    match = JOB_MODEL_RE.match(args.model)
    if match:
        return fetch_job_model(args, match.group(1), progress=progress)
    if args.model.startswith("job:"):
        raise StreamGuardError(f"--model {args.model!r}: a job is named job:<32 hex characters>"
                               " (its best checkpoint)")
    folder = Path(args.model)
    if not (folder / "config.json").is_file():
        raise StreamGuardError(f"--model {args.model!r} is not a model directory (no "
                               "config.json); pass an exported model, a checkpoint folder, or "
                               "job:ID")
    return folder


# --- the command ------------------------------------------------------------------------------

@contextmanager
def open_output(out: str | None) -> Iterator[IO[str]]:
    if out is None:
        yield sys.stdout
        return
    with open(out, "w", encoding="utf-8") as handle:
        yield handle


def cmd_predict(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise StreamGuardError(f"--batch-size {args.batch_size}: allowed 1 or more")
    rows = read_inputs(args.inputs)  # before any download or model load: fail fast
    progress = not args.no_progress and sys.stderr.isatty()  # no `\r` frames in a log file
    model_dir = resolve_model(args, progress=progress)

    from streamguard.cli import quiet_transformers
    from streamguard.predict import Predictor

    quiet_transformers()
    predictor = Predictor(model_dir, device=args.device, batch_size=args.batch_size)
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(rows), unit="fn", file=sys.stderr, desc="predict")
    try:
        predictions = predictor.predict([row.func for row in rows],
                                        on_batch=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    with open_output(args.out) as out:
        for row, pred in zip(rows, predictions, strict=True):
            out.write(json.dumps({**row.fields, **pred.as_dict(),
                                  "threshold": predictor.threshold}) + "\n")
    return 0
