"""The data layer: read, check, inspect and import CodeXGLUE-style defect-detection JSONL.

One row per line, a JSON object with `func` (the C function, a non-empty string) and `target`
(0 = safe, 1 = vulnerable; JSON true/false are accepted too). Other fields (`id`, `project`,
`idx`, `commit_id`, ...) are kept in `Example.extra`.

Reading validates every line and fails once, listing the first offenders by line number, so a
broken file is fixed in one pass rather than one error per run. `inspect_files` reports the same
problems without raising, plus the numbers worth knowing before training: class balance,
duplicate and conflicting functions, cross-split leakage, and length percentiles.

Standard library only at import time: this module is used by the API and CLI, which must not pay
for torch. A tokenizer, when one is passed, is duck-typed.

    streamguard data inspect ../shared/data/devign/train.jsonl --train-tokenizer
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from streamguard.errors import DataError

CLASS_NAMES = ("safe", "vulnerable")
ACCEPTED_LABELS = "0, 1, true or false"
PERCENTILES = (50, 90, 99)
SPLITS = ("train", "valid", "test")
_MAX_REPORTED = 10  # problems listed per file by inspect_files and the split-index reader
_TOKENIZE_BATCH = 1000  # texts per tokenizer call: big enough for the Rust side to parallelize

_JSON_TYPE_NAMES = {dict: "an object", list: "an array", str: "a string", int: "a number",
                    float: "a number", bool: "a boolean", type(None): "null"}


@dataclass(frozen=True)
class Example:
    """One labelled function: `target` 0 = safe, 1 = vulnerable; `extra` holds the other fields."""

    func: str
    target: int
    extra: dict[str, Any] = field(default_factory=dict)


# --- validation of one row ---------------------------------------------------------------------

def _json_type(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _shown(value: Any, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_label(value: Any) -> int | None:
    """0/1 for an accepted label (0, 1, true, false), None for anything else (1.0 and "1" too)."""
    if isinstance(value, bool):
        return int(value)
    if type(value) is int and value in (0, 1):
        return value
    return None


def check_row(obj: Any) -> tuple[Example | None, str | None]:
    """Validate one decoded row: (Example, None) when good, (None, reason) when not."""
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, found {_json_type(obj)}"
    reasons = []
    func = obj.get("func")
    if "func" not in obj:
        reasons.append("missing field `func` (the function source, a string)")
    elif not isinstance(func, str):
        reasons.append(f"field `func` must be a string, found {_json_type(func)}")
    elif not func.strip():
        reasons.append("field `func` is empty or whitespace only")
    label = parse_label(obj.get("target"))
    if "target" not in obj:
        reasons.append(f"missing field `target` (the label: {ACCEPTED_LABELS})")
    elif label is None:
        found = obj["target"]
        reasons.append(f"field `target` must be {ACCEPTED_LABELS}; "
                       f"found {_shown(found)} ({_json_type(found)})")
    if reasons:
        return None, "; ".join(reasons)
    extra = {k: v for k, v in obj.items() if k not in ("func", "target")}
    return Example(func=func, target=label, extra=extra), None  # type: ignore[arg-type]


# --- reading files -----------------------------------------------------------------------------

def _open_error(path: Path, exc: OSError) -> DataError:
    why = exc.strerror or type(exc).__name__
    return DataError(str(path), [(0, f"cannot read the file: {why}")],
                     summary=f"{path}: cannot read the file")


def iter_rows(path: str | Path) -> Iterator[tuple[int, Example | None, str | None]]:
    """Yield (1-based line number, Example or None, problem or None) for every line of a JSONL file.

    Blank lines at the end of the file are skipped; a blank line followed by more rows is a
    problem. Raises DataError only when the file cannot be opened.
    """
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise _open_error(path, exc) from exc
    with handle:
        blanks: list[int] = []  # reported only once a non-blank line follows them
        for lineno, raw in enumerate(handle, start=1):
            if not raw.strip():
                blanks.append(lineno)
                continue
            for blank in blanks:
                yield blank, None, "blank line between rows"
            blanks.clear()
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                yield lineno, None, f"not valid UTF-8 (byte {exc.start + 1})"
                continue
            except json.JSONDecodeError as exc:
                yield lineno, None, f"invalid JSON ({exc.msg} at column {exc.colno})"
                continue
            except RecursionError:  # e.g. 100k nested `[`: the decoder recurses per level
                yield lineno, None, "invalid JSON (arrays/objects nested too deeply)"
                continue
            example, problem = check_row(obj)
            yield lineno, example, problem


def read_examples(path: str | Path, *, max_problems: int = 10) -> list[Example]:
    """Read and validate every row of a JSONL file.

    Raises:
        DataError: the file is missing, empty, or has bad lines; `problems` lists the first
            `max_problems` (line number, reason) pairs and `total` counts them all.
    """
    examples: list[Example] = []
    problems: list[tuple[int, str]] = []
    n_bad = 0
    for lineno, example, problem in iter_rows(path):
        if problem is not None:
            n_bad += 1
            if len(problems) < max_problems:
                problems.append((lineno, problem))
        elif example is not None:
            examples.append(example)
    if n_bad:
        raise DataError(str(path), problems, total=n_bad)
    if not examples:
        why = "the file holds no rows (it is empty or only blank lines)"
        raise DataError(str(path), [(0, why)], summary=f"{path}: no examples")
    return examples


def label_counts(examples: Iterable[Example]) -> list[int]:
    """[n_safe, n_vulnerable]."""
    counts = [0, 0]
    for example in examples:
        counts[example.target] += 1
    return counts


def check_split(examples: Sequence[Example], path: str | Path, *,
                require_both_classes: bool = True) -> None:
    """Raise DataError when a split is empty or (by default) holds one class only."""
    if not examples:
        raise DataError(str(path), [(0, "the split holds no examples")],
                        summary=f"{path}: empty split")
    counts = label_counts(examples)
    if require_both_classes and 0 in counts:
        present = 0 if counts[0] else 1
        why = (f"only class {present} ({CLASS_NAMES[present]}) present: "
               "a classifier split needs both classes")
        raise DataError(str(path), [(0, why)], summary=f"{path}: one class only")


# --- inspection --------------------------------------------------------------------------------

def percentiles(values: Sequence[int]) -> dict[str, int] | None:
    """min, p50, p90, p99 and max by the nearest-rank method (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    stats = {"min": ordered[0]}
    for p in PERCENTILES:
        stats[f"p{p}"] = ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]
    stats["max"] = ordered[-1]
    return stats


