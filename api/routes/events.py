"""/v1/jobs/{id}/events: the job's events as Server-Sent Events (replay, then tail).

The generator owns its resources: its own DB session (never the request's) and its own Redis
pub/sub, both closed in `finally` (client gone, stream finished, or server shutdown).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Query, Request
from sqlalchemy.orm import Session, sessionmaker
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from api.deps import JobDep, SessionDep, SettingsDep
from api.routes import error_responses
from api.schemas import JobEventRead
from streamguard.db import metrics as metrics_repo
from streamguard.db.jobs import get_job
from streamguard.db.models import TERMINAL_STATUSES, EventKind, JobEvent

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["events"], responses=error_responses(401, 404, 422))

POLL_S = 0.5  # DB polling period without Redis; also the Redis wait before a safety re-read
#: Ids below the last sent one that are re-read on every wake-up. PostgreSQL hands out ids at
#: INSERT but rows become visible at COMMIT, so a smaller id can appear after a larger one was
#: sent; re-reading a small window (cheap: a job has few events) catches those late commits.
REREAD_WINDOW = 200
BATCH = 500


def channel(job_id: str) -> str:
    return f"job:{job_id}:events"


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
            await pubsub.subscribe(channel(job_id))
        while True:
            events, finished = await run_in_threadpool(reader.read)
            for event in events:
                reader.mark(event.id)
                yield {"id": str(event.id), "event": event.kind,
                       "data": json.dumps(event.payload, separators=(",", ":"))}
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


@router.get(
    "/{job_id}/events", response_model=JobEventRead, response_class=EventSourceResponse,
    responses={200: {"description": "An SSE stream; each message has `id` (the event id, send "
                                    "it back as Last-Event-ID), `event` (the kind) and `data` "
                                    "(the payload as JSON). It ends after a terminal status.",
                      "content": {"text/event-stream": {"schema": {
                          "$ref": "#/components/schemas/JobEventRead"}}}}})
async def stream_job_events(
    request: Request, job: JobDep, session: SessionDep, settings: SettingsDep,
    last_event_id: Annotated[int | None, Query(ge=0, description="Replay events after this "
                                               "id (when the header is absent).")] = None,
    last_event_id_header: Annotated[int | None, Header(alias="last-event-id", ge=0)] = None,
) -> EventSourceResponse:
    """Replay stored events after Last-Event-ID, then follow the job live until it finishes."""
    after = last_event_id_header if last_event_id_header is not None else last_event_id
    session.close()  # the ownership check is done; the stream must not pin this connection
    stream = event_stream(factory=request.app.state.session_factory,
                          redis_url=settings.redis.url, job_id=job.id, after_id=after or 0)
    return EventSourceResponse(stream, ping=settings.api.sse_ping_s)
