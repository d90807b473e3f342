"""Python's cyclic garbage collector, tuned for a serving process (`api.gc_gen0_threshold`).

With Python's defaults a young-generation collection runs every 700 net allocations of
container objects, and every tenth of those sweeps the middle generation too. A request
allocates thousands (a 50-job page: rows, dicts, models), so a busy process collected several
times per request; and with 50 requests in flight, each collection found the objects of the
other 49 still alive, promoted them, and sooner or later walked the whole heap (hundreds of
thousands of objects imported at startup: FastAPI, pydantic, SQLAlchemy) in a full collection.
Measured with `benchmarks/api_throughput.py` (50 clients, PostgreSQL): a list request's API CPU
was 1.49 ms with one client and 2.35 ms with 50; in alternating runs with the tuning below off
and on, a list request took 2.49/2.54 -> 2.00/1.87 ms and a submission 3.98/4.67 -> 3.73/3.27.

What `tune_gc` does, once, at the end of startup:

- `gc.freeze()`: everything alive then (modules, classes, the app, its routes and schemas) is
  moved to a permanent generation the collector never walks again. Those objects live as long
  as the process anyway; the ones freed later are still freed by reference counting.
- `gc.set_threshold(gen0_threshold, ...)`: a young collection every `gen0_threshold`
  allocations (default 50,000), the older generations' ratios left as Python has them. Garbage
  in reference cycles waits a little longer (at most that many objects); garbage without cycles,
  nearly all of it, is freed by reference counting the moment it is dropped, as before.

Only processes that serve (`api.main:serve_app`, `api.main:app`, `streamguard api`) are tuned:
an app built with `create_app()` in someone else's process (tests, embedding) leaves that
process's collector alone.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def tune_gc(gen0_threshold: int) -> int | None:
    """Freeze what startup built and collect the young generation every `gen0_threshold`
    allocations; returns the objects frozen. 0 leaves the collector exactly as it is (returns
    None)."""
    if gen0_threshold <= 0:
        return None
    before = gc.get_threshold()
    gc.collect()  # what startup left as cyclic garbage is not frozen for life
    gc.freeze()
    gc.set_threshold(gen0_threshold, before[1], before[2])
    frozen = gc.get_freeze_count()
    log.info("garbage collector tuned for serving: %d startup objects frozen, thresholds %s "
             "(were %s)", frozen, gc.get_threshold(), before)
    return frozen
