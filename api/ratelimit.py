"""Request rate per API key: a token bucket of `api.rate_limit_per_minute` (0 turns it off).

A bucket holds up to `rate` tokens and refills at `rate` per minute; every authenticated request
takes one, and a request finding the bucket empty is refused with 429 and the seconds until a
token is back. Buckets are keyed by a prefix of the key's SHA-256, never by the key.

With `settings.redis.url` the buckets live in Redis (a Lua script, atomic, timed by the Redis
server's clock), so every API process shares them; without it they live in this process.

A busy key does not pay a Redis round trip (and a worker-thread hop) per request: a process
takes a small lease of tokens from the shared bucket (`RedisRateLimiter`) and spends it on the
event loop. The lease starts at one token and doubles each time the previous one was used up
within `LEASE_S`, up to one second of the key's refill (`LEASE_MAX` at most); tokens still
unused after `LEASE_S` are dropped, so a process can hold back at most that many of a key's
tokens for a second. A deployment limit under 120 per minute leases one token at a time, the
exact shared bucket.

Redis failing must not take the API down: the request is allowed, a warning is logged once per
outage, and for `REDIS_RETRY_S` the process-local buckets stand in instead of paying the socket
timeout on every request.

The limiter is built from settings on first use and kept on `app.state.rate_limiter`. Requests
are metered by `meter` from the event loop: the process-local buckets right there (a dict update
under a lock) and a leased token the same way, a call to Redis in a worker thread (a blocking
client: its 0.25 s socket timeout is the kernel's, so a busy event loop cannot make a healthy
Redis look down, which an asyncio timeout would).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
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
#: The most tokens a process takes from a Redis bucket in one call (see the module doc).
LEASE_MAX = 16
#: Seconds a process may spend a lease; then its unused tokens are dropped.
LEASE_S = 1.0

_build_lock = threading.Lock()  # one limiter per app even when first requests race

# KEYS[1] bucket; ARGV[1] capacity (= tokens per minute), ARGV[2] tokens wanted (a lease).
# Returns {granted (0 = refused, else 1..wanted), wait in ms}.
# Tokens are stored as a string: Lua numbers returned or stored as integers would be truncated.
_TOKEN_BUCKET_LUA = """
local capacity = tonumber(ARGV[1])
local wanted = tonumber(ARGV[2])
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
local granted = 0
local wait_ms = 0
if tokens >= 1 then
  granted = math.min(wanted, math.floor(tokens))
  tokens = tokens - granted
else
  wait_ms = math.ceil((1 - tokens) / per_ms)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], 61000)
return {granted, wait_ms}
"""


class RateLimiter(Protocol):
    #: Whether `check` waits for the network (then it runs in a worker thread).
    blocking: bool

    def check(self, bucket_id: str) -> None:
        """Take one token from the bucket, or raise TooManyRequests."""

    def take_leased(self, bucket_id: str) -> bool:
        """Take a token this process already holds (no waiting); False: call `check`."""


def _refuse(per_minute: int, wait_s: float) -> TooManyRequests:
    return TooManyRequests(
        f"more than {per_minute} requests per minute with this API key, this deployment's "
        f"limit; retry after {max(1, math.ceil(wait_s))} s", retry_after_s=math.ceil(wait_s))


class NoRateLimit:
    """`rate_limit_per_minute = 0`: every request passes."""

    blocking = False

    def check(self, bucket_id: str) -> None:  # noqa: ARG002 - the protocol's signature
        return None

    def take_leased(self, bucket_id: str) -> bool:  # noqa: ARG002 - the protocol's signature
        return True


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

    def take_leased(self, bucket_id: str) -> bool:  # noqa: ARG002 - the protocol's signature
        return False  # `check` itself never waits

    def _drop_full(self, now: float) -> None:
        """Forget buckets idle for a minute: they are full, the same as a new one."""
        idle = [k for k, (_t, at) in self._buckets.items() if now - at >= 60.0]
        for key in idle:
            del self._buckets[key]


@dataclass
class _Lease:
    """Tokens of one Redis bucket this process holds until `expires`."""

    left: int
    expires: float
    size: int  # how many the last call asked for


class RedisRateLimiter:
    """Token buckets in Redis, shared by every API process, spent through small per-process
    leases (module doc); fails open when Redis does."""

    blocking = True

    def __init__(self, per_minute: int, url: str, *, client: Any = None,
                 clock: Any = time.monotonic) -> None:
        import redis

        self.per_minute = per_minute
        #: At most one second of the key's refill per lease; 1 = the exact shared bucket.
        self.lease_max = max(1, min(LEASE_MAX, per_minute // 60))
        self.clock = clock
        self.client = client or redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S,
            health_check_interval=30)
        self.script = self.client.register_script(_TOKEN_BUCKET_LUA)
        self.fallback = LocalRateLimiter(per_minute)
        self._down_until = 0.0
        self._warned = False
        self._leases: dict[str, _Lease] = {}
        self._lock = threading.Lock()

    def take_leased(self, bucket_id: str) -> bool:
        with self._lock:
            lease = self._leases.get(bucket_id)
            if lease is None or lease.left <= 0 or self.clock() >= lease.expires:
                return False
            lease.left -= 1
            return True

    def _wanted(self, bucket_id: str, now: float) -> int:
        """The next lease's size: double the last one if it was used up in time, else 1."""
        lease = self._leases.get(bucket_id)
        if lease is None or now >= lease.expires:
            return 1
        return min(self.lease_max, lease.size * 2)

    def _keep(self, bucket_id: str, granted: int, wanted: int, now: float) -> None:
        """Hold the tokens granted beyond the one this request takes, for `LEASE_S` (added to
        a lease a concurrent request took meanwhile and has not used up)."""
        if self.lease_max == 1:
            return
        with self._lock:
            lease = self._leases.get(bucket_id)
            if lease is not None and now < lease.expires and lease.left > 0:
                lease.left += granted - 1  # a concurrent request's lease: keep both
                lease.size = max(lease.size, wanted)
            else:
                self._leases[bucket_id] = _Lease(granted - 1, now + LEASE_S, wanted)
            if len(self._leases) > MAX_LOCAL_BUCKETS:
                for key in [k for k, v in self._leases.items() if now >= v.expires]:
                    del self._leases[key]

    def check(self, bucket_id: str) -> None:
        import redis

        if self.take_leased(bucket_id):
            return
        if time.monotonic() < self._down_until:
            self.fallback.check(bucket_id)
            return
        now = self.clock()
        with self._lock:
            wanted = self._wanted(bucket_id, now)
        try:
            granted, wait_ms = self.script(keys=[REDIS_KEY_PREFIX + bucket_id],
                                           args=[self.per_minute, wanted])
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
        if not int(granted):
            raise _refuse(self.per_minute, int(wait_ms) / 1000.0)
        self._keep(bucket_id, int(granted), wanted, now)  # even 1: the next lease grows


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
    """`check_rate` from the event loop: inline for the process-local buckets and for a token
    this process holds from a Redis lease, else in a worker thread for Redis.

    Raises:
        TooManyRequests: the key is over `api.rate_limit_per_minute` (`retry_after_s` set).
    """
    limiter = get_rate_limiter(request, settings)
    bucket_id = key_hash[:BUCKET_ID_LEN]
    if not limiter.blocking:
        limiter.check(bucket_id)
    elif not limiter.take_leased(bucket_id):  # a leased token: no hop, no round trip
        await run_in_threadpool(limiter.check, bucket_id)
