"""StreamGuard: train vulnerable-code classifiers whose training cannot collapse silently, here
or on a StreamGuard server.

    streamguard train --train train.jsonl --val valid.jsonl --output-dir runs/a --model tiny
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import signal
import sys
import threading
import types
import typing
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from streamguard.cli_parser import CliParser
from streamguard.errors import StreamGuardError
from streamguard.spec import TrainConfig, parse_train_config

# Nothing heavy at module level (no torch, transformers, httpx, sqlalchemy): `streamguard --help`
# builds every subcommand's parser, and tests/unit/test_cli_polish.py holds it to that.

EXIT_CODES = {"completed": 0, "early_stopped": 0, "collapsed": 3, "non_finite_loss": 4,
              "cancelled": 5, "preempted": 6,  # 6: preempted; run again to resume
              "not_learning": 9}
EXIT_INVALID = 2
#: A command whose role's extra is not installed (`pip install 'streamguard[worker]'`).
EXIT_MISSING_EXTRA = 1
#: The extra that brings each optional top-level module (pyproject.toml).
EXTRA_OF = {"torch": "worker", "transformers": "worker", "tokenizers": "worker",
            "safetensors": "worker", "numpy": "worker", "celery": "api", "redis": "api",
            "fastapi": "api", "uvicorn": "api", "sse_starlette": "api", "multipart": "api",
            "matplotlib": "api", "boto3": "s3", "botocore": "s3", "psycopg": "postgres"}


def _field_type(annotation: Any) -> tuple[Any, list[str] | None]:
    """(argparse type, choices) for a TrainConfig field annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and args:
        annotation = args[0]
    if typing.get_origin(annotation) is typing.Literal:
        return str, [str(a) for a in typing.get_args(annotation)]
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return str, [e.value for e in annotation]
    return str, None  # pydantic parses and range-checks the text (so "nan" is refused)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training config (TrainConfig; defaults in brackets)")
    for name, info in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        # argparse %-formats help text: a literal "%" in a description must be doubled
        help_text = f"{info.description or ''} [{info.default}]".strip().replace("%", "%%")
        if info.annotation is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
            continue
        if typing.get_origin(info.annotation) is list:  # `trackers`: --tracker X, repeatable
            (item,) = typing.get_args(info.annotation)
            _, choices = _field_type(item)
            group.add_argument(flag.removesuffix("s"), flag, dest=name, action="append",
                               choices=choices, default=None,
                               help=f"{help_text} (repeat the flag for several)")
            continue
        kind, choices = _field_type(info.annotation)
        group.add_argument(flag, dest=name, type=kind, choices=choices, default=None,
                           help=help_text)


def config_fields_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given: the `--config` JSON file, then the flags (flags win); values
    are still text, for TrainConfig (`train`) or JobConfig (`submit`) to parse."""
    data: dict[str, Any] = {}
    if getattr(args, "config", None):
        data.update(read_config_file(Path(args.config)))
    for name in TrainConfig.model_fields:
        value = getattr(args, name, None)
        if value is not None:
            data[name] = value
    return data


def read_config_file(path: Path) -> dict[str, Any]:
    """The `--config` JSON object, or a StreamGuardError naming the file and the problem."""
    def bad(message: str) -> StreamGuardError:
        return StreamGuardError(f"--config {path}: {message}", field="config")

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise bad("no such file (a JSON object of TrainConfig fields)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise bad(f"cannot read it ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise bad(f"must hold a JSON object of TrainConfig fields, found {type(data).__name__}")
    return data


def check_input_files(args: argparse.Namespace, flags: Sequence[str]) -> None:
    """Each named data file exists and is a file: refused before any model is loaded."""
    for flag in flags:
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if value is None:
            continue
        path = Path(value)
        if not path.exists():
            raise StreamGuardError(f"{flag} {value}: no such file (a JSONL file of "
                                   '{"func": ..., "target": 0|1} rows)', field=flag.lstrip("-"))
        if not path.is_file():
            raise StreamGuardError(f"{flag} {value}: not a file", field=flag.lstrip("-"))


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return parse_train_config(config_fields_from_args(args))


#: Folder name of `streamguard train`'s token cache, beside the output folder by default.
CACHE_DIR_NAME = ".streamguard-cache"


def train_cache_dir(args: argparse.Namespace) -> Path | None:
    """The token cache folder: --cache-dir, else `.streamguard-cache` beside --output-dir (so
    runs/a and runs/b share runs/.streamguard-cache); None with --no-cache."""
    if args.no_cache:
        return None
    if args.cache_dir:
        return Path(args.cache_dir)
    return Path(args.output_dir).resolve().parent / CACHE_DIR_NAME


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal: a log file gets the plain per-epoch lines, no `\\r`
    frames."""
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


