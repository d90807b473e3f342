"""A picture of a job: loss and score curves and the prediction distribution in one figure.

One renderer for three callers: `GET /v1/jobs/{id}/report.png` (the API gathers the records
from its services), `streamguard report JOB` (pages through the API with `collect_remote`) and
`streamguard report --from-dir OUT` (a local `streamguard train` run, `collect_local`). Its
input is always the API's own JSON shapes: `JobRead`, `EpochMetricRead` items, `StepMetricRead`
items and the `data` of `warning` events, so a remote client and the server draw the same thing.

    png = render_png(collect_remote(client, job_id))

Matplotlib is imported only when a figure is drawn (the CLI starts without it) and only through
`matplotlib.figure.Figure` with the Agg canvas: no pyplot global state, so concurrent renders in
the API's threadpool never share a figure.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from streamguard.errors import StreamGuardError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Statuses that end a job other than by running all its epochs: the figure says why.
STOPPED = {"collapsed", "not_learning", "early_stopped", "non_finite_loss", "failed", "cancelled",
           "timed_out", "preempted"}
CLASSES = (("vulnerable", "tab:red"), ("safe", "tab:blue"))
SCORES = (("f1", "F1 (vulnerable)"), ("accuracy", "accuracy"), ("mcc", "MCC"),
          ("roc_auc", "ROC-AUC"))
#: The HTML page loads nothing: its one image is inline, its style in the page.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
PAGE = {"metrics": 200, "steps": 2000, "events": 200}  # the API's page-size limits


class ReportError(StreamGuardError):
    """The records for a report could not be read (the message quotes the server or file)."""

    code = "report_error"


@dataclass
class ReportData:
    """Everything a report draws, in the API's JSON shapes (plain dicts)."""

    job: dict[str, Any]  # JobRead (only id, name, status, outcome_message, best_epoch, config)
    epochs: list[dict[str, Any]] = field(default_factory=list)  # EpochMetricRead, by epoch
    steps: list[dict[str, Any]] = field(default_factory=list)  # StepMetricRead, by step
    warnings: list[dict[str, Any]] = field(default_factory=list)  # WarningPayload


# --- gathering -----------------------------------------------------------------------------------

def _get(client: httpx.Client, path: str, params: dict[str, Any] | None = None) -> Any:
    try:
        response = client.get(path, params=params)
    except httpx.HTTPError as exc:
        raise ReportError(f"cannot reach the server at {client.base_url}: {exc}") from None
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200] or response.reason_phrase
        raise ReportError(f"GET {path}: HTTP {response.status_code}: {message}")
    return response.json()


def _pages(client: httpx.Client, path: str, param: str, cursor_key: str,
           limit: int) -> Iterator[dict[str, Any]]:
    """Every item of a paged list; stops if a cursor does not move (never loops forever)."""
    cursor: int | None = 0
    while cursor is not None:
        page = _get(client, path, {param: cursor, "limit": limit})
        yield from page["items"]
        after = page.get(cursor_key)
        cursor = after if after is not None and after > cursor else None


def collect_remote(client: httpx.Client, job_id: str) -> ReportData:
    """The job, every epoch and step record and every warning event, from the API.

    Raises:
        ReportError: the server answered an error (its `error.message` is quoted) or is down.
    """
    base = f"/v1/jobs/{job_id}"
    try:
        job = _get(client, base)
        epochs = list(_pages(client, f"{base}/metrics", "offset", "next_offset",
                             PAGE["metrics"]))
        steps = list(_pages(client, f"{base}/steps", "after_step", "next_after_step",
                            PAGE["steps"]))
        warnings = [e["data"] for e in _pages(client, f"{base}/events/history", "after_id",
                                              "next_after_id", PAGE["events"])
                    if e.get("kind") == "warning"]
    except (KeyError, TypeError, ValueError) as exc:  # ValueError: a body that is not JSON
        raise ReportError(f"{client.base_url} answered in an unexpected shape ({exc!r}); is "
                          "it a StreamGuard server?") from None
    return ReportData(job=dict(job), epochs=epochs, steps=steps, warnings=warnings)


def _json_file(path: Path) -> Any:
    try:
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read {path}: {exc}") from None


