"""`streamguard report`: a job's curves and prediction distribution as a PNG or an HTML page.

    streamguard report JOB_ID --out job.png      # from the server (--url, --api-key)
    streamguard report JOB_ID --out job.html     # the PNG inline plus a per-epoch table
    streamguard report --from-dir runs/a --out a.png   # a local `streamguard train` run
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from streamguard.errors import StreamGuardError
from streamguard.remote import add_remote_flags, make_client

FORMATS = (".png", ".html")


def _format(out: str) -> str:
    suffix = Path(out).suffix.lower()
    if suffix not in FORMATS:
        raise StreamGuardError(f"--out {out!r}: unknown format {suffix or '(no extension)'!r}; "
                               f"accepted extensions: {', '.join(FORMATS)}", field="out")
    return suffix


def cmd_report(args: argparse.Namespace) -> int:
    from streamguard import report
    from streamguard.contract import ID_PATTERN

    suffix = _format(args.out)  # before any request: a typo costs nothing
    if args.job is not None and not re.fullmatch(ID_PATTERN, args.job):
        raise StreamGuardError(f"{args.job!r} is not a job id (32 hex characters, as "
                               "`streamguard jobs` lists them)", field="job")
    if args.from_dir:
        data = report.collect_local(args.from_dir)
    else:
        with make_client(args) as client:
            data = report.collect_remote(client, args.job)
    out = Path(args.out)
    try:
        if suffix == ".png":
            out.write_bytes(report.render_png(data))
        else:
            out.write_text(report.render_html(data), encoding="utf-8")
    except OSError as exc:
        raise StreamGuardError(f"cannot write {out}: {exc.strerror or exc}",
                               field="out") from None
    print(f"wrote {out} ({data.job.get('status')}, {len(data.epochs)} epoch(s), "  # noqa: T201
          f"{len(data.steps)} step point(s), {len(data.warnings)} warning(s))", file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("report", help="draw a job's curves and prediction distribution "
                                      "(PNG or self-contained HTML)",
                       description="Draw a job's loss and score curves and its prediction "
                                   "distribution per epoch into one PNG, or an HTML page with "
                                   "the PNG inline and a per-epoch table.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("job", nargs="?", default=None, help="job id on the server")
    source.add_argument("--from-dir", default=None, metavar="OUTPUT_DIR",
                        help="a local `streamguard train --output-dir` instead of a job")
    p.add_argument("--out", required=True, help=f"output file: {' or '.join(FORMATS)}")
    add_remote_flags(p)
    p.set_defaults(handler=cmd_report)
