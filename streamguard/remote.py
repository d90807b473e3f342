"""Talking to a remote StreamGuard server over HTTP (httpx, no generated client).

- the flags and environment every client command shares (`--url` / STREAMGUARD_URL,
  `--api-key` / STREAMGUARD_API_KEY, `--timeout`) and `make_client`;
- `check`: a non-2xx answer becomes `ApiError` with the server's message, field and request id
  (the one error body, `{"error": {"code", "message", "field", "details", "request_id"}}`);
  `ServerUnreachable` names the URL when nothing answers;
- `SseParser` and `EventFollower`: a job's Server-Sent Events, reconnecting with
  `Last-Event-ID` (backoff, a bounded outage) and never yielding an event id twice;
- `download_verified`: stream a checkpoint archive to a temp file, check size and sha256.

The commands that use these are in `streamguard/cli_remote.py`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from streamguard.contract import TERMINAL_STATUSES
from streamguard.errors import StreamGuardError

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = frozenset(status.value for status in TERMINAL_STATUSES)
#: Answers worth retrying while following a stream: a server starting or shedding load.
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
#: Seconds without a byte on an event stream before it is treated as dropped (the server pings
#: every 15 s by default, `api.sse_ping_s`).
STREAM_READ_TIMEOUT_S = 60.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 5.0


def add_remote_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None,
                        help=f"server URL (default: $STREAMGUARD_URL or {DEFAULT_URL})")
    parser.add_argument("--api-key", default=None,
                        help="API key (default: $STREAMGUARD_API_KEY)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for a response (default: 30)")


def server_url(args: argparse.Namespace) -> str:
    return str(args.url or os.environ.get("STREAMGUARD_URL") or DEFAULT_URL).rstrip("/")


def api_key(args: argparse.Namespace) -> str:
    key = args.api_key or os.environ.get("STREAMGUARD_API_KEY")
    if not key:
        raise StreamGuardError("no API key: pass --api-key or set STREAMGUARD_API_KEY "
                               "(`streamguard keys create --tenant NAME` makes one)")
    return str(key)


def make_client(args: argparse.Namespace,
                transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """An httpx client for the server, authenticated with the key (`transport`: tests)."""
    return httpx.Client(base_url=server_url(args), transport=transport,
                        headers={"Authorization": f"Bearer {api_key(args)}"},
                        timeout=httpx.Timeout(args.timeout, connect=min(args.timeout, 10.0)))


# --- errors ------------------------------------------------------------------------------------

class ApiError(StreamGuardError):
    """The server refused a request: its message, field, request id and HTTP status."""

    code = "api_error"

    def __init__(self, message: str, *, status: int, field: str | None = None,
                 request_id: str | None = None, details: list[str] | None = None) -> None:
        self.status, self.request_id, self.details = status, request_id, details or []
        notes = [f"field: {field}"] if field else []
        notes += [f"request id {request_id}"] if request_id else []
        text = message + (f" ({', '.join(notes)})" if notes else "")
        if len(self.details) > 1:  # one detail repeats the message
            text += "".join(f"\n  - {d}" for d in self.details)
        super().__init__(text, field=field)


class ServerUnreachable(StreamGuardError):
    """Nothing answered at the URL (refused, timed out, reset), or not for long enough."""

    code = "server_unreachable"


class VerificationFailed(StreamGuardError):
    """A downloaded archive does not match its listed size or sha256."""

    code = "verification_failed"


def api_error(response: httpx.Response) -> ApiError:
    """The error a non-2xx answer stands for (any body: ours, a proxy's, none)."""
    try:
        error = response.json()["error"]
        message = str(error["message"])
    except (ValueError, KeyError, TypeError):
        body = response.text.strip().replace("\n", " ")[:300]
        return ApiError(f"HTTP {response.status_code} from {response.request.url}"
                        + (f": {body}" if body else ""), status=response.status_code,
                        request_id=response.headers.get("x-request-id"))
    details = []
    for item in error.get("details") or []:
        where = item.get("field") or ""
        if item.get("line") is not None:
            where += f" line {item['line']}"
        details.append(f"{where}: {item.get('message')}" if where else str(item.get("message")))
    if response.status_code == 401:
        message += " (check --api-key or STREAMGUARD_API_KEY)"
    if response.status_code == 429 and response.headers.get("retry-after"):
        message += f"; retry after {response.headers['retry-after']} s"
    return ApiError(message, status=response.status_code, field=error.get("field"),
                    request_id=error.get("request_id") or response.headers.get("x-request-id"),
                    details=details)


def check(response: httpx.Response) -> httpx.Response:
    """`response` if it is 2xx, else raise its ApiError."""
    if not response.is_success:
        response.read()
        raise api_error(response)
    return response


def unreachable(url: str, exc: httpx.TransportError) -> ServerUnreachable:
    """A message naming the URL and what went wrong (refused, timeout, ...)."""
    if isinstance(exc, httpx.ConnectError):
        why = "connection refused or host not found; is the server running?"
    elif isinstance(exc, httpx.TimeoutException):
        why = f"no answer in time ({type(exc).__name__})"
    else:
        why = str(exc) or type(exc).__name__
    return ServerUnreachable(f"cannot reach the StreamGuard server at {url}: {why} "
                             "(set --url or STREAMGUARD_URL)")


def request(client: httpx.Client, method: str, path: str, **kw: Any) -> Any:
    """One request; the JSON of a 2xx answer, ApiError or ServerUnreachable otherwise."""
    try:
        response = client.request(method, path, **kw)
    except httpx.TransportError as exc:
        raise unreachable(str(client.base_url).rstrip("/"), exc) from None
    return check(response).json()


def request_patiently(client: httpx.Client, path: str, *, patience_s: float,
                      notice: Callable[[str], None] = lambda _text: None,
                      sleep: Callable[[float], None] = time.sleep,
                      clock: Callable[[], float] = time.monotonic) -> Any:
    """GET `path`, retrying with backoff while the server is unreachable or answers
    502/503/504/429 (a restart), for up to `patience_s`; other refusals raise at once."""
    start, delay, told = clock(), BACKOFF_FIRST_S, None
    while True:
        try:
            return request(client, "GET", path)
        except (ServerUnreachable, ApiError) as exc:
            if isinstance(exc, ApiError) and exc.status not in RETRYABLE_STATUS:
                raise
            if clock() - start + delay > patience_s:
                raise
            if exc.message != told:
                notice(f"{exc.message}; retrying for up to {patience_s:.0f} s")
                told = exc.message
            sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)


