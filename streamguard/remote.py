"""Talking to a remote StreamGuard server over HTTP (httpx, no generated client).

- the flags and environment every client command shares (`--url` / STREAMGUARD_URL,
  `--api-key` / STREAMGUARD_API_KEY, `--timeout`) and `make_client`;
- `check`: a non-2xx answer becomes `ApiError` with the server's message, field and request id
  (the one error body, `{"error": {"code", "message", "field", "details", "request_id"}}`);
  `ServerUnreachable` names the URL when nothing answers;
- `request_patiently`: a GET that waits out a restarting server (RETRYABLE_STATUS, backoff);
- `newest`, `all_metrics`, `upload`, `post_job`: the paged lists (pages of at most PAGE),
  dataset uploads and job submission the commands make;
- `download_verified`: stream a checkpoint archive to a temp file, check size and sha256.

A job's event stream (SSE, reconnecting with `Last-Event-ID`) is in
`streamguard/event_stream.py`; the commands that use these are in `streamguard/cli_remote.py`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamguard.errors import StreamGuardError

if TYPE_CHECKING:  # imported where used: `streamguard --help` stays fast
    import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
#: Answers worth retrying (a server starting or shedding load): `request_patiently` and the
#: event stream.
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 5.0
PAGE = 200  # the API's largest page


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
    import httpx

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
    import httpx

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
    import httpx

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


# --- pages, uploads, submissions ---------------------------------------------------------------

def newest(client: httpx.Client, path: str, limit: int,
           params: Mapping[str, Any] | None = None) -> tuple[list[dict[str, Any]], bool]:
    """Up to `limit` items of a cursor-paged list (pages of at most PAGE); whether more
    exist."""
    if limit < 1:
        raise StreamGuardError(f"--limit {limit}: give 1 or more", field="limit")
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {**(params or {}), "limit": min(PAGE, limit - len(items))}
        if cursor:
            query["cursor"] = cursor
        page = request(client, "GET", path, params=query)
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor or len(items) >= limit:
            return items, bool(cursor)


def all_metrics(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    """Every per-epoch metric record of a job, all pages."""
    items: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = request(client, "GET", f"/v1/jobs/{job_id}/metrics",
                       params={"offset": offset, "limit": PAGE})
        items.extend(page["items"])
        offset = page["next_offset"]
    return items


def upload(client: httpx.Client, path: Path, name: str | None) -> dict[str, Any]:
    """Upload a JSONL file as a dataset; its record with the inspection."""
    try:
        with path.open("rb") as fh:
            data = {"name": name} if name else {}
            files = {"file": (path.name, fh, "application/x-ndjson")}
            return dict(request(client, "POST", "/v1/datasets", data=data, files=files))
    except OSError as exc:
        raise StreamGuardError(f"cannot read {path}: {exc.strerror or exc}") from None


def post_job(client: httpx.Client, body: dict[str, Any],
             headers: dict[str, str]) -> httpx.Response:
    """POST /v1/jobs; the checked response (201 a new job, 200 one already submitted with this
    Idempotency-Key)."""
    import httpx

    try:
        return check(client.post("/v1/jobs", json=body, headers=headers))
    except httpx.TransportError as exc:
        raise unreachable(str(client.base_url).rstrip("/"), exc) from None


# --- downloads ---------------------------------------------------------------------------------

def download_verified(client: httpx.Client, path: str, dest: Path, *, sha256: str,
                      size: int | None, on_bytes: Callable[[int], None] = lambda _n: None
                      ) -> None:
    """Stream `path` to `dest`, then check its size and sha256; a mismatch deletes `dest` and
    raises VerificationFailed. A 307 (S3 presigned URL) is followed without our key."""
    import httpx

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
