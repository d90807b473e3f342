"""Request rate per API key: a token bucket of `api.rate_limit_per_minute` (0 turns it off).

A bucket holds up to `rate` tokens and refills at `rate` per minute; every authenticated request
takes one, and a request finding the bucket empty is refused with 429 and the seconds until a
token is back. Buckets are keyed by a prefix of the key's SHA-256, never by the key.

With `settings.redis.url` the buckets live in Redis (one Lua script per request, atomic, timed by
the Redis server's clock), so every API process shares them; without it they live in this
process. Redis failing must not take the API down: the request is allowed, a warning is logged
once per outage, and for `REDIS_RETRY_S` the process-local buckets stand in instead of paying
the socket timeout on every request.

The limiter is built from settings on first use and kept on `app.state.rate_limiter`. Requests
are metered by `meter` from the event loop: the process-local buckets right there (a dict update
under a lock), the Redis one in a worker thread (a blocking client: its 0.25 s socket timeout is
the kernel's, so a busy event loop cannot make a healthy Redis look down, which an asyncio
timeout would).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any, Protocol

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from streamguard.errors import TooManyRequests
from streamguard.settings import Settings

log = logging.getLogger(__name__)

#: Hex characters of the key's SHA-256 that name its bucket (64 bits: no collisions in practice).
BUCKET_ID_LEN = 16
REDIS_KEY_PREFIX = "sg:ratelimit:"
#: Seconds to wait for Redis; the limiter must never be what makes a request slow.
REDIS_TIMEOUT_S = 0.25
#: After a Redis failure, seconds during which the process-local buckets are used instead.
REDIS_RETRY_S = 10.0
#: Idle process-local buckets are full again after a minute; beyond this many, those are dropped.
MAX_LOCAL_BUCKETS = 10_000

_build_lock = threading.Lock()  # one limiter per app even when first requests race

# KEYS[1] bucket; ARGV[1] capacity (= tokens per minute). Returns {allowed 0/1, wait in ms}.
# Tokens are stored as a string: Lua numbers returned or stored as integers would be truncated.
_TOKEN_BUCKET_LUA = """
local capacity = tonumber(ARGV[1])
local per_ms = capacity / 60000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * per_ms)
local allowed = 0
local wait_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait_ms = math.ceil((1 - tokens) / per_ms)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], 61000)
return {allowed, wait_ms}
"""


class RateLimiter(Protocol):
    #: Whether `check` waits for the network (then it runs in a worker thread).
    blocking: bool

    def check(self, bucket_id: str) -> None:
        """Take one token from the bucket, or raise TooManyRequests."""


def _refuse(per_minute: int, wait_s: float) -> TooManyRequests:
    return TooManyRequests(
        f"more than {per_minute} requests per minute with this API key, this deployment's "
        f"limit; retry after {max(1, math.ceil(wait_s))} s", retry_after_s=math.ceil(wait_s))


class NoRateLimit:
    """`rate_limit_per_minute = 0`: every request passes."""

    blocking = False

    def check(self, bucket_id: str) -> None:  # noqa: ARG002 - the protocol's signature
        return None


class LocalRateLimiter:
    """Token buckets in this process (one API process, or no Redis configured)."""

    blocking = False

    def __init__(self, per_minute: int, *, clock: Any = time.monotonic) -> None:
        self.per_minute = per_minute
        self.per_s = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # id -> (tokens, at)
        self._lock = threading.Lock()

    def check(self, bucket_id: str) -> None:
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.get(bucket_id, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - at) * self.per_s)
            if tokens < 1:
                self._buckets[bucket_id] = (tokens, now)
                raise _refuse(self.per_minute, (1 - tokens) / self.per_s)
            self._buckets[bucket_id] = (tokens - 1, now)
            if len(self._buckets) > MAX_LOCAL_BUCKETS:
                self._drop_full(now)

    def _drop_full(self, now: float) -> None:
        """Forget buckets idle for a minute: they are full, the same as a new one."""
        idle = [k for k, (_t, at) in self._buckets.items() if now - at >= 60.0]
        for key in idle:
            del self._buckets[key]


class RedisRateLimiter:
    """Token buckets in Redis, shared by every API process; fails open when Redis does."""

    blocking = True

    def __init__(self, per_minute: int, url: str, *, client: Any = None) -> None:
        import redis

        self.per_minute = per_minute
        self.client = client or redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S,
            health_check_interval=30)
        self.script = self.client.register_script(_TOKEN_BUCKET_LUA)
        self.fallback = LocalRateLimiter(per_minute)
        self._down_until = 0.0
        self._warned = False

    def check(self, bucket_id: str) -> None:
        import redis

        if time.monotonic() < self._down_until:
            self.fallback.check(bucket_id)
            return
        try:
            allowed, wait_ms = self.script(keys=[REDIS_KEY_PREFIX + bucket_id],
                                           args=[self.per_minute])
        except (redis.RedisError, OSError) as exc:
            self._down_until = time.monotonic() + REDIS_RETRY_S
            if not self._warned:
                self._warned = True
                log.warning("rate limit: Redis failed (%s); requests are allowed and limited "
                            "per process until it answers again", type(exc).__name__)
            return
        if self._warned:
            self._warned = False
            log.info("rate limit: Redis answers again; limits are shared again")
        if not int(allowed):
            raise _refuse(self.per_minute, int(wait_ms) / 1000.0)


def build_rate_limiter(settings: Settings) -> RateLimiter:
    """The limiter `settings.api` and `settings.redis` ask for."""
    per_minute = settings.api.rate_limit_per_minute
    if per_minute <= 0:
        return NoRateLimit()
    if settings.redis.url:
        return RedisRateLimiter(per_minute, settings.redis.url)
    return LocalRateLimiter(per_minute)


def get_rate_limiter(request: Request, settings: Settings) -> RateLimiter:
    """The app's limiter, built on first use (`app.state.rate_limiter`)."""
    state = request.app.state
    limiter: RateLimiter | None = getattr(state, "rate_limiter", None)
    if limiter is None:
        with _build_lock:
            limiter = getattr(state, "rate_limiter", None)
            if limiter is None:
                limiter = state.rate_limiter = build_rate_limiter(settings)
    return limiter


def check_rate(request: Request, settings: Settings, key_hash: str) -> None:
    """Take one request from the bucket of the key whose SHA-256 hex is `key_hash`.

    Raises:
        TooManyRequests: the key is over `api.rate_limit_per_minute` (`retry_after_s` set).
    """
    get_rate_limiter(request, settings).check(key_hash[:BUCKET_ID_LEN])


async def meter(request: Request, settings: Settings, key_hash: str) -> None:
    """`check_rate` from the event loop: inline for the process-local buckets, in a worker
    thread for Redis.

    Raises:
        TooManyRequests: the key is over `api.rate_limit_per_minute` (`retry_after_s` set).
    """
    limiter = get_rate_limiter(request, settings)
    if limiter.blocking:
        await run_in_threadpool(limiter.check, key_hash[:BUCKET_ID_LEN])
    else:
        limiter.check(key_hash[:BUCKET_ID_LEN])
