"""How the remote client's commands print: pure functions of the API's JSON records (numbers,
durations, sizes, aligned tables, the fixed-width epoch rows of `watch` and `metrics`, job and
dataset rows, CSV) and `say`, the flushed line they all print through.

The commands are in `streamguard/cli_remote.py`; the live `watch` output in
`streamguard/cli_watch.py`.
"""

from __future__ import annotations

import csv
import io
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO


def say(text: str = "", file: TextIO | None = None) -> None:
    """One line on stdout (or `file`), flushed at once."""
    out = file or sys.stdout
    out.write(text + "\n")
    out.flush()


# --- numbers and tables ------------------------------------------------------------------------

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


# --- epochs ------------------------------------------------------------------------------------

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


# --- CSV ---------------------------------------------------------------------------------------

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


# --- jobs and datasets -------------------------------------------------------------------------

def job_row(job: Mapping[str, Any]) -> list[str]:
    progress = job["progress"]
    best = "-" if job.get("best_metric") is None else \
        f"{job['selection_metric']} {num(job['best_metric'], 3)} (ep {job['best_epoch']})"
    outcome = (job.get("outcome_message") or "")
    outcome = outcome if len(outcome) <= 60 else outcome[:57] + "..."
    eta = duration(job.get("eta_s")) if job["status"] == "running" else "-"
    return [job["id"], job.get("name") or "-", job["status"], f"{progress['percent']:.0f}%",
            eta, best, outcome]


def dataset_row(ds: Mapping[str, Any]) -> list[str]:
    """One dataset of `datasets list` as table cells."""
    return [ds["id"], ds["name"], str(ds["stats"]["rows"]),
            share(ds["stats"]["n_vulnerable"], ds["stats"]["rows"]),
            str(ds["stats"]["duplicates"]["rows"]), human_bytes(ds["size_bytes"]),
            ds["created_at"][:19].replace("T", " ")]



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


# --- a local run (`streamguard train`) ---------------------------------------------------------

def train_summary(result: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
                  out_dir: Any) -> list[str]:
    """What `streamguard train` prints last: the epoch table, then the result, the best
    epoch's metric, the best checkpoint and the model folder (from its `result.json` payload)."""
    lines = ["", epoch_header(), *(fixed_row(epoch_cells(r)) for r in history)] if history \
        else []
    metric = (result.get("config") or {}).get("selection_metric", "f1")
    best = result.get("best_epoch")
    best_text = "-" if best is None else \
        f"epoch {best}, {metric} {num(result.get('best_metric'), 4)}"
    checkpoints = result.get("checkpoints") or {}
    rows = [("outcome", f"{result['outcome']}: {result['message']}"),
            ("best", best_text),
            ("best checkpoint", checkpoints.get("best") or "- (no epoch passed the guard)"),
            ("model", result.get("model_dir") or "-"),
            ("metrics", f"{out_dir}/metrics.jsonl, {out_dir}/result.json")]
    test = result.get("test_metrics")
    if test:
        rows.insert(2, ("test", f"acc {num(test.get('accuracy'), 3)}  F1 {num(test.get('f1'), 3)}"
                                f"  MCC {num(test.get('mcc'), 3)} (best checkpoint)"))
    width = max(len(k) for k, _ in rows)
    return [*lines, "", *(f"{k + ':':<{width + 1}} {v}" for k, v in rows)]
