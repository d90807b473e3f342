"""`streamguard data ...`: import, inspect and synthesize datasets from the command line.

    streamguard data import-codexglue function.json --split-dir dataset/ --out data/codexglue
    streamguard data inspect data/train.jsonl data/valid.jsonl --train-tokenizer
    streamguard data synth --out data/synth --train 2000 --valid 500 --test 500

The main CLI calls `register(subparsers)`; each handler returns an exit code: 0 on success,
1 when `inspect` found bad lines, 2 on a StreamGuardError (its message goes to stderr).
Heavy imports (transformers) happen inside the handlers that need them.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamguard.errors import StreamGuardError

Handler = Callable[[argparse.Namespace], int]


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


def _reporting_errors(handler: Handler) -> Handler:
    """Turn a StreamGuardError into its message on stderr and exit code 2."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except StreamGuardError as exc:
            _err(f"streamguard: error: {exc.message}")
            return 2

    return run


def _check_file(name: str, what: str) -> None:
    """A file argument that does not exist (or is a folder) is refused by name, exit 2."""
    path = Path(name)
    if not path.exists():
        raise StreamGuardError(f"{what} {name}: no such file", field=what.lower())
    if not path.is_file():
        raise StreamGuardError(f"{what} {name}: not a file", field=what.lower())


@_reporting_errors
def import_codexglue_cmd(args: argparse.Namespace) -> int:
    """Write train/valid/test JSONL from CodeXGLUE function.json and its split index files."""
    from streamguard.datasets import import_codexglue

    _check_file(args.function_json, "FUNCTION_JSON")
    if not Path(args.split_dir).is_dir():
        raise StreamGuardError(f"--split-dir {args.split_dir}: no such folder (it holds "
                               "train.txt, valid.txt and test.txt)", field="split_dir")

    counts = import_codexglue(Path(args.function_json), Path(args.split_dir), Path(args.out))
    for split, n in counts.items():
        _out(f"{Path(args.out) / f'{split}.jsonl'}: {n:,} rows")
    return 0


def _load_tokenizer(args: argparse.Namespace) -> Any:
    if args.train_tokenizer:
        from streamguard.datasets import iter_rows
        from streamguard.tokenizer import train_bpe_tokenizer

        texts = (ex.func for _, ex, _ in iter_rows(args.files[0]) if ex is not None)
        return train_bpe_tokenizer(texts, vocab_size=8000, max_len=args.max_len)
    if args.tokenizer:
        from transformers import AutoTokenizer

        from streamguard.cli import quiet_transformers

        quiet_transformers()

        try:
            return AutoTokenizer.from_pretrained(args.tokenizer)
        except (OSError, ValueError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StreamGuardError(f"cannot load tokenizer {args.tokenizer!r}: {reason}",
                                   field="tokenizer") from exc
    return None


@_reporting_errors
def inspect_cmd(args: argparse.Namespace) -> int:
    """Print statistics of JSONL splits; exit 1 when any file has bad lines."""
    from streamguard.datasets import format_inspection, inspect_files

    if args.train_tokenizer and args.tokenizer:
        raise StreamGuardError("give --tokenizer or --train-tokenizer, not both",
                               field="tokenizer")
    for name in args.files:
        _check_file(name, "FILE")
    stats = inspect_files(args.files, tokenizer=_load_tokenizer(args), max_len=args.max_len)
    if args.train_tokenizer:
        stats["tokenizer"] = f"byte-level BPE, 8000 tokens, trained on {args.files[0]}"
    _out(json.dumps(stats, indent=2) if args.json else format_inspection(stats))
    return 1 if stats["all"]["bad_lines"] else 0


@_reporting_errors
def synth_cmd(args: argparse.Namespace) -> int:
    """Write synthetic train/valid/test JSONL (disjoint seeds and ids per split)."""
    from streamguard.synth import synth_examples, write_jsonl

    sizes = {"train": args.train, "valid": args.valid, "test": args.test}
    for k, (split, n) in enumerate(sizes.items()):
        # seed * 3 + k: a distinct generator per (seed, split), so splits do not repeat rows.
        rows = synth_examples(n, seed=args.seed * 3 + k,
                              vulnerable_fraction=args.vulnerable_fraction,
                              id_prefix=f"synth-{split}")
        path = Path(args.out) / f"{split}.jsonl"
        write_jsonl(rows, path)
        n_vuln = sum(row["target"] for row in rows)
        _out(f"{path}: {n:,} rows, {n_vuln:,} vulnerable")
    return 0


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _max_len(text: str) -> int:
    value = int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be >= 2 (room for <s> and </s>), got {value}")
    return value


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `data` command group to `subparsers` (from `parser.add_subparsers()`)."""
    data: argparse.ArgumentParser = subparsers.add_parser(
        "data", help="import, inspect and synthesize datasets",
        description="Import, inspect and synthesize datasets.")
    data_sub = data.add_subparsers(dest="data_command", metavar="{import-codexglue,inspect,synth}")

    def usage(_: argparse.Namespace) -> int:
        _err(data.format_help())
        return 2

    data.set_defaults(handler=usage)

    imp = data_sub.add_parser("import-codexglue", help="CodeXGLUE function.json -> split JSONL",
                              description=import_codexglue_cmd.__doc__)
    imp.add_argument("function_json", metavar="FUNCTION_JSON")
    imp.add_argument("--split-dir", required=True, metavar="DIR",
                     help="folder holding train.txt, valid.txt and test.txt")
    imp.add_argument("--out", required=True, metavar="DIR")
    imp.set_defaults(handler=import_codexglue_cmd)

    ins = data_sub.add_parser("inspect", help="class balance, duplicates, leakage, lengths",
                              description=inspect_cmd.__doc__)
    ins.add_argument("files", nargs="+", metavar="FILE")
    ins.add_argument("--max-len", type=_max_len, default=512,
                     help="model max length for the truncation rate (default 512)")
    ins.add_argument("--tokenizer", metavar="PATH_OR_NAME",
                     help="a saved or hub tokenizer for token lengths")
    ins.add_argument("--train-tokenizer", action="store_true",
                     help="train an 8k byte-level BPE on the first file for token lengths")
    ins.add_argument("--json", action="store_true", help="print the statistics as JSON")
    ins.set_defaults(handler=inspect_cmd)

    syn = data_sub.add_parser("synth", help="write synthetic vulnerable/safe C functions",
                              description=synth_cmd.__doc__)
    syn.add_argument("--out", required=True, metavar="DIR")
    syn.add_argument("--train", type=_count, default=2000, metavar="N")
    syn.add_argument("--valid", type=_count, default=500, metavar="N")
    syn.add_argument("--test", type=_count, default=500, metavar="N")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--vulnerable-fraction", type=_fraction, default=0.46, metavar="F")
    syn.set_defaults(handler=synth_cmd)
    return data