def _duplicates(labels_by_func: dict[str, list[int]]) -> dict[str, int]:
    groups = [labels for labels in labels_by_func.values() if len(labels) > 1]
    return {"rows": sum(len(g) for g in groups), "groups": len(groups),
            "conflicting_groups": sum(1 for g in groups if len(set(g)) > 1)}


def token_lengths(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Token count of each text, special tokens included, tokenized in batches (no truncation)."""
    lengths: list[int] = []
    for start in range(0, len(texts), _TOKENIZE_BATCH):
        batch = list(texts[start:start + _TOKENIZE_BATCH])
        # verbose=False: lengths over model_max_length are what we measure, not a mistake.
        encoded = tokenizer(batch, add_special_tokens=True, verbose=False,
                            return_attention_mask=False)
        lengths.extend(len(ids) for ids in encoded["input_ids"])
    return lengths


def _inspect_one(path: Path, tokenizer: Any, max_len: int
                 ) -> tuple[dict[str, Any], dict[str, list[int]]]:
    labels_by_func: dict[str, list[int]] = {}
    problems: list[list[Any]] = []
    n_bad = 0
    counts = [0, 0]
    try:
        for lineno, example, problem in iter_rows(path):
            if problem is not None:
                n_bad += 1
                if len(problems) < _MAX_REPORTED:
                    problems.append([lineno, problem])
            elif example is not None:
                counts[example.target] += 1
                labels_by_func.setdefault(example.func, []).append(example.target)
    except DataError as exc:  # unreadable file: reported, not raised
        n_bad, problems = 1, [[0, exc.problems[0][1]]]
    rows = counts[0] + counts[1]
    lengths = [len(func) for func, labels in labels_by_func.items() for _ in labels]
    stats: dict[str, Any] = {
        "path": str(path), "rows": rows, "n_safe": counts[0], "n_vulnerable": counts[1],
        "vulnerable_fraction": round(counts[1] / rows, 4) if rows else None,
        "bad_lines": n_bad, "problems": problems,
        "duplicates": _duplicates(labels_by_func), "chars": percentiles(lengths),
    }
    if tokenizer is not None:
        # Tokenize each distinct text once, then count it as often as it occurs.
        per_text = token_lengths(tokenizer, list(labels_by_func))
        tokens = [n for n, labels in zip(per_text, labels_by_func.values(), strict=True)
                  for _ in labels]
        over = sum(1 for n in tokens if n > max_len)
        stats["tokens"] = {**(percentiles(tokens) or {}), "max_len": max_len, "truncated": over,
                           "truncated_fraction": round(over / len(tokens), 4) if tokens else None}
    return stats, labels_by_func


def inspect_files(paths: Sequence[str | Path], *, tokenizer: Any = None,
                  max_len: int = 512) -> dict[str, Any]:
    """Statistics of JSONL splits as JSON-native data; bad lines are reported, not raised.

    Args:
        paths: the split files, e.g. train and valid.
        tokenizer: optional `PreTrainedTokenizerFast`; adds token-length percentiles and the
            fraction of functions longer than `max_len` tokens (special tokens included).
        max_len: the model's maximum sequence length.
    """
    files, funcs_by_file = [], []
    pooled: dict[str, list[int]] = {}
    for path in paths:
        stats, labels_by_func = _inspect_one(Path(path), tokenizer, max_len)
        files.append(stats)
        funcs_by_file.append(labels_by_func)
        for func, labels in labels_by_func.items():
            pooled.setdefault(func, []).extend(labels)
    cross = []
    for (i, a), (j, b) in combinations(enumerate(funcs_by_file), 2):
        small, large = (a, b) if len(a) <= len(b) else (b, a)
        shared = sum(1 for func in small if func in large)
        cross.append({"a": files[i]["path"], "b": files[j]["path"], "shared_functions": shared})
    total = {key: sum(f[key] for f in files) for key in ("rows", "n_safe", "n_vulnerable",
                                                         "bad_lines")}
    total["duplicates"] = _duplicates(pooled)
    name = None
    if tokenizer is not None:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    return {"files": files, "cross_file_duplicates": cross, "all": total, "max_len": max_len,
            "tokenizer": name}


def format_inspection(stats: dict[str, Any]) -> str:
    """A readable report of `inspect_files` output."""
    out: list[str] = []
    for f in stats["files"]:
        frac = f["vulnerable_fraction"]
        out.append(f"{f['path']}")
        out.append(f"  rows {f['rows']:,}: {f['n_safe']:,} safe, {f['n_vulnerable']:,} vulnerable"
                   + (f" ({frac:.2%} vulnerable)" if frac is not None else ""))
        if f["bad_lines"]:
            out.append(f"  BAD LINES: {f['bad_lines']:,}")
            out.extend(f"    line {n}: {why}" if n else f"    {why}" for n, why in f["problems"])
        d = f["duplicates"]
        out.append(f"  duplicate functions: {d['rows']:,} rows in {d['groups']:,} groups, "
                   f"{d['conflicting_groups']:,} with conflicting labels")
        if f["chars"]:
            out.append("  characters: " + _format_pcts(f["chars"]))
        if "tokens" in f and f["tokens"].get("max"):
            t = f["tokens"]
            out.append("  tokens:     " + _format_pcts(t))
            out.append(f"  truncated at {t['max_len']} tokens: {t['truncated']:,} "
                       f"({t['truncated_fraction']:.1%})")
    if stats["cross_file_duplicates"]:
        out.append("leakage (identical functions in two files):")
        for c in stats["cross_file_duplicates"]:
            flag = "" if c["shared_functions"] == 0 else "  <-- LEAKAGE"
            out.append(f"  {c['a']} & {c['b']}: {c['shared_functions']:,}{flag}")
        d = stats["all"]["duplicates"]
        out.append(f"all files: {stats['all']['rows']:,} rows; {d['groups']:,} duplicate groups, "
                   f"{d['conflicting_groups']:,} with conflicting labels")
    return "\n".join(out)


def _format_pcts(p: dict[str, int]) -> str:
    return "  ".join(f"{k} {p[k]:,}" for k in ("min", "p50", "p90", "p99", "max"))


# --- writing and the official CodeXGLUE split --------------------------------------------------

def write_jsonl(rows: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write rows as UTF-8 JSONL (one object a line, `\\n` ends); returns the row count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)  # readers never see a half-written file
    return n


def read_split_indices(path: str | Path, *, n_functions: int | None = None) -> list[int]:
    """The integer idx values of a CodeXGLUE split file (one a line), validated.

    Raises:
        DataError: a line is not an integer, an idx repeats, or (given `n_functions`) an idx is
            out of range; the problems name the line.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)
        raise DataError(str(path), [(0, f"cannot read the split file: {why}")],
                        summary=f"{path}: cannot read the split file") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    indices: list[int] = []
    seen: dict[int, int] = {}
    problems: list[tuple[int, str]] = []
    for lineno, line in enumerate(lines, start=1):
        text = line.strip()
        if not text.isdigit():
            problems.append((lineno, f"expected a non-negative integer idx, found {text!r}"))
            continue
        idx = int(text)
        if n_functions is not None and idx >= n_functions:
            problems.append((lineno, f"idx {idx} is out of range: function.json has "
                                     f"{n_functions:,} entries (idx 0 to {n_functions - 1})"))
        elif idx in seen:
            problems.append((lineno, f"idx {idx} is repeated (first at line {seen[idx]})"))
        else:
            seen[idx] = lineno
            indices.append(idx)
    if problems:
        raise DataError(str(path), problems[:_MAX_REPORTED], total=len(problems))
    return indices


