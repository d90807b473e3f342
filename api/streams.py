"""The event hub: one poller per API process feeds every SSE stream of job events.

A stream holds no database connection and no thread while it waits. It subscribes here
(`EventHub.subscribe`), replays its history with one short read (`EventHub.read`, in a worker
thread), then reads only its own bounded asyncio queue, which the hub fills:

- One task polls the database for new events of every job that has a listener: one query per
  poll for all of them (`_poll_statement`), run in a worker thread with a session opened and
  closed around it, so it holds one pooled connection for a few milliseconds per poll.
- Each new event is typed (`api.services.events.sse_data`) and encoded as an SSE frame once,
  then the same bytes go to every stream of its job.
- With `settings.redis.url`, a second task holds ONE pattern subscription (`job:*:events`) for
  the process; a notification for a watched job wakes the poller at once, and the poller only
  re-reads every `SAFETY_POLL_S` in case one was missed. Without Redis, or while Redis is down
  or hung (no answer to a PING within the socket timeout), the poller reads every `POLL_S`
  and the listener reconnects with backoff. Redis only ever shortens the wait: events are
  always read from the database, so a lost notification delays an event, never loses it.
- On SQLite (the embedded stack: no Redis) the poller also asks SQLite every `PROBE_S`
  whether anything committed (`streamguard.db.session.CommitProbe`, `PRAGMA data_version`)
  and reads as soon as something did: a job's last event reaches its streams in about
  `PROBE_S`, not half a `POLL_S` on average, and while nothing commits there is no read at all
  between the `POLL_S` reads. Only while a stream is open: the first subscriber of an idle hub
  starts the probing at once.

PostgreSQL hands out event ids at INSERT but rows become visible at COMMIT, so a smaller id can
appear after a larger one was sent. The poller re-reads a window of `REREAD_WINDOW` ids below
the last one it saw for each job and forwards only ids it has not seen; streams drop ids they
already sent (the replay and the queue overlap by design), so nothing is sent twice.

A stream whose queue is full (a client reading slower than events arrive) is marked `lagged`;
it drains its queue, then catches up with one database read of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased, sessionmaker
from sse_starlette import ServerSentEvent

from api.services.events import sse_data
from streamguard.contract import TERMINAL_STATUSES, EventKind
from streamguard.db import metrics as metrics_repo
from streamguard.db.jobs import get_job
from streamguard.db.models import JobEvent

log = logging.getLogger(__name__)

#: Poll period without Redis (or while it is down); also how often a stream re-checks.
POLL_S = 0.5
#: Poll period while the Redis subscription is healthy: notifications wake the poller sooner.
SAFETY_POLL_S = 2.0
#: With a commit probe (SQLite): how often it is asked between reads while a stream is open.
PROBE_S = 0.05
#: Ids below the highest one seen that are read again (late commits; see the module doc).
REREAD_WINDOW = 200
#: Events per job per read; a full batch is followed by another read at once.
BATCH = 500
#: Jobs per poll statement (bind parameters stay far below every driver's limit).
JOBS_PER_STATEMENT = 500
#: Streams woken per event-loop turn when an event goes out: a thousand streams sending at once
#: would hold the loop (and every other request, /healthz included) for the whole burst.
FANOUT_CHUNK = 10
#: Worker threads for the streams' own reads (opening checks, replay, catch-up) at once: a
#: burst of (re)connecting clients queues on the event loop instead of taking every thread and
#: pooled connection (and the GIL) from other requests.
READ_THREADS = 8
#: Batches a stream's queue holds before the stream is marked lagged.
QUEUE_SIZE = 64
#: The one pattern subscription of the process (`streamguard.contract.events_channel`).
CHANNEL_PATTERN = "job:*:events"
#: Without a message for this long, the Redis listener PINGs; no answer within the socket
#: timeout after that and the connection is treated as hung.
REDIS_IDLE_PING_S = 5.0
REDIS_BACKOFF_MAX_S = 10.0


@dataclass(frozen=True, slots=True)
class Message:
    """One event as a stream sends it: its id, the encoded SSE frame, and whether it ends the
    stream (a terminal `status`)."""

    id: int
    frame: bytes
    terminal: bool


@dataclass(frozen=True, slots=True)
class Page:
    """A direct read: `messages` after the asked id; `finished` when the job was terminal (or
    gone) before they were read; `full` when more may follow."""

    messages: list[Message]
    finished: bool
    full: bool


def is_terminal_event(event: JobEvent) -> bool:
    return event.kind == EventKind.STATUS and event.payload.get("status") in TERMINAL_STATUSES


def to_message(event: JobEvent) -> Message:
    frame = ServerSentEvent(id=str(event.id), event=event.kind, data=sse_data(event)).encode()
    return Message(id=event.id, frame=frame, terminal=is_terminal_event(event))


class Listener:
    """One stream's subscription: a bounded queue of message batches for one job."""

    def __init__(self, job_id: str, queue_size: int = QUEUE_SIZE) -> None:
        self.job_id = job_id
        self.queue: asyncio.Queue[Sequence[Message]] = asyncio.Queue(maxsize=queue_size)
        self.lagged = False  # the queue overflowed: catch up from the database
        self.closed = False  # the hub stopped: end the stream

    def push(self, batch: Sequence[Message]) -> None:
        if self.lagged or self.closed:
            return  # the catch-up read will include this batch
        try:
            self.queue.put_nowait(batch)
        except asyncio.QueueFull:
            self.lagged = True  # a full queue wakes the stream anyway

    def close(self) -> None:
        self.closed = True
        try:
            self.queue.put_nowait(())  # wake the stream if it waits
        except asyncio.QueueFull:
            pass


