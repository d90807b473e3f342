"""/v1/jobs/{id}/events: the job's events as Server-Sent Events (replay, then tail).

The generator owns its resources: its own DB session (never the request's) and its own Redis
pub/sub, both closed in `finally` (client gone, stream finished, or server shutdown).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Query, Request
from sqlalchemy.orm import Session, sessionmaker
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from api.deps import JobDep, SessionDep, SettingsDep
from api.routes import AUTHED, error_responses
from api.routes.jobs import Limit
from api.schemas import JobEventPage
from api.services import events as service
from streamguard.contract import TERMINAL_STATUSES, EventKind, events_channel
from streamguard.db import metrics as metrics_repo
from streamguard.db.jobs import get_job
from streamguard.db.models import JobEvent

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["events"],
                   responses=error_responses(*AUTHED, 404))

#: Event ids are 64-bit signed integers on PostgreSQL and SQLite.
EVENT_ID_MAX = 2**63 - 1

POLL_S = 0.5  # DB polling period without Redis; also the Redis wait before a safety re-read
#: Ids below the last sent one that are re-read on every wake-up. PostgreSQL hands out ids at
#: INSERT but rows become visible at COMMIT, so a smaller id can appear after a larger one was
#: sent; re-reading a small window (cheap: a job has few events) catches those late commits.
REREAD_WINDOW = 200
BATCH = 500


def is_terminal_event(event: JobEvent) -> bool:
    return event.kind == EventKind.STATUS and event.payload.get("status") in TERMINAL_STATUSES


class _Reader:
    """Reads events after a moving low-water mark, remembering which ids were already sent."""

    def __init__(self, factory: sessionmaker[Session], job_id: str, after_id: int) -> None:
        self.session = factory()
        self.job_id = job_id
        self.floor = after_id  # never resend what the client had before connecting
        self.last_sent = after_id
        self.sent: set[int] = set()

    def read(self) -> tuple[list[JobEvent], bool]:
        """(unsent events, job finished). The status is read first: a job that is terminal
        here already committed its terminal event, so the event read below includes it."""
        try:
            job = get_job(session=self.session, job_id=self.job_id)
            finished = job is None or job.is_terminal
            low = max(self.floor, self.last_sent - REREAD_WINDOW)
            events = metrics_repo.list_events_after(session=self.session, job_id=self.job_id,
                                                    after_id=low, limit=BATCH)
            self.session.expunge_all()
        finally:
            self.session.rollback()  # end the snapshot so the next read sees new commits
        fresh = [e for e in events if e.id not in self.sent]
        # A full batch means more may follow; report "not finished" so the caller reads again.
        return fresh, finished and len(events) < BATCH

    def mark(self, event_id: int) -> None:
        self.sent.add(event_id)
        self.last_sent = max(self.last_sent, event_id)
        low = self.last_sent - REREAD_WINDOW
        self.sent = {i for i in self.sent if i > low}

    def close(self) -> None:
        self.session.close()


async def event_stream(*, factory: sessionmaker[Session], redis_url: str | None, job_id: str,
                       after_id: int) -> AsyncIterator[dict[str, Any]]:
    """Replay events after `after_id`, then tail until a terminal `status` event."""
    reader = _Reader(factory, job_id, after_id)
    redis: Any = None
    pubsub: Any = None
    try:
        if redis_url:
            import redis.asyncio as aioredis

            redis = aioredis.from_url(redis_url)
            pubsub = redis.pubsub()
            # Subscribe BEFORE the replay: a notification sent meanwhile is not lost.
            await pubsub.subscribe(events_channel(job_id))
        while True:
            events, finished = await run_in_threadpool(reader.read)
            for event in events:
                reader.mark(event.id)
                yield {"id": str(event.id), "event": event.kind,
                       "data": service.sse_data(event)}
                if is_terminal_event(event):
                    return
            if finished:
                return  # terminal and nothing left to send (e.g. Last-Event-ID past the end)
            if events:
                continue  # maybe a full batch: read on before waiting
            pubsub = await _wait(pubsub)
    finally:
        with anyio.CancelScope(shield=True):  # clean up even when cancelled (client gone)
            if pubsub is not None:
                try:
                    await pubsub.unsubscribe()
                    await pubsub.aclose()
                except Exception:  # noqa: BLE001 - a broken connection is being dropped anyway
                    log.debug("closing pub/sub for job %s failed", job_id, exc_info=True)
            if redis is not None:
                await redis.aclose()
            reader.close()


async def _wait(pubsub: Any) -> Any:
    """Until a notification arrives or POLL_S passes; returns the pub/sub (None if it broke)."""
    if pubsub is None:
        await anyio.sleep(POLL_S)
        return None
    from redis.exceptions import RedisError

    try:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=POLL_S)
        while message is not None:  # drain: one DB read answers every pending notification
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0)
    except (RedisError, OSError):
        log.warning("Redis pub/sub failed; falling back to polling the database", exc_info=True)
        try:
            await pubsub.aclose()
        except Exception:  # noqa: BLE001
            pass
        return None
    return pubsub


SSE_DESCRIPTION = """A Server-Sent Events stream (`text/event-stream`), not JSON.