def quiet_transformers() -> None:
    """Our own bars and epoch lines are enough: no Hugging Face download bars. Imported here,
    not at module level: `streamguard --help` must not load transformers."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    # its retry warnings would stand beside our one-line error for an unreachable hub model
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


def train_trackers(args: argparse.Namespace, config: TrainConfig,
                   history: Any) -> list[Any]:
    """The trackers `--tracker` names: MLflow at --mlflow-uri (else the SG_TRACKERS__ settings,
    which also hold its credentials), TensorBoard under --tensorboard-dir (else
    OUTPUT_DIR/tensorboard). A tracker's failure is logged and kept in result.json's warnings;
    the run goes on."""
    if not config.trackers:
        return []
    from streamguard.settings import get_settings
    from streamguard.trackers import build_trackers

    settings = get_settings().trackers
    if args.mlflow_uri:
        settings = settings.model_copy(update={"mlflow_uri": args.mlflow_uri})
    if "mlflow" in config.trackers and not settings.mlflow_uri:
        raise StreamGuardError("--tracker mlflow needs a tracking server: pass --mlflow-uri "
                               "URI or set SG_TRACKERS__MLFLOW_URI", field="mlflow_uri")
    out = Path(args.output_dir).resolve()
    return build_trackers(
        config.trackers, settings,
        # one MLflow run per output folder: running again there resumes it
        run_key=hashlib.sha256(str(out).encode()).hexdigest()[:32], run_name=out.name,
        tensorboard_dir=Path(args.tensorboard_dir) if args.tensorboard_dir
        else out / "tensorboard",
        model_dir=out / "model", tags={"streamguard.output_dir": str(out)},
        on_failure=lambda payload: history.event("warning", payload))


def cmd_train(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    check_input_files(args, ("--train", "--val", "--test"))
    # torch and transformers only now: bad flags and missing files fail in a fraction of a second
    from contextlib import closing

    from streamguard.cli_format import train_summary
    from streamguard.sinks import FanOutSink, JsonlSink, ListSink
    from streamguard.storage import LocalArtifactStore
    from streamguard.training import run

    quiet_transformers()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = train_cache_dir(args)
    history = ListSink()
    sink = FanOutSink([JsonlSink(out / "metrics.jsonl"), history,
                       *train_trackers(args, config, history)])
    # SIGTERM (`docker stop`, a drain) only sets a flag: the loop reads it after every optimizer
    # step, saves `last` at that step and returns PREEMPTED; running again resumes from there.
    preempt = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: preempt.set())
    try:
        with closing(sink):  # a tracker's run ends (as failed) if the run raised
            result = run(config, train_path=args.train, val_path=args.val, test_path=args.test,
                         work_dir=out, sink=sink, resume=args.resume, device=args.device,
                         progress=show_progress(args), should_preempt=preempt.is_set,
                         cache=LocalArtifactStore(cache_dir) if cache_dir is not None else None)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    payload = {**result.as_dict(), "warnings": [e for k, e in history.events if k == "warning"],
               # every evaluation (mid-epoch ones too) and the grace: `streamguard guard replay`
               "evaluations": result.evaluations,
               "guard_grace_steps": (history.config or {}).get("guard_grace_steps"),
               "config": config.model_dump(mode="json"),
               "checkpoints": {n: str(out / "checkpoints" / n) for n in ("best", "last")
                               if (out / "checkpoints" / n).is_dir()},
               "model_dir": str(out / "model") if (out / "model").is_dir() else None}
    (out / "result.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    for line in train_summary(payload, result.history, out):
        print(line)
    code = EXIT_CODES[result.outcome.value]
    if result.outcome.value == "preempted":
        print(f"streamguard: {result.message}; run the same command again to resume",
              file=sys.stderr)
    elif code:
        print(f"streamguard: run ended {result.outcome.value}: {result.message}", file=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    from streamguard.version import package_version

    parser = CliParser(
        prog="streamguard", description=" ".join(__doc__.split("\n")[:2]),
        epilog="`streamguard COMMAND --help` lists a command's flags. Exit codes: 0 done, 2 "
               "invalid input, 3 collapsed, 9 not learning (all of them: README.md, docs/cli.md).")
    parser.add_argument("--version", action="version",
                        version=f"streamguard {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a collapse-guarded classifier on JSONL splits")
    p.add_argument("--train", required=True, help="training split (JSONL: func, target)")
    p.add_argument("--val", required=True, help="validation split (model selection)")
    p.add_argument("--test", default=None, help="test split, evaluated with the best checkpoint")
    p.add_argument("--output-dir", required=True, help="metrics.jsonl, result.json, checkpoints/")
    p.add_argument("--config", default=None, help="JSON file of TrainConfig fields (flags win)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if present)")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="start over even if OUTPUT_DIR/checkpoints/last exists")
    p.add_argument("--no-progress", action="store_true",
                   help="no per-epoch progress bar (there is none unless stderr is a terminal)")
    p.add_argument("--cache-dir", default=None,
                   help="token cache: the trained scratch tokenizer and token ids, reused by "
                        f"runs on the same files [OUTPUT_DIR/../{CACHE_DIR_NAME}]")
    p.add_argument("--no-cache", action="store_true",
                   help="prepare the data afresh and keep nothing in the token cache")
    p.add_argument("--mlflow-uri", default=None,
                   help="MLflow tracking server for --tracker mlflow [SG_TRACKERS__MLFLOW_URI]; "
                        "credentials: SG_TRACKERS__MLFLOW_USERNAME/_PASSWORD/_TOKEN")
    p.add_argument("--tensorboard-dir", default=None,
                   help="event files of --tracker tensorboard [OUTPUT_DIR/tensorboard]")
    add_config_flags(p)
    p.set_defaults(handler=cmd_train)

    import importlib
    import importlib.util

    # Each module adds its subcommands: data tools, service (db, keys, up), the API server,
    # the remote client (datasets, submit, jobs, watch, metrics, cancel, download), the job
    # report, the guard's replay and predictions.
    for name in ("cli_data", "cli_service", "cli_api", "cli_remote", "cli_report", "cli_guard",
                 "cli_predict"):
        if importlib.util.find_spec(f"streamguard.{name}"):
            importlib.import_module(f"streamguard.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except StreamGuardError as exc:
        print(f"streamguard: error: {exc.message}", file=sys.stderr)
        return EXIT_INVALID
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        if exc.filename is None:  # not about a path the user gave: a bug, keep the traceback
            raise
        print(f"streamguard: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_INVALID
    except ModuleNotFoundError as exc:
        extra = EXTRA_OF.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"streamguard: error: `streamguard {args.command}` needs {exc.name}, which this "
              f"installation lacks: pip install 'streamguard[{extra}]' (or [all])",
              file=sys.stderr)
        return EXIT_MISSING_EXTRA


if __name__ == "__main__":
    sys.exit(main())
