"""Checkpoints off the training thread: snapshot on the caller, write on one background thread.

    with BackgroundSaver() as saver:            # train() gets one per call (`owns_saver`)
        tree = saver.snapshot({"model": model.state_dict(), "state": state})  # the only stall
        saver.submit(lambda: write(tree), emit=sink.event)  # waits for the previous save first
        ...
        saver.poll()   # after every optimizer step: a done() check; emits finished events
        saver.wait()   # a wait point: on return the checkpoint is durable (written, published)

Why: for RoBERTa-base `last` is ~1.5 GB (weights plus AdamW's two moments). Writing the folder,
its card, the `best` copy, then uploading it with a sha256 manifest and a .tar.gz took many
seconds per epoch on the training thread. Now the training thread only copies the tensors to
CPU memory (`snapshot`: one memcpy of each storage; pinned and non-blocking from a GPU, then one
synchronize) and training goes on while one background thread does the rest, with the same
commit protocol (folder swap, manifest last, then the pointers).

Rules that keep it correct:
- Isolation: the snapshot shares no memory with the live model, optimizer or tallies, so the
  steps taken while it is written never change what is written. Storage sharing inside the
  snapshot (tied weights, views) is kept, so the files are byte-identical to a synchronous save.
- One save in flight: `submit` first waits for the previous save (which also hands its
  publisher state to the next one).
- Sinks are not thread-safe (the worker's writes to the database): a job never touches a sink;
  it returns its events `(kind, payload)` and the training thread emits them in `poll`/`wait`.
- Errors are never swallowed: a failed job's own exception (with its traceback) is raised on the
  training thread by the next `poll`, `wait` or `submit`. If the training thread is already
  raising, the save in flight is still finished and its events emitted where possible (so no
  thread writes after the call ends); its own failure is then logged and noted on that error.

Memory: a snapshot is a second copy of the weights and optimizer state in host memory (~1.5 GB
for RoBERTa-base), kept for the run by `BackgroundSaver.snapshot` so that later snapshots copy
into pages already mapped (and pinned, from a GPU) instead of faulting in new ones. The loop
calls `BackgroundSaver.prepare` after its first optimizer step, so that memory is mapped on the
background thread while training goes on and the FIRST save stalls no longer than the others
(`benchmarks/checkpoint_stall.py`, 2 CPU cores: 1.38 s before, 0.09 s with it; 0.10-0.11 s
for later saves).
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import torch

log = logging.getLogger("streamguard.train")

Event = tuple[str, dict[str, Any]]
Emit = Callable[[str, dict[str, Any]], None]
#: A tensor storage: (device, address, bytes).
StorageKey = tuple[str, int, int]
P = ParamSpec("P")
R = TypeVar("R")


class SnapshotBuffers:
    """Host buffers kept from one snapshot to the next, keyed by the source storage (device,
    address, size): the weights and the optimizer's moments keep their storages for the whole
    run, so from the second save on a snapshot is a copy into memory already mapped (and, from
    a GPU, already pinned) instead of 1.5 GB of fresh pages. A snapshot taken with buffers is
    valid until the next one taken with the same buffers (`BackgroundSaver.snapshot` waits for
    the save in flight first). Buffers no source used in the latest snapshot are let go."""

    def __init__(self) -> None:
        self._kept: dict[StorageKey, torch.Tensor] = {}
        self._used: dict[StorageKey, torch.Tensor] = {}

    def get(self, key: StorageKey) -> torch.Tensor:
        """A buffer of key[2] bytes: the earlier snapshot's for this source, else a new one."""
        base = self._kept.get(key)
        if base is None:
            base = host_buffer(key)
        self._used[key] = base
        return base

    def finish(self) -> None:
        """After a snapshot: keep what it used, free the rest."""
        self._kept, self._used = self._used, {}

    def reserve(self, keys: list[StorageKey]) -> None:
        """Allocate (and, in pageable memory, fault in) the buffers of these sources ahead of
        the first snapshot, which then copies into mapped memory like every later one. Never
        call it while a snapshot is being taken (`BackgroundSaver.prepare` runs it as a job)."""
        for key in keys:
            if key in self._kept:
                continue
            base = host_buffer(key)
            if not key[0].startswith("cuda"):  # pinned memory is resident already
                base.zero_()  # touch every page now, not in the first snapshot's memcpy
            self._kept[key] = base

    @property
    def nbytes(self) -> int:
        return sum(t.numel() for t in self._kept.values())


def storage_key(tensor: torch.Tensor) -> StorageKey:
    """(device, address, bytes) of `tensor`'s storage: what `SnapshotBuffers` keys a copy by."""
    storage = tensor.untyped_storage()
    return str(tensor.device), storage.data_ptr(), storage.nbytes()


def host_buffer(key: StorageKey) -> torch.Tensor:
    """Fresh host memory for a copy of that storage (pinned for a CUDA source)."""
    return torch.empty(key[2], dtype=torch.uint8, pin_memory=key[0].startswith("cuda"))


def storage_keys(tree: Any) -> list[StorageKey]:
    """The key of every distinct tensor storage in `tree`: what a snapshot of it copies."""
    keys: dict[StorageKey, None] = {}

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            keys.setdefault(storage_key(value))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(tree)
    return list(keys)


