"""`streamguard watch` (and `submit --watch`): follow a job's events until it ends and print them
live - steps as a tqdm bar on stderr, each epoch as a fixed-width table row with its warnings,
status changes, checkpoints and the test result on stdout (or each event as a JSON line with
`--jsonl`). The stream itself, reconnecting with Last-Event-ID after a drop, is
`streamguard.event_stream.EventFollower`; reconnect notices go to stderr.

Exit codes: WATCH_EXIT by the job's terminal status (0 completed or early_stopped; 3 collapsed,
4 non_finite_loss, 5 cancelled, 7 timed_out, 8 failed), EXIT_SERVER_ERROR for a status this
client does not know.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

from streamguard.cli import EXIT_CODES
from streamguard.cli_format import (
    distribution,
    epoch_cells,
    epoch_header,
    fixed_row,
    human_bytes,
    num,
    say,
)
from streamguard.contract import JobStatus
from streamguard.event_stream import Event, EventFollower
from streamguard.remote import request_patiently

if TYPE_CHECKING:  # imported where used: `streamguard --help` stays fast
    import httpx

WATCH_EXIT = {**{k: v for k, v in EXIT_CODES.items() if k != "preempted"},
              JobStatus.TIMED_OUT.value: 7, JobStatus.FAILED.value: 8}
EXIT_SERVER_ERROR = 11  # also a 5xx answer (streamguard/cli_remote.py)


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
        elif event.kind == "evaluation":
            predicted, actual = distribution(d["prediction_distribution"])
            self.line(f"eval  step {d['step']} (epoch {d['epoch']}): val_loss "
                      f"{num(d.get('val_loss'), 4)}  F1 {num(d['f1'], 3)}  AUC "
                      f"{num(d.get('roc_auc'), 3)}  predicted {predicted}  actual {actual}")
            for text in d.get("warnings") or []:
                self.line(f"      WARNING {text}")
        elif event.kind == "rollback":
            self.line(f"ROLLBACK {d['rollback']}/{d['max_rollbacks']} at step {d['step']} "
                      f"(epoch {d['epoch']}): {d['reason']}; back to the best checkpoint (epoch "
                      f"{d['to_epoch']}, step {d['to_step']}), LR x{d['lr_factor']:g}")
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
    # a bar only on a terminal: a log file gets the plain epoch rows, no `\r` frames
    printer = WatchPrinter(progress=not (args.no_progress or jsonl) and sys.stderr.isatty())

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
    """The flags of `watch`, shared by `submit --watch`."""
    p.add_argument("--reconnect-s", type=float, default=120.0, metavar="S",
                   help="give up when the server stays unreachable this long (default: 120)")
    p.add_argument("--no-progress", action="store_true", help="no step progress bar")
    p.add_argument("--jsonl", action="store_true",
                   help="print each event as one JSON line ({id, kind, data}) instead")