def collect_local(output_dir: str | Path) -> ReportData:
    """A `streamguard train --output-dir` run: metrics.jsonl, steps.jsonl and result.json.

    The trainer's epoch records are the API's shape except the confusion matrix (rows there),
    which no chart reads. Without result.json (a run still going, or killed) the status is
    `running`.
    """
    out = Path(output_dir)
    if not out.is_dir():
        raise ReportError(f"{out} is not a directory; pass the --output-dir of a "
                          "`streamguard train` run")
    found = {name: _json_file(out / name) if (out / name).is_file() else None
             for name in ("metrics.jsonl", "steps.jsonl", "result.json")}
    epochs, steps = found["metrics.jsonl"] or [], found["steps.jsonl"] or []
    result = found["result.json"] or {}
    if not (epochs or steps or result):
        raise ReportError(f"{out} holds no metrics.jsonl, steps.jsonl or result.json; pass "
                          "the --output-dir of a `streamguard train` run")
    job = {"id": str(out), "name": out.name, "status": result.get("outcome", "running"),
           "outcome_message": result.get("message"), "best_epoch": result.get("best_epoch"),
           "config": result.get("config") or {}}
    return ReportData(job=job, epochs=epochs, steps=steps,
                      warnings=list(result.get("warnings") or []))


# --- text shared by the figure and the HTML -------------------------------------------------------