# --- Server-Sent Events --------------------------------------------------------------------------

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


# --- downloads -------------------------------------------------------------------------------

def download_verified(client: httpx.Client, path: str, dest: Path, *, sha256: str,
                      size: int | None, on_bytes: Callable[[int], None] = lambda _n: None
                      ) -> None:
    """Stream `path` to `dest`, then check its size and sha256; a mismatch deletes `dest` and
    raises VerificationFailed. A 307 (S3 presigned URL) is followed without our key."""
    digest, written = hashlib.sha256(), 0
    try:
        with client.stream("GET", path, follow_redirects=False) as response:
            if response.status_code in (301, 302, 303, 307, 308):
                location = response.headers["location"]
                with httpx.Client(timeout=client.timeout) as plain, \
                        plain.stream("GET", location) as redirected:
                    written = _save(check(redirected), dest, digest, on_bytes)
            else:
                written = _save(check(response), dest, digest, on_bytes)
    except httpx.TransportError as exc:
        dest.unlink(missing_ok=True)
        raise unreachable(str(client.base_url).rstrip("/"), exc) from None
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    problems = []
    if size is not None and written != size:
        problems.append(f"size {written} bytes, expected {size}")
    if digest.hexdigest() != sha256.lower():
        problems.append(f"sha256 {digest.hexdigest()}, expected {sha256.lower()}")
    if problems:
        dest.unlink(missing_ok=True)
        raise VerificationFailed(f"download of {path} does not match: {'; '.join(problems)}; "
                                 "the file was deleted")


def _save(response: httpx.Response, dest: Path, digest: Any,
          on_bytes: Callable[[int], None]) -> int:
    written = 0
    with dest.open("wb") as out:
        for chunk in response.iter_bytes(1 << 20):
            out.write(chunk)
            digest.update(chunk)
            written += len(chunk)
            on_bytes(len(chunk))
    return written