def snapshot(tree: Any, buffers: SnapshotBuffers | None = None) -> Any:
    """A deep copy of `tree` (dicts, lists, tuples, tensors, plain values) sharing no memory with
    it: every tensor storage is copied once to CPU memory and the tensors are rebuilt on the
    copies with their offsets and strides, so aliases stay aliases. With `buffers`, the copies
    go into the host memory of the previous snapshot where the sources are the same.

    From CUDA the copies go to pinned memory without blocking, then one synchronize: on return
    every copy is complete, and later kernels (the next optimizer step) run after it on the
    stream anyway.
    """
    storages: dict[StorageKey, torch.Tensor] = {}

    def copy_tensor(tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach()
        key = storage_key(tensor)
        base = storages.get(key)
        if base is None:
            raw = torch.empty(0, dtype=torch.uint8, device=tensor.device).set_(
                tensor.untyped_storage())
            base = host_buffer(key) if buffers is None else buffers.get(key)
            base.copy_(raw, non_blocking=tensor.device.type == "cuda")
            storages[key] = base
        return torch.empty(0, dtype=tensor.dtype).set_(
            base.untyped_storage(), tensor.storage_offset(), tensor.size(), tensor.stride())

    def walk(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return copy_tensor(value)
        if isinstance(value, dict):
            out = copy.copy(value)  # keeps the type (OrderedDict) and its attributes
            for key, item in value.items():
                out[key] = walk(item)
            return out
        if isinstance(value, list):
            return [walk(item) for item in value]
        if isinstance(value, tuple):
            items = [walk(item) for item in value]
            return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
        return copy.deepcopy(value)

    copied = walk(tree)
    if any(device.startswith("cuda") for device, _, _ in storages):
        torch.cuda.synchronize()
    if buffers is not None:
        buffers.finish()
    return copied


class BackgroundSaver:
    """Runs checkpoint jobs on one background thread, at most one in flight (see module doc).

    A job is a callable that writes and publishes a checkpoint and returns its sink events; it
    must touch only snapshots (never live tensors) and never a sink.
    """

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[list[Event]] | None = None
        self._emit: Emit | None = None
        self._buffers = SnapshotBuffers()

    def snapshot(self, tree: Any) -> Any:
        """Wait for the save in flight (its snapshot's memory is then free), then `snapshot`
        `tree` into the memory the previous snapshot used."""
        self.wait()
        return snapshot(tree, self._buffers)

    def prepare(self, tree: Any) -> None:
        """Map the host memory for snapshots of `tree`'s tensors on the background thread, so
        that the FIRST save stalls the training thread no longer than later ones (otherwise it
        faults in ~1.5 GB of fresh pages for RoBERTa-base: 1.38 s against 0.11 s on 2 CPU
        cores). Call it once the tensors exist (AdamW's moments: after the first optimizer
        step); only their addresses are read here. A snapshot taken before the job is done waits
        for it, as for a save in flight."""
        keys = storage_keys(tree)
        buffers = self._buffers

        def reserve() -> list[Event]:
            buffers.reserve(keys)
            return []

        self.submit(reserve, emit=lambda _kind, _payload: None)

    @property
    def busy(self) -> bool:
        """A save is in flight (or finished and not yet collected by `poll`/`wait`)."""
        return self._pending is not None

    def submit(self, job: Callable[[], list[Event]], *, emit: Emit) -> None:
        """Wait for the previous save, then start `job`; `emit` receives its events later, on
        the thread that collects them."""
        self.wait()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-save")
        self._pending, self._emit = self._pool.submit(job), emit

    def poll(self) -> None:
        """Cheap: if the save in flight has finished, emit its events (or raise its error)."""
        if self._pending is not None and self._pending.done():
            self.wait()

    def wait(self) -> None:
        """Block until the save in flight is durable, then emit its events on this thread.

        Raises:
            the job's own exception, if it failed (the checkpoint was then not committed: the
            folder swap is atomic and the pointers move last).
        """
        pending, emit = self._pending, self._emit
        if pending is None or emit is None:
            return
        self._pending = self._emit = None
        for kind, payload in pending.result():
            emit(kind, payload)

    def close(self) -> None:
        """Wait for the save in flight (raising its error), then stop the thread."""
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def __enter__(self) -> BackgroundSaver:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.close()
            return
        # The run is already failing: finish the save in flight (no thread may write after the
        # call ends) and record its events if the sink still takes them, but let the run's own
        # error propagate; a second failure is logged and noted on it, never lost.
        try:
            self.close()
        except BaseException as second:  # noqa: BLE001 - reported, and the first error wins
            log.error("the checkpoint save in flight also failed: %r", second)
            exc.add_note(f"the checkpoint save in flight also failed: {second!r}")


def owns_saver(fn: Callable[P, R]) -> Callable[P, R]:
    """Give each call of `fn` its own BackgroundSaver as the keyword `saver` (unless the caller
    passes one) and close it when the call ends, an exception included: a call never returns
    or raises with a save still in flight."""

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        if kwargs.get("saver") is not None:
            return fn(*args, **kwargs)
        with BackgroundSaver() as saver:
            kwargs["saver"] = saver
            return fn(*args, **kwargs)

    return call