def _num(value: Any) -> float:
    """A finite float, or NaN (a gap in a curve) for null, non-numbers and infinities."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value) if math.isfinite(value) else math.nan


def title_lines(data: ReportData) -> list[str]:
    """Job name and id, status, best epoch; the outcome message (wrapped, truncated)."""
    job = data.job
    name = str(job.get("name") or "(unnamed job)")[:120]
    best = job.get("best_epoch")
    lines = [f"{name}  ·  {job.get('id', '?')}",
             f"status: {job.get('status', '?')}  ·  best epoch: "
             f"{best if best is not None else 'none'}  ·  epochs recorded: {len(data.epochs)}"]
    if job.get("outcome_message"):
        lines += textwrap.wrap(str(job["outcome_message"]), 110, max_lines=2,
                               placeholder=" …")
    return lines


def stop_note(data: ReportData) -> str | None:
    """Why the job stopped early, for a job that did not complete normally; else None."""
    status = str(data.job.get("status", ""))
    if status not in STOPPED:
        return None
    message = str(data.job.get("outcome_message") or "no message")
    return "\n".join(textwrap.wrap(f"stopped: {status}: {message}", 34, max_lines=8,
                                   placeholder=" …"))


def warning_epochs(data: ReportData) -> list[int]:
    """Epochs with a collapse-guard warning (warning events and the epochs' own lists; a
    tracker's failure is not one)."""
    found = {int(w["epoch"]) for w in data.warnings if isinstance(w.get("epoch"), int)
             and w.get("source", "guard") == "guard"}
    found |= {int(e["epoch"]) for e in data.epochs if e.get("warnings")}
    return sorted(found)


def _ratios(data: ReportData) -> tuple[float, float]:
    config = data.job.get("config") or {}
    warn, stop = config.get("collapse_warn_ratio", 0.30), config.get("collapse_stop_ratio", 0.20)
    return float(warn), float(stop)


# --- the figure ----------------------------------------------------------------------------------

def _mark_warnings(ax: Axes, epochs: list[int]) -> None:
    for i, epoch in enumerate(epochs):
        ax.axvline(epoch, color="darkorange", linestyle="--", linewidth=1, alpha=0.8,
                   label="collapse warning" if i == 0 else "_nolegend_")


def _loss_panel(ax: Axes, data: ReportData, warned: list[int]) -> None:
    if data.steps:
        x = [int(s["epoch"]) - 1 + _num(s.get("epoch_progress")) for s in data.steps]
        ax.plot(x, [_num(s.get("train_loss")) for s in data.steps], color="tab:gray",
                linewidth=1, label="train loss (per step)")
    elif data.epochs:
        ax.plot([e["epoch"] for e in data.epochs], [_num(e.get("train_loss")) for e in data.epochs],
                "o-", color="tab:gray", label="train loss (per epoch)")
    if data.epochs:
        ax.plot([e["epoch"] for e in data.epochs], [_num(e.get("val_loss")) for e in data.epochs],
                "o-", color="tab:purple", label="validation loss")
    _mark_warnings(ax, warned)
    ax.set(title="Loss", xlabel="epoch", ylabel="loss")
    ax.legend(fontsize=8, loc="upper right")


def _score_panel(ax: Axes, data: ReportData, warned: list[int]) -> None:
    epochs = [e["epoch"] for e in data.epochs]
    for key, label in SCORES:
        values = [_num(e.get(key)) for e in data.epochs]
        if any(not math.isnan(v) for v in values):
            ax.plot(epochs, values, "o-", label=label)
        else:
            ax.plot([], [], label=f"{label}: n/a")
    best = data.job.get("best_epoch")
    if isinstance(best, int):
        ax.axvline(best, color="green", linewidth=1, alpha=0.6, label=f"best epoch {best}")
    _mark_warnings(ax, warned)
    ax.set(title="Validation scores (left) and learning rate (right)", xlabel="epoch",
           ylabel="score")
    ax.set_ylim(min(-0.05, ax.get_ylim()[0]), 1.05)
    ax.legend(fontsize=8, loc="lower left")
    if data.steps:
        lr = ax.twinx()
        lr.plot([int(s["epoch"]) - 1 + _num(s.get("epoch_progress")) for s in data.steps],
                [_num(s.get("lr")) for s in data.steps], color="black", linewidth=0.8,
                alpha=0.4)
        lr.set_ylabel("learning rate (grey line, per step)", fontsize=8)
        lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        ax.set_zorder(lr.get_zorder() + 1)  # scores and their legend above the lr line
        ax.patch.set_visible(False)


def _distribution_panel(ax: Axes, data: ReportData, warned: list[int]) -> None:
    warn, stop = _ratios(data)
    width = 0.18
    for c, (name, color) in enumerate(CLASSES):
        xs, predicted, actual = [], [], []
        for e in data.epochs:
            dist = e.get("prediction_distribution") or {}
            xs.append(e["epoch"] + (c - 0.5) * 2 * width)  # vulnerable left, safe right
            predicted.append(_num(dist.get(f"predicted_{name}")))
            actual.append(_num(dist.get(f"actual_{name}")))
        bars = ax.bar([x - width / 2 for x in xs], predicted, width, color=color,
                      label=f"{name}: predicted")
        ax.bar_label(bars, fontsize=7)  # a zero is a collapse: it must be readable
        ax.bar([x + width / 2 for x in xs], actual, width, color="none", edgecolor=color,
               hatch="//", label=f"{name}: actual")
        left, right = [x - width for x in xs], [x + width for x in xs]
        ax.hlines([warn * a for a in actual], left, right, colors="darkorange",
                  linestyles="--", label=f"warn: {warn:.0%} of actual" if c == 0 else "_nolegend_")
        ax.hlines([stop * a for a in actual], left, right, colors="black", linestyles=":",
                  label=f"stop: {stop:.0%} of actual" if c == 0 else "_nolegend_")
    for i, epoch in enumerate(warned):
        ax.axvspan(epoch - 0.5, epoch + 0.5, color="darkorange", alpha=0.12, linewidth=0, zorder=0,
                   label="epoch with a collapse warning" if i == 0 else "_nolegend_")
    ax.set(title="Prediction distribution on the validation split", xlabel="epoch",
           ylabel="functions")
    ticks = [int(e["epoch"]) for e in data.epochs]
    ax.set_xticks(ticks)
    ax.set_xlim(min(ticks) - 0.6, max(ticks) + 0.6)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def build_figure(data: ReportData) -> Figure:
    """The report as a Matplotlib figure (Agg canvas attached; nothing global touched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    empty = not data.epochs and not data.steps
    fig = Figure(figsize=(13, 3 if empty else 9), layout="constrained")
    FigureCanvasAgg(fig)
    # parse_math=False: a job name or message with `$` is text, never mathtext to parse.
    fig.suptitle("\n".join(title_lines(data)), fontsize=11, parse_math=False)
    note = stop_note(data)
    if empty:
        ax = fig.add_subplot()
        ax.set_axis_off()
        status = data.job.get("status", "?")
        ax.text(0.5, 0.5, f"No epochs or steps recorded yet (status {status}).",
                ha="center", va="center", fontsize=14, parse_math=False)
        if note:
            ax.text(0.5, 0.35, note, ha="center", va="top", fontsize=10, color="darkred",
                    parse_math=False)
        return fig
    grid = fig.add_gridspec(2, 2)
    loss, scores = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    dist = fig.add_subplot(grid[1, :])
    warned = warning_epochs(data)
    from matplotlib.ticker import MaxNLocator

    last = max([int(e["epoch"]) for e in data.epochs] + [int(s["epoch"]) for s in data.steps])
    for ax in (loss, scores):
        ax.set_xlim(0, last + 0.25)  # steps sit at fractional epochs from 0
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _loss_panel(loss, data, warned)
    _score_panel(scores, data, warned)
    if data.epochs:
        _distribution_panel(dist, data, warned)
    else:
        dist.set_axis_off()
        dist.text(0.5, 0.5, "No evaluation yet: the prediction distribution appears after "
                  "the first epoch.", ha="center", va="center", fontsize=12)
    if note:  # under the legend, right of the bars
        dist.text(1.01, 0.0, note, transform=dist.transAxes, ha="left", va="bottom",
                  fontsize=9, color="darkred", parse_math=False, wrap=False,
                  bbox={"boxstyle": "round", "facecolor": "mistyrose", "edgecolor": "darkred"})
    return fig


def render_png(data: ReportData, *, dpi: int = 100) -> bytes:
    """The report as PNG bytes (1300 x 900 pixels at the default dpi)."""
    buffer = io.BytesIO()
    build_figure(data).savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


# --- HTML ----------------------------------------------------------------------------------------

def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else html.escape(str(value))
    return html.escape(str(value))


def _epoch_row(e: dict[str, Any], warnings: dict[int, list[str]]) -> str:
    dist = e.get("prediction_distribution") or {}
    texts = list(e.get("warnings") or []) + warnings.get(int(e["epoch"]), [])
    unique = list(dict.fromkeys(str(t) for t in texts))
    cells = [_cell(e.get("epoch")) + (" ★" if e.get("is_best") else ""),
             *(_cell(e.get(k)) for k in ("train_loss", "val_loss", "accuracy", "f1", "mcc",
                                         "roc_auc")),
             *(f"{_cell(dist.get(f'predicted_{n}'))} / {_cell(dist.get(f'actual_{n}'))}"
               for n, _ in CLASSES),
             "<br>".join(html.escape(t) for t in unique)]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def render_html(data: ReportData) -> str:
    """One self-contained page: the PNG inline (data URI), then a per-epoch table. Every
    string from the job is escaped; the page loads nothing (its CSP forbids it)."""
    png = base64.b64encode(render_png(data)).decode("ascii")
    lines = title_lines(data)
    by_epoch: dict[int, list[str]] = {}
    for w in data.warnings:
        if isinstance(w.get("epoch"), int):
            by_epoch.setdefault(w["epoch"], []).append(str(w.get("message", "")))
    head = ("epoch", "train loss", "val loss", "accuracy", "F1", "MCC", "ROC-AUC",
            "vulnerable predicted / actual", "safe predicted / actual", "warnings")
    rows = "\n".join(_epoch_row(e, by_epoch) for e in data.epochs) or \
        f'<tr><td colspan="{len(head)}">No epochs recorded yet.</td></tr>'
    note = stop_note(data)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>StreamGuard report: {html.escape(lines[0])}</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.25em .5em;text-align:right;font-size:.9em}}
td:last-child{{text-align:left}}img{{max-width:100%}}.stop{{color:darkred}}</style>
</head><body>
<h1>{html.escape(lines[0])}</h1>
{"".join(f"<p>{html.escape(line)}</p>" for line in lines[1:])}
{f'<p class="stop">{html.escape(note)}</p>' if note else ""}
<img alt="loss, scores and prediction distribution per epoch" src="data:image/png;base64,{png}">
<h2>Per epoch (★ best so far)</h2>
<table><thead><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr></thead>
<tbody>
{rows}
</tbody></table>
</body></html>
"""
