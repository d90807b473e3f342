"""The verified-key cache (api/keycache.py): entries live `ttl_s`, the cache is bounded, and a
TTL of 0 remembers nothing."""

from __future__ import annotations

from api.keycache import KeyCache, Principal


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_lives_ttl_seconds_then_is_forgotten() -> None:
    clock = Clock()
    cache = KeyCache(10.0, 100, clock=clock)
    alice = Principal(id="tenant-a", key_hash="h" * 64)
    assert cache.get(alice.key_hash) is None
    cache.put(alice)
    clock.now += 9.9
    assert cache.get(alice.key_hash) == alice
    clock.now += 0.1
    assert cache.get(alice.key_hash) is None
    assert len(cache) == 0  # expired entries are dropped when met


def test_a_verification_renews_the_entry() -> None:
    clock = Clock()
    cache = KeyCache(10.0, 100, clock=clock)
    alice = Principal(id="tenant-a", key_hash="a" * 64)
    cache.put(alice)
    clock.now += 8
    cache.put(alice)  # verified again against the database (e.g. by another request)
    clock.now += 8
    assert cache.get(alice.key_hash) == alice


def test_bounded_oldest_first() -> None:
    cache = KeyCache(60.0, 3, clock=Clock())
    principals = [Principal(id=f"t{i}", key_hash=f"{i:064d}") for i in range(5)]
    for principal in principals:
        cache.put(principal)
    assert len(cache) == 3
    assert [cache.get(p.key_hash) for p in principals] == [None, None, *principals[2:]]


def test_ttl_zero_remembers_nothing_and_forget_drops_one() -> None:
    off = KeyCache(0.0, 10, clock=Clock())
    alice = Principal(id="tenant-a", key_hash="a" * 64)
    off.put(alice)
    assert off.get(alice.key_hash) is None and len(off) == 0

    on = KeyCache(10.0, 10, clock=Clock())
    bob = Principal(id="tenant-b", key_hash="b" * 64)
    on.put(alice)
    on.put(bob)
    on.forget(alice.key_hash)
    assert on.get(alice.key_hash) is None and on.get(bob.key_hash) == bob
