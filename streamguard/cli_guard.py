"""`streamguard guard replay`: a run's stored evaluations through the collapse guard again, with
other thresholds, printing where each rule would have fired (docs/guard.md).

    streamguard guard replay runs/a                          # a local `streamguard train` run
    streamguard guard replay runs/a/metrics.jsonl --collapse-stop-ratio 0.25
    streamguard guard replay --job JOB_ID --guard-grace-steps 0   # a job on the server

Thresholds left out are the run's own (its config; the grace its warmup steps).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamguard.errors import StreamGuardError
from streamguard.remote import add_remote_flags, make_client, request
from streamguard.spec import TrainConfig, parse_train_config

if TYPE_CHECKING:  # imported where used: `streamguard --help` stays fast
    import httpx

PAGE = 200  # the API's largest page (events and metrics)


class Replayable:
    """What a replay needs: the evaluations in the order they happened, and the run's facts."""

    def __init__(self, source: str, records: list[dict[str, Any]], *,
                 config: Mapping[str, Any] | None, grace: int | None = None,
                 total_steps: int | None = None, outcome: str | None = None,
                 message: str | None = None, rollbacks: list[dict[str, Any]] | None = None
                 ) -> None:
        self.source, self.records, self.config = source, records, dict(config or {})
        self.grace, self.total_steps = grace, total_steps
        self.outcome, self.message, self.rollbacks = outcome, message, rollbacks or []


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_local(path: Path) -> Replayable:
    """A `streamguard train` output directory (result.json's evaluations: every evaluation of
    its last attempt, mid-epoch ones included), or a metrics.jsonl (epoch records only)."""
    folder = path if path.is_dir() else path.parent
    result_file = folder / "result.json"
    result = json.loads(result_file.read_text()) if result_file.is_file() else {}
    if path.is_dir() and result.get("evaluations"):
        records, source = result["evaluations"], str(result_file)
    else:
        metrics = path if path.is_file() else folder / "metrics.jsonl"
        if not metrics.is_file():
            raise StreamGuardError(f"{path}: no result.json with evaluations and no "
                                   "metrics.jsonl; pass a `streamguard train --output-dir` or "
                                   "its metrics.jsonl", field="source")
        records, source = _jsonl(metrics), str(metrics)
    config = result.get("config")
    stored = folder / "checkpoints" / "last" / "train_config.json"
    if config is None and stored.is_file():
        config = json.loads(stored.read_text())
    steps = folder / "steps.jsonl"
    total = _jsonl(steps)[-1].get("total_steps") if steps.is_file() and steps.stat().st_size \
        else None
    return Replayable(source, records, config=config, grace=result.get("guard_grace_steps"),
                      total_steps=total, outcome=result.get("outcome"),
                      message=result.get("message"), rollbacks=result.get("rollbacks"))


def _events(client: httpx.Client, job_id: str) -> Iterator[dict[str, Any]]:
    after: int | None = 0
    while after is not None:
        page = request(client, "GET", f"/v1/jobs/{job_id}/events/history",
                       params={"after_id": after, "limit": PAGE})
        yield from page["items"]
        nxt = page.get("next_after_id")
        after = nxt if nxt is not None and nxt > after else None


def load_remote(client: httpx.Client, job_id: str) -> Replayable:
    """A job's evaluations from the API, in the order they happened: the `epoch` and
    `evaluation` events (a rolled-back epoch is there twice, as it ran). Epoch records missing
    from the events come from the paged `/metrics` rows."""
    job = request(client, "GET", f"/v1/jobs/{job_id}")
    records: list[dict[str, Any]] = []
    rollbacks: list[dict[str, Any]] = []
    for event in _events(client, job_id):
        if event["kind"] in ("epoch", "evaluation"):
            records.append(dict(event["data"]))
        elif event["kind"] == "rollback":
            rollbacks.append(dict(event["data"]))
    seen = {r["epoch"] for r in records if "is_best" in r}
    offset: int | None = 0
    while offset is not None:
        page = request(client, "GET", f"/v1/jobs/{job_id}/metrics",
                       params={"offset": offset, "limit": PAGE})
        records.extend(dict(r) for r in page["items"] if r["epoch"] not in seen)
        offset = page.get("next_offset")
    if not seen:
        records.sort(key=lambda r: int(r["step"]))
    return Replayable(f"job {job_id}", records, config=job.get("config"),
                      total_steps=(job.get("progress") or {}).get("total_steps"),
                      outcome=job.get("status"), message=job.get("outcome_message"),
                      rollbacks=rollbacks)


def default_grace(config: TrainConfig, total_steps: int | None) -> int:
    """The run's grace: `guard_grace_steps`, else its warmup steps (as the loop derives them)."""
    if config.guard_grace_steps is not None:
        return config.guard_grace_steps
    if not total_steps:
        raise StreamGuardError("the run's total optimizer steps are unknown, so its warmup "
                               "(the default grace) is too: pass --guard-grace-steps",
                               field="guard_grace_steps")
    from streamguard.training.schedule import lr_factor, scale_warmup_ratio

    factor = lr_factor(config.batch_size * config.accumulation_steps, config.base_batch,
                       config.lr_scaling.value)
    ratio = scale_warmup_ratio(config.warmup_ratio, factor, config.max_warmup_ratio)
    return math.ceil(total_steps * ratio)


