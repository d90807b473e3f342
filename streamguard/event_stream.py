"""A job's Server-Sent Events from a remote StreamGuard server (`GET /v1/jobs/{id}/events`).

- `SseParser` / `parse_sse`: the WHATWG rules we need, a line at a time, into `Event`s;
- `EventFollower`: the stream across dropped connections, reconnecting with `Last-Event-ID`
  (backoff, a bounded outage) and never yielding an event id twice; a job that ended while the
  stream was down is completed from the event history.

The HTTP basics (client, errors, retryable answers, backoff) are in `streamguard/remote.py`;
`streamguard watch` prints the events (`streamguard/cli_watch.py`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from streamguard.contract import TERMINAL_STATUSES
from streamguard.remote import (
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    RETRYABLE_STATUS,
    ApiError,
    ServerUnreachable,
    check,
    request,
)

if TYPE_CHECKING:  # imported where used: `streamguard --help` stays fast
    import httpx

TERMINAL = frozenset(status.value for status in TERMINAL_STATUSES)
#: Seconds without a byte on an event stream before it is treated as dropped (the server pings
#: every 15 s by default, `api.sse_ping_s`).
STREAM_READ_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Event:
    """One job event: its id (the SSE `id:`), kind and JSON payload."""

    id: int
    kind: str
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        return self.kind == "status" and self.data.get("status") in TERMINAL


class SseParser:
    """Incremental SSE parsing (the WHATWG rules we need): `feed` one line, get an Event when
    a blank line ends a message with data. Comments (`: ping`) and `retry:` are skipped."""

    def __init__(self) -> None:
        self._id: str | None = None
        self._kind = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> Event | None:
        line = line.rstrip("\r\n")
        if not line:
            event_id, kind, data = self._id, self._kind, self._data
            self._id, self._kind, self._data = None, "message", []
            if not data or event_id is None or not event_id.isdigit():
                return None  # no payload, or no usable id (our server always sends one)
            return Event(int(event_id), kind, json.loads("\n".join(data)))
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._kind = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


def parse_sse(lines: Iterable[str]) -> Iterator[Event]:
    parser = SseParser()
    for line in lines:
        if (event := parser.feed(line)) is not None:
            yield event


@dataclass
class EventFollower:
    """A job's events from `GET /v1/jobs/{id}/events`, across dropped connections.

    After a drop (reset, timeout, a server restart, a 502/503/504) it reconnects with the
    `Last-Event-ID` header (the highest id seen), backing off from BACKOFF_FIRST_S to
    BACKOFF_MAX_S; it gives up (ServerUnreachable) when no connection delivered anything for
    `reconnect_s`. Ids already yielded are never yielded again. Ends after the terminal
    `status` event; a stream that ends early for a job that is already terminal ends with the
    missing events from the history (or, failing that, a status event made from the job).
    """

    client: httpx.Client
    job_id: str
    reconnect_s: float = 120.0
    notice: Callable[[str], None] = lambda _text: None
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    last_id: int | None = None
    seen: set[int] = field(default_factory=set)

    def events(self) -> Iterator[Event]:
        import httpx

        outage_since: float | None = None
        told: str | None = None  # the reason last printed in this outage: print each once
        delay = BACKOFF_FIRST_S
        path = f"/v1/jobs/{self.job_id}/events"
        while True:
            headers = {} if self.last_id is None else {"Last-Event-ID": str(self.last_id)}
            received = False
            try:
                with self.client.stream("GET", path, headers=headers, timeout=httpx.Timeout(
                        10.0, read=STREAM_READ_TIMEOUT_S)) as response:
                    if response.status_code in RETRYABLE_STATUS:
                        response.read()
                        raise _Retry(f"HTTP {response.status_code}")
                    check(response)  # 401, 404, ...: not worth retrying
                    if outage_since is not None:
                        self.notice(f"reconnected after {self.clock() - outage_since:.0f} s "
                                    f"(Last-Event-ID {self.last_id})")
                    parser = SseParser()
                    for line in response.iter_lines():
                        if not received:  # a ping or an event: this connection works
                            received, outage_since, delay = True, None, BACKOFF_FIRST_S
                        event = parser.feed(line)
                        if event is None or event.id in self.seen:
                            continue
                        self._mark(event)
                        yield event
                        if event.terminal:
                            return
                reason = "the server closed the stream"
                if (ended := self._finished_job()) is not None:
                    yield from ended
                    return
            except httpx.TransportError as exc:
                reason = drop_reason(exc)
            except _Retry as exc:
                reason = str(exc)
            now = self.clock()
            if outage_since is None:
                outage_since, told = now, None
            if now - outage_since >= self.reconnect_s:
                raise ServerUnreachable(
                    f"lost the event stream of job {self.job_id} at {self.client.base_url} and "
                    f"could not get it back within {self.reconnect_s:.0f} s ({reason}); "
                    f"`streamguard watch {self.job_id}` follows it again")
            if reason != told:
                after = "" if self.last_id is None else f" with Last-Event-ID {self.last_id}"
                self.notice(f"stream lost ({reason}); reconnecting{after} for up to "
                            f"{self.reconnect_s:.0f} s")
                told = reason
            self.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)

    def _mark(self, event: Event) -> None:
        self.seen.add(event.id)
        self.last_id = event.id if self.last_id is None else max(self.last_id, event.id)

    def _finished_job(self) -> list[Event] | None:
        """The rest of a job that is already terminal; None while it is not, or while the
        server does not answer (a restart closes streams first)."""
        try:
            job = request(self.client, "GET", f"/v1/jobs/{self.job_id}")
            if job["status"] not in TERMINAL:
                return None
            out: list[Event] = []
            after: int | None = self.last_id or 0
            while after is not None:
                page = request(self.client, "GET", f"/v1/jobs/{self.job_id}/events/history",
                               params={"after_id": after, "limit": 200})
                for item in page["items"]:
                    event = Event(int(item["id"]), str(item["kind"]), dict(item["data"]))
                    if event.id not in self.seen:
                        self._mark(event)
                        out.append(event)
                after = page["next_after_id"]
        except ServerUnreachable:
            return None
        except ApiError as exc:
            if exc.status in RETRYABLE_STATUS:
                return None
            raise
        if not any(e.terminal for e in out):
            out.append(Event(self.last_id or 0, "status", {
                "status": job["status"], "from": None, "reason": job["outcome_message"] or ""}))
        return out


def drop_reason(exc: httpx.TransportError) -> str:
    """Why a stream dropped, in a few words."""
    import httpx

    if isinstance(exc, httpx.ConnectError):
        return "connection refused: the server is not answering"
    if isinstance(exc, httpx.ReadTimeout):
        return f"no data for {STREAM_READ_TIMEOUT_S:.0f} s"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the server closed the connection"
    return str(exc) or type(exc).__name__


class _Retry(Exception):
    """An answer that means: try the stream again later."""