@dataclass(slots=True)
class _Watch:
    """The hub's cursor over one job: the ids it forwarded recently and its listeners."""

    floor: int  # never read at or below this (the lowest Last-Event-ID before the first read)
    listeners: set[Listener] = field(default_factory=set)
    started: bool = False
    last: int = 0
    seen: set[int] = field(default_factory=set)

    def low(self) -> int:
        return max(self.floor, self.last - REREAD_WINDOW) if self.started else self.floor

    def take(self, events: Iterable[Message]) -> list[Message]:
        """The events not forwarded before; moves the cursor."""
        fresh = [m for m in events if m.id > self.floor and m.id not in self.seen]
        if not self.started:
            self.started, self.last = True, self.floor
        for m in fresh:
            self.seen.add(m.id)
            self.last = max(self.last, m.id)
        low = self.last - REREAD_WINDOW
        self.seen = {i for i in self.seen if i > low}
        return fresh


class EventHub:
    """Reads new job events once per process and fans them out to each job's streams."""

    def __init__(self, factory: sessionmaker[Session], *, redis_url: str | None = None,
                 redis_socket_timeout_s: float = 2.0, redis_connect_timeout_s: float = 2.0,
                 poll_s: float = POLL_S, safety_poll_s: float = SAFETY_POLL_S,
                 on_listeners: Callable[[int], None] | None = None,
                 commit_probe: Callable[[], Hashable] | None = None,
                 probe_s: float = PROBE_S) -> None:
        self.factory = factory
        #: Told the number of open streams whenever it changes (a multiprocess gauge, metrics).
        self.on_listeners = on_listeners
        #: A cheap token that changes when something committed (SQLite: `CommitProbe`).
        self.commit_probe = commit_probe
        self.probe_s = probe_s
        self.redis_url = redis_url
        self.redis_socket_timeout_s = redis_socket_timeout_s
        self.redis_connect_timeout_s = redis_connect_timeout_s
        self.poll_s = poll_s
        self.safety_poll_s = safety_poll_s
        self.redis_ok = False  # the pattern subscription is live
        self.polls = 0  # reads done by the poller (tests and logs)
        self._watches: dict[str, _Watch] = {}
        self._wake = asyncio.Event()
        self._watched = asyncio.Event()  # a job got its first stream (`_wait` starts probing)
        self._limiter = anyio.CapacityLimiter(1)  # the poller never waits behind requests
        #: For the streams' reads (`read`, and the route's opening checks).
        self.read_limiter = anyio.CapacityLimiter(READ_THREADS)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    # --- lifecycle (api.main lifespan) ---------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._poll_forever(), name="event-hub-poller"))
        if self.redis_url:
            self._tasks.append(loop.create_task(self._listen_forever(),
                                                name="event-hub-redis"))

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:  # noqa: BLE001 - shutting down; the cause was logged
                log.debug("event hub task %s ended with an error", task.get_name(),
                          exc_info=True)
        self._tasks.clear()
        for watch in self._watches.values():
            for listener in watch.listeners:
                listener.close()
        self._watches.clear()
        self._listeners_changed()

    # --- streams -------------------------------------------------------------------------------

    @property
    def watched_jobs(self) -> int:
        return len(self._watches)

    @property
    def listeners(self) -> int:
        return sum(len(w.listeners) for w in self._watches.values())

    def subscribe(self, job_id: str, after_id: int) -> Listener:
        """A queue of the job's events from now on; call BEFORE the replay read, so an event
        committed during the replay reaches the queue (duplicates are dropped by the stream)."""
        listener = Listener(job_id)
        if self._stopping:
            listener.close()
            return listener
        watch = self._watches.get(job_id)
        if watch is None:
            watch = self._watches[job_id] = _Watch(floor=after_id)
            self._watched.set()
        elif not watch.started:
            watch.floor = min(watch.floor, after_id)
        watch.listeners.add(listener)
        self._listeners_changed()
        return listener

    def unsubscribe(self, listener: Listener) -> None:
        watch = self._watches.get(listener.job_id)
        if watch is None:
            return
        watch.listeners.discard(listener)
        if not watch.listeners:
            del self._watches[listener.job_id]
        self._listeners_changed()

    def _listeners_changed(self) -> None:
        if self.on_listeners is not None:
            self.on_listeners(self.listeners)

    async def read(self, job_id: str, after_id: int) -> Page:
        """Events of one job after `after_id` (a stream's replay or catch-up), in a thread."""
        return await anyio.to_thread.run_sync(self._read_job, job_id, after_id,
                                              limiter=self.read_limiter)

    def _read_job(self, job_id: str, after_id: int) -> Page:
        with self.factory() as session:
            try:
                # The status first: a job terminal here already committed its terminal event,
                # so the read below includes it.
                job = get_job(session=session, job_id=job_id)
                finished = job is None or job.is_terminal
                events = metrics_repo.list_events_after(session=session, job_id=job_id,
                                                        after_id=after_id, limit=BATCH)
                messages = [to_message(e) for e in events]
            finally:
                session.rollback()
        return Page(messages=messages, finished=finished, full=len(events) >= BATCH)

    # --- the poller ----------------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        delay, failing, token = 0.0, False, None
        while True:
            if delay:
                await self._wait(delay, None if failing else token)
            self._wake.clear()
            lows = {job_id: watch.low() for job_id, watch in self._watches.items()}
            delay = self.safety_poll_s if self.redis_ok else self.poll_s
            # Before the read: a commit during the read changes the token after it.
            token = self.commit_probe() if self.commit_probe is not None else None
            if not lows:
                continue
            try:
                found = await anyio.to_thread.run_sync(self._read_jobs, lows,
                                                       limiter=self._limiter)
            except Exception:  # noqa: BLE001 - the database may come back; streams wait
                if not failing:  # once per outage
                    log.warning("reading job events for %d streamed jobs failed; retrying "
                                "every %.1f s", len(lows), self.poll_s, exc_info=True)
                    failing = True
                delay = self.poll_s
                continue
            if failing:
                log.warning("reading job events works again")
                failing = False
            self.polls += 1
            if await self._dispatch(lows, found):
                delay = 0.0  # a job had a full batch: read on at once

    async def _wait(self, delay: float, token: Hashable | None) -> None:
        """Until `wake()`, `delay` seconds, or (with a commit probe, a stream to feed and the
        `token` taken before the last pass) the probe's token differs from it: something
        committed since. The probe ticks are plain sleeps (a cancel scope per tick cost an idle
        API several times its CPU); with nobody streaming the hub does not probe at all, and a
        first subscriber starts the probing (before, it waited out the rest of the poll
        period: up to `POLL_S` for its first event). The token is the one from before the last
        read, so a commit in between is caught by the first tick."""
        if token is None or self.commit_probe is None:
            with anyio.move_on_after(delay):
                await self._wake.wait()
            return
        deadline = time.monotonic() + delay
        while not self._wake.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if not self._watches:
                # Nobody streams: no probing until a first subscriber (`subscribe`) arrives.
                self._watched.clear()
                with anyio.move_on_after(left):
                    await self._watched.wait()
                continue
            await asyncio.sleep(min(self.probe_s, left))
            if self.commit_probe() != token:
                return

    def _read_jobs(self, lows: dict[str, int]) -> dict[str, list[Message]]:
        found: dict[str, list[Message]] = {}
        items = list(lows.items())
        with self.factory() as session:
            try:
                for start in range(0, len(items), JOBS_PER_STATEMENT):
                    chunk = items[start:start + JOBS_PER_STATEMENT]
                    for event in session.scalars(_poll_statement(chunk)):
                        found.setdefault(event.job_id, []).append(to_message(event))
            finally:
                session.rollback()
        return found

    async def _dispatch(self, lows: dict[str, int], found: dict[str, list[Message]]) -> bool:
        """Forward what is new to each job's listeners; True when a job may have more."""
        more = False
        woken = 0
        for job_id in lows:
            watch = self._watches.get(job_id)
            if watch is None:
                continue  # its last stream closed during the read
            messages = found.get(job_id, [])
            more = more or len(messages) >= BATCH
            fresh = watch.take(messages)
            if not fresh:
                continue
            for listener in list(watch.listeners):
                listener.push(fresh)
                woken += 1
                if woken % FANOUT_CHUNK == 0:
                    await asyncio.sleep(0)  # let those streams send, and other requests in
        return more

    def wake(self) -> None:
        """Read now (a notification arrived)."""
        self._wake.set()

    # --- the Redis listener --------------------------------------------------------------------

    async def _listen_forever(self) -> None:
        from redis.exceptions import RedisError

        backoff, warned = 1.0, False
        while True:
            error = "closed"
            try:
                await self._listen_once()  # returns only by raising
            except (RedisError, OSError, TimeoutError) as exc:
                error = type(exc).__name__
            if self.redis_ok:  # it was up: a new outage starts
                self.redis_ok, backoff, warned = False, 1.0, False
            if not warned:  # once per outage; the poller reads every POLL_S meanwhile
                log.warning("Redis pub/sub for job events unavailable (%s); polling the "
                            "database every %.1f s until it is back", error, self.poll_s)
                warned = True
            self._wake.set()  # poll now: a notification may have been lost
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, REDIS_BACKOFF_MAX_S)

    async def _listen_once(self) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        assert self.redis_url is not None
        client = aioredis.from_url(
            self.redis_url, socket_timeout=self.redis_socket_timeout_s,
            socket_connect_timeout=self.redis_connect_timeout_s,
            retry=Retry(NoBackoff(), 0))  # the loop above retries, with backoff
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.psubscribe(CHANNEL_PATTERN)
            self.redis_ok = True
            log.info("listening for job events on Redis (%s)", CHANNEL_PATTERN)
            self._wake.set()  # read once now: events sent before the subscription
            heard = time.monotonic()
            pinged = False
            while True:
                message = await pubsub.get_message(timeout=1.0)
                now = time.monotonic()
                if message is not None:
                    heard, pinged = now, False
                    if message.get("type") == "pmessage":
                        self._notify(message.get("channel"))
                    continue
                if not pinged and now - heard > REDIS_IDLE_PING_S:
                    await pubsub.ping()  # the PONG arrives as a message
                    pinged = True
                elif pinged and now - heard > REDIS_IDLE_PING_S + self.redis_socket_timeout_s:
                    raise TimeoutError("no answer to PING on the pub/sub connection")
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(
                    self.redis_socket_timeout_s):
                try:
                    await pubsub.aclose()
                    await client.aclose()
                except Exception:  # noqa: BLE001 - the connection is being dropped anyway
                    log.debug("closing the Redis pub/sub failed", exc_info=True)

    def _notify(self, channel: Any) -> None:
        name = channel.decode(errors="replace") if isinstance(channel, bytes) else str(channel)
        parts = name.split(":")
        if len(parts) == 3 and parts[1] in self._watches:
            self._wake.set()


def _poll_statement(lows: Sequence[tuple[str, int]]) -> sa.Select[JobEvent]:
    """Up to BATCH events per job with id above that job's low-water mark, oldest first."""
    rank = sa.func.row_number().over(partition_by=JobEvent.job_id,
                                     order_by=JobEvent.id).label("rank")
    wanted = sa.or_(*(sa.and_(JobEvent.job_id == job_id, JobEvent.id > low)
                      for job_id, low in lows))
    ranked = sa.select(JobEvent, rank).where(wanted).subquery()
    event = aliased(JobEvent, ranked)
    return sa.select(event).where(ranked.c.rank <= BATCH).order_by(ranked.c.id)
