"""Verified API keys remembered for a few seconds, so most requests skip the key lookup.

Every authenticated request used to look its key up in the database (the key row, then the
tenant row). A client sends the same key over and over, so the API process remembers, for
`api.key_cache_ttl_s` (10 s by default), which tenant a verified key belongs to. Only keys that
verified are remembered, by their SHA-256 (never the key); an unknown or revoked key is looked
up on every request, so a key created a moment ago works at once.

The price is revocation: a process that verified a key less than `key_cache_ttl_s` ago still
accepts it until that entry expires (then the lookup refuses it). `ttl_s = 0` turns the cache
off. The cache is per process and bounded (`api.key_cache_size`, oldest entries dropped first).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified key speaks for: the tenant (`id`, as routes read `tenant.id`) and the
    key's SHA-256 hex (the rate limiter's bucket)."""

    id: str
    key_hash: str


class KeyCache:
    """key SHA-256 -> Principal, each entry valid for `ttl_s` after its verification.

    Thread-safe: handlers run in the thread pool and on the event loop alike.
    """

    def __init__(self, ttl_s: float, max_entries: int, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> Principal | None:
        """The principal of a key verified less than `ttl_s` ago, else None."""
        if self.ttl_s <= 0:
            return None
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        principal, expires = entry
        if self.clock() >= expires:
            with self._lock:
                if self._entries.get(key_hash) is entry:
                    del self._entries[key_hash]
            return None
        return principal

    def put(self, principal: Principal) -> None:
        """Remember a key that was just verified against the database."""
        if self.ttl_s <= 0:
            return
        with self._lock:
            self._entries[principal.key_hash] = (principal, self.clock() + self.ttl_s)
            self._entries.move_to_end(principal.key_hash)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget(self, key_hash: str) -> None:
        """Drop one key (e.g. revoked through this process)."""
        with self._lock:
            self._entries.pop(key_hash, None)

    def __len__(self) -> int:
        return len(self._entries)