def _counts(record: Mapping[str, Any]) -> str:
    d = record["prediction_distribution"]
    return (f"vuln {d['predicted_vulnerable']:>5}/{d['actual_vulnerable']:<5} "
            f"safe {d['predicted_safe']:>5}/{d['actual_safe']:<5}")


def replay_lines(run: Replayable, overrides: Mapping[str, Any]) -> list[str]:
    """The replay's report: one line per evaluation, then where these thresholds stop.

    `overrides`: collapse_warn_ratio, collapse_stop_ratio, collapse_patience, guard_grace_steps
    (the run's own where absent).
    """
    from streamguard.training.guards import CollapseGuard, replay

    if not run.records:
        raise StreamGuardError(f"{run.source}: no evaluations stored yet", field="source")
    known = {k: v for k, v in run.config.items() if k in TrainConfig.model_fields}
    config = parse_train_config({**known, **overrides})  # checks the ranges, names the field
    grace = (int(overrides["guard_grace_steps"]) if "guard_grace_steps" in overrides
             else run.grace if run.grace is not None else default_grace(config, run.total_steps))
    guard = CollapseGuard(config.collapse_warn_ratio, config.collapse_stop_ratio,
                          config.collapse_patience, grace)
    lines = [f"{run.source}: {len(run.records)} evaluation(s); guard: warn "
             f"{guard.warn_ratio:.0%}, stop {guard.stop_ratio:.0%}, patience {guard.patience}, "
             f"grace {grace} step(s)"]
    rollback_at = {(r["epoch"], r["step"]) for r in run.rollbacks}
    first_stop = None
    for record, decision in replay(run.records, guard):
        kind = "end" if "is_best" in record or "train_loss" in record else "mid"
        verdict = (f"STOP {decision.reason.value if decision.reason else ''}: "
                   f"{decision.message}" if decision.stop
                   else "; ".join(decision.warnings) or "ok")
        lines.append(f"step {record['step']:>6}  epoch {record['epoch']:>3} {kind}  "
                     f"{_counts(record)}  F1 {float(record.get('f1') or 0.0):.3f}  {verdict}")
        if decision.stop and first_stop is None:
            first_stop = (record, decision)
        if (record["epoch"], record["step"]) in rollback_at:
            lines.append("      (the recorded run rolled back here)")
            rollback_at.discard((record["epoch"], record["step"]))
    end = guard.at_end()  # a finished run that never separated is not_learning at its end
    if first_stop is None and end.stop and run.outcome not in (None, "queued", "running",
                                                                "preempted"):
        lines.append(f"with these thresholds: not_learning at the end of the run ({end.message})")
    elif first_stop is None:
        lines.append("with these thresholds: no stop")
    else:
        record, decision = first_stop
        reason = decision.reason.value if decision.reason else "?"
        lines.append(f"with these thresholds: {reason} at step {record['step']} (epoch "
                     f"{record['epoch']})")
    if run.outcome:
        lines.append(f"recorded: {run.outcome}: {run.message or ''}")
    return lines


def cmd_replay(args: argparse.Namespace) -> int:
    if args.job is not None:
        if not re.fullmatch(r"[0-9a-f]{32}", args.job):
            raise StreamGuardError(f"{args.job!r} is not a job id (32 hex characters, as "
                                   "`streamguard jobs` lists them)", field="job")
        with make_client(args) as client:
            run = load_remote(client, args.job)
    else:
        run = load_local(Path(args.source))
    overrides = {name: getattr(args, name) for name in
                 ("collapse_warn_ratio", "collapse_stop_ratio", "collapse_patience",
                  "guard_grace_steps") if getattr(args, name) is not None}
    sys.stdout.write("".join(line + "\n" for line in replay_lines(run, overrides)))
    return 0


def register(sub: Any) -> None:
    group = sub.add_parser("guard", help="the collapse guard: replay a run's evaluations")
    gsub = group.add_subparsers(dest="guard_command", required=True)
    p = gsub.add_parser(
        "replay", help="replay a run's stored evaluations through the guard with other "
                       "thresholds",
        description="Replay a run's stored evaluations (a `streamguard train` output directory "
                    "or its metrics.jsonl, or a job on the server with --job) through the "
                    "collapse guard and print every evaluation's verdict and where the run "
                    "would have stopped. Thresholds left out are the run's own.")
    p.add_argument("source", nargs="?", default=None, help="RUN_DIR or metrics.jsonl")
    p.add_argument("--job", default=None, help="a job id on the server instead of a path")
    p.add_argument("--collapse-warn-ratio", type=float, default=None)
    p.add_argument("--collapse-stop-ratio", type=float, default=None)
    p.add_argument("--collapse-patience", type=int, default=None)
    p.add_argument("--guard-grace-steps", type=int, default=None)
    add_remote_flags(p)
    p.set_defaults(handler=_checked)


def _checked(args: argparse.Namespace) -> int:
    if (args.source is None) == (args.job is None):
        raise StreamGuardError("pass either RUN_DIR|metrics.jsonl or --job JOB_ID",
                               field="source")
    return cmd_replay(args)
