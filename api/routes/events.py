"""/v1/jobs/{id}/events: the job's events as Server-Sent Events (replay, then tail).

A stream holds no database connection and no thread while it waits: it subscribes to the
process's event hub (`api.streams.EventHub`, on `app.state.event_hub`) BEFORE replaying, replays
the history after Last-Event-ID with short reads of its own (worker thread, own session, never
the request's), then sends what the hub puts in its queue until the terminal `status` event.
Its subscription is dropped in `finally` (client gone, stream finished, or server shutdown).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.security import HTTPAuthorizationCredentials
from sse_starlette import EventSourceResponse

from api.deps import (
    JobDep,
    JobId,
    SessionDep,
    _bearer,
    get_current_tenant_blocking,
    get_job_for_tenant,
)
from api.routes import AUTHED, error_responses
from api.routes.jobs import Limit
from api.schemas import JobEventPage
from api.services import events as service
from api.streams import REREAD_WINDOW, EventHub, Message
from streamguard.db.models import Job
from streamguard.settings import Settings

router = APIRouter(prefix="/v1/jobs", tags=["events"],
                   responses=error_responses(*AUTHED, 404))

#: Event ids are 64-bit signed integers on PostgreSQL and SQLite.
EVENT_ID_MAX = 2**63 - 1


class _Sent:
    """Which ids this stream already sent (the replay and the hub's queue overlap)."""

    def __init__(self, after_id: int) -> None:
        self.floor = after_id  # never resend what the client had before connecting
        self.last = after_id
        self.ids: set[int] = set()

    def fresh(self, messages: list[Message] | tuple[Message, ...]) -> list[Message]:
        out = []
        for m in messages:  # ascending ids; anything below the window was handled before
            if m.id > max(self.floor, self.last - REREAD_WINDOW) and m.id not in self.ids:
                self.ids.add(m.id)
                self.last = max(self.last, m.id)
                out.append(m)
        if len(self.ids) > 2 * REREAD_WINDOW:
            low = self.last - REREAD_WINDOW
            self.ids = {i for i in self.ids if i > low}
        return out

    def catch_up_from(self) -> int:
        return max(self.floor, self.last - REREAD_WINDOW)


async def event_stream(*, hub: EventHub, job_id: str, after_id: int) -> AsyncIterator[bytes]:
    """Replay events after `after_id`, then tail until a terminal `status` event."""
    listener = hub.subscribe(job_id, after_id)  # first: nothing committed meanwhile is missed
    sent = _Sent(after_id)
    try:
        low = after_id
        while True:  # replay, BATCH events per read
            page = await hub.read(job_id, low)
            for message in sent.fresh(page.messages):
                yield message.frame
                if message.terminal:
                    return
            if not page.full:
                break
            low = page.messages[-1].id
        if page.finished:
            return  # terminal and nothing left to send (e.g. Last-Event-ID past the end)
        while True:  # tail: only the queue, unless it overflowed
            if listener.lagged and listener.queue.empty():
                listener.lagged = False  # first, so later batches are queued again
                page = await hub.read(job_id, sent.catch_up_from())
                batch: list[Message] | tuple[Message, ...] = page.messages
                listener.lagged = page.full
                finished = page.finished and not page.full
            else:
                batch, finished = tuple(await listener.queue.get()), False
            for message in sent.fresh(batch):
                yield message.frame
                if message.terminal:
                    return
            if finished or (listener.closed and listener.queue.empty()):
                return
    finally:
        hub.unsubscribe(listener)


SSE_DESCRIPTION = """A Server-Sent Events stream (`text/event-stream`), not JSON.

Stored events after `Last-Event-ID` are replayed first, then new ones follow live; the stream
ends after the job's terminal `status` event. Each message is::

    id: <event id>
    event: <kind: status | epoch | step | evaluation | rollback | warning | checkpoint | test>
    data: <the payload as one line of JSON>

The payload of each kind is the `data` of the matching `JobEventRead` variant (`StatusPayload`,
`EpochMetrics`, `StepMetrics`, `EvaluationMetrics`, `RollbackPayload`, `WarningPayload`,
`CheckpointPayload`, `TestMetrics`); `GET
/v1/jobs/{job_id}/events/history` returns the same events as JSON. Comment lines (`: ping`)
keep the connection open. To resume, send the last `id` seen as the `Last-Event-ID` header."""

LastEventId = Annotated[str | None, Header(
    alias="last-event-id", min_length=1, max_length=19, pattern=r"^[0-9]{1,19}$",
    description="Replay events after this id (the `id:` of the last message received).")]


def _authorized_job(request: Request, job_id: str,
                    credentials: HTTPAuthorizationCredentials | None) -> Job:
    settings: Settings = request.app.state.settings
    with request.app.state.session_factory() as session:
        tenant = get_current_tenant_blocking(request, session, settings, credentials)
        return get_job_for_tenant(job_id, session, tenant)


async def get_streamed_job(
    request: Request, job_id: JobId,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Job:
    """`JobDep` for the stream: ONE worker-thread hop, among the hub's few read threads, with a
    session closed before it returns.

    `JobDep` resolves the key and the job in separate thread hops holding one pooled connection
    in between; a burst of stream (re)connections (every client of a restarted server) then
    holds every connection while waiting for a thread, and every thread while waiting for a
    connection, until the pool timeout. Here a connection is held only while a thread runs, and
    opening streams never use more than `api.streams.READ_THREADS` threads. The settings are
    the app's (`create_app`), read from `app.state`: while the app has dependency overrides,
    every sub-dependency is rebuilt on every request, so the stream keeps few.
    """
    hub: EventHub = request.app.state.event_hub
    return await anyio.to_thread.run_sync(_authorized_job, request, job_id, credentials,
                                          limiter=hub.read_limiter)


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
    request: Request, job: Annotated[Job, Depends(get_streamed_job)],
    last_event_id: Annotated[int | None, Query(
        ge=0, le=EVENT_ID_MAX,
        description="Replay events after this id (when the header is absent).")] = None,
    last_event_id_header: LastEventId = None,
) -> EventSourceResponse:
    """Replay stored events after Last-Event-ID, then follow the job live until it finishes."""
    after = _after_id(last_event_id_header, last_event_id)
    stream = event_stream(hub=request.app.state.event_hub, job_id=job.id, after_id=after)
    return EventSourceResponse(stream, ping=request.app.state.settings.api.sse_ping_s)


@router.get("/{job_id}/events/history", response_model=JobEventPage,
            operation_id="listJobEvents")
def list_job_events(job: JobDep, session: SessionDep,
                    after_id: Annotated[int, Query(ge=0, le=EVENT_ID_MAX)] = 0,
                    limit: Limit = 100) -> JobEventPage:
    """The job's stored events, oldest first, typed by kind (what the stream sends)."""
    return service.list_events(session=session, job=job, after_id=after_id, limit=limit)