def import_codexglue(function_json: Path, split_dir: Path, out_dir: Path) -> dict[str, int]:
    """Turn CodeXGLUE `function.json` plus `{train,valid,test}.txt` into `out_dir/<split>.jsonl`.

    Each output row is `{"idx": i, **function_json[i]}` with `target` normalized to 0/1. Nothing
    is written unless every input is valid. Returns the row count per split.

    Raises:
        DataError: function.json is not an array of valid rows, or a split file has a bad line,
            an idx out of range, or an idx that is already in another split.
    """
    function_json, split_dir, out_dir = Path(function_json), Path(split_dir), Path(out_dir)
    try:
        entries = json.loads(function_json.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _open_error(function_json, exc) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(str(function_json), [(0, f"not a JSON document: {exc}")],
                        summary=f"{function_json}: invalid JSON") from exc
    if not isinstance(entries, list):
        raise DataError(str(function_json), [(0, f"expected a JSON array of objects, found "
                                                 f"{_json_type(entries)}")],
                        summary=f"{function_json}: not an array")
    rows: list[dict[str, Any]] = []
    problems: list[tuple[int, str]] = []
    for i, entry in enumerate(entries):
        example, problem = check_row(entry)
        if problem is not None:
            problems.append((0, f"idx {i}: {problem}"))
        else:
            rows.append({"idx": i, **entry, "target": example.target})  # type: ignore[union-attr]
    if problems:
        n = len(problems)
        raise DataError(str(function_json), problems[:_MAX_REPORTED], total=n,
                        summary=f"{function_json}: {n} bad entr{'y' if n == 1 else 'ies'}")

    owner: dict[int, tuple[str, int]] = {}  # idx -> (split file name, line)
    splits: dict[str, list[int]] = {}
    for split in SPLITS:
        path = split_dir / f"{split}.txt"
        indices = read_split_indices(path, n_functions=len(rows))
        # read_split_indices raised on any bad line, so indices[k] sits on line k + 1.
        clashes = [(n, f"idx {idx} is already in {owner[idx][0]} line {owner[idx][1]}: "
                       "a function belongs to one split only")
                   for n, idx in enumerate(indices, start=1) if idx in owner]
        if clashes:
            raise DataError(str(path), clashes[:_MAX_REPORTED], total=len(clashes))
        owner.update((idx, (path.name, n)) for n, idx in enumerate(indices, start=1))
        splits[split] = indices
    return {split: write_jsonl((rows[i] for i in indices), out_dir / f"{split}.jsonl")
            for split, indices in splits.items()}