Stored events after `Last-Event-ID` are replayed first, then new ones follow live; the stream
ends after the job's terminal `status` event. Each message is::

    id: <event id>
    event: <kind: status | epoch | warning | checkpoint | test>
    data: <the payload as one line of JSON>

The payload of each kind is the `data` of the matching `JobEventRead` variant (`StatusPayload`,
`EpochMetrics`, `WarningPayload`, `CheckpointPayload`, `TestMetrics`); `GET
/v1/jobs/{job_id}/events/history` returns the same events as JSON. Comment lines (`: ping`)
keep the connection open. To resume, send the last `id` seen as the `Last-Event-ID` header."""

LastEventId = Annotated[str | None, Header(
    alias="last-event-id", min_length=1, max_length=19, pattern=r"^[0-9]{1,19}$",
    description="Replay events after this id (the `id:` of the last message received).")]


def _after_id(header: str | None, query: int | None) -> int:
    """The replay point; a header above the id range is a 422 like any other bad field."""
    if header is not None:
        value = int(header)
        if value > EVENT_ID_MAX:
            from api.errors import InvalidRequest

            raise InvalidRequest(f"Last-Event-ID {header} is out of range; accepted: 0 to "
                                 f"{EVENT_ID_MAX}", field="Last-Event-ID")
        return value
    return query or 0


@router.get(
    "/{job_id}/events", response_class=EventSourceResponse, operation_id="streamJobEvents",
    description=SSE_DESCRIPTION,
    responses={200: {"description": "The event stream (see the operation's description).",
                     # A string, not an object schema: generated clients hand the stream's
                     # text over as is (an object schema makes them parse it as JSON).
                     "content": {"text/event-stream": {"schema": {
                         "type": "string", "description": "SSE frames: `id:`, `event:`, "
                         "`data:` lines, a blank line between messages."}}}}})
async def stream_job_events(
    request: Request, job: JobDep, session: SessionDep, settings: SettingsDep,
    last_event_id: Annotated[int | None, Query(
        ge=0, le=EVENT_ID_MAX,
        description="Replay events after this id (when the header is absent).")] = None,
    last_event_id_header: LastEventId = None,
) -> EventSourceResponse:
    """Replay stored events after Last-Event-ID, then follow the job live until it finishes."""
    after = _after_id(last_event_id_header, last_event_id)
    session.close()  # the ownership check is done; the stream must not pin this connection
    stream = event_stream(factory=request.app.state.session_factory,
                          redis_url=settings.redis.url, job_id=job.id, after_id=after)
    return EventSourceResponse(stream, ping=settings.api.sse_ping_s)


@router.get("/{job_id}/events/history", response_model=JobEventPage,
            operation_id="listJobEvents")
def list_job_events(job: JobDep, session: SessionDep,
                    after_id: Annotated[int, Query(ge=0, le=EVENT_ID_MAX)] = 0,
                    limit: Limit = 100) -> JobEventPage:
    """The job's stored events, oldest first, typed by kind (what the stream sends)."""
    return service.list_events(session=session, job=job, after_id=after_id, limit=limit)
