"""PageCache: hit, miss, expiry, LRU, single flight, stale-if-error, cache off."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from music_facade.cache import (
    LINK,
    LIST,
    TRACK,
    CachedPage,
    Lookup,
    MemoryBackend,
    PageCache,
    cache_key,
)
from music_facade.config import CacheSettings
from music_facade.errors import UpstreamError, UpstreamRejected, UpstreamTimeout
from tests.support.clock import Clock


class Loader:
    """Counts its calls and returns a new body each time, or raises what it is told to."""

    def __init__(self) -> None:
        self.calls = 0
        self.error: Exception | None = None

    def __call__(self) -> bytes:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return f'{{"n":{self.calls}}}'.encode()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(clock: Clock, ttl: float = 30, max_entries: int = 1024, stale: float = 300) -> PageCache:
    return PageCache(
        CacheSettings(ttl=ttl, max_entries=max_entries, stale_if_error=stale), clock=clock
    )


def test_miss_then_hit_until_expiry(clock: Clock) -> None:
    cache, load = make(clock), Loader()
    first = cache.get("k", load)
    assert first.cache_status == "music-facade; fwd=miss; stored"
    assert first.max_age == 30
    clock.now += 12.4
    hit = cache.get("k", load)
    assert hit.cache_status == "music-facade; hit; ttl=17"
    assert hit.max_age == 17
    assert hit.page == first.page
    assert load.calls == 1
    clock.now += 17.6  # age 30: no longer fresh
    again = cache.get("k", load)
    assert again.cache_status == "music-facade; fwd=stale; stored"
    assert again.page.body == b'{"n":2}'
    assert load.calls == 2


def test_etag_is_derived_from_the_body(clock: Clock) -> None:
    a = CachedPage.make(b"same", 1.0)
    assert a.etag == CachedPage.make(b"same", 2.0).etag
    assert a.etag != CachedPage.make(b"other", 1.0).etag
    assert len(a.etag) == 32


def test_keys_are_separate(clock: Clock) -> None:
    cache, load = make(clock), Loader()
    cache.get("a", load)
    cache.get("b", load)
    assert load.calls == 2
    assert cache.get("a", load).page.body == b'{"n":1}'


def test_lru_evicts_least_recently_used(clock: Clock) -> None:
    cache, load = make(clock, max_entries=2), Loader()
    cache.get("a", load)
    cache.get("b", load)
    cache.get("a", load)  # a is now more recent than b
    cache.get("c", load)  # evicts b
    assert load.calls == 3
    assert cache.get("a", load).cache_status.startswith("music-facade; hit")
    assert cache.get("b", load).cache_status == "music-facade; fwd=miss; stored"
    assert load.calls == 4


def test_cache_off(clock: Clock) -> None:
    cache, load = make(clock, ttl=0), Loader()
    for _ in range(3):
        found = cache.get("k", load)
        assert found.cache_status == "music-facade; fwd=bypass"
        assert found.max_age == 0
    assert load.calls == 3


def test_stale_if_error_serves_the_old_copy(clock: Clock) -> None:
    cache, load = make(clock, ttl=30, stale=300), Loader()
    stored = cache.get("k", load)
    clock.now += 100
    load.error = UpstreamTimeout("slow")
    stale = cache.get("k", load)
    assert stale.page == stored.page
    assert stale.cache_status == "music-facade; fwd=stale; ttl=-70; detail=stale-if-error"
    assert stale.max_age == 0
    clock.now += 230  # age 330 = ttl + stale_if_error: the last moment it may be served
    assert cache.get("k", load).page == stored.page
    clock.now += 1
    with pytest.raises(UpstreamTimeout):
        cache.get("k", load)


def test_caller_errors_are_never_hidden_by_stale_copies(clock: Clock) -> None:
    cache, load = make(clock), Loader()
    cache.get("k", load)
    clock.now += 31
    load.error = UpstreamRejected("bad cursor")
    with pytest.raises(UpstreamRejected):
        cache.get("k", load)


def test_errors_are_not_cached(clock: Clock) -> None:
    cache, load = make(clock), Loader()
    load.error = UpstreamError("boom")
    with pytest.raises(UpstreamError):
        cache.get("k", load)
    load.error = None
    assert cache.get("k", load).cache_status == "music-facade; fwd=miss; stored"
    assert load.calls == 2


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def run_concurrently(cache: PageCache, load: Callable[[], bytes], n: int) -> list[object]:
    """n threads ask for one key; the load returns only once the other n-1 are waiting on it."""
    results: list[object] = [None] * n

    def gated() -> bytes:
        wait_for(lambda: cache.followers("k") == n - 1)
        return load()

    def worker(i: int) -> None:
        try:
            results[i] = cache.get("k", gated)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    return results


def test_single_flight_makes_one_load(clock: Clock) -> None:
    cache, load = make(clock), Loader()
    results = run_concurrently(cache, load, 8)
    assert load.calls == 1
    lookups = [r for r in results if isinstance(r, Lookup)]
    assert len(lookups) == 8
    assert len({r.page.body for r in lookups}) == 1
    statuses = sorted(r.cache_status for r in lookups)
    assert statuses.count("music-facade; fwd=miss; stored") == 1
    assert statuses.count("music-facade; fwd=miss; stored; collapsed") == 7


def test_single_flight_shares_the_error(clock: Clock) -> None:
    cache, load = make(clock), Loader()
    load.error = UpstreamTimeout("slow")
    results = run_concurrently(cache, load, 5)
    assert load.calls == 1
    assert all(isinstance(r, UpstreamTimeout) for r in results)
    assert cache.followers("k") == 0


def test_the_backend_given_is_the_one_used_even_while_empty(clock: Clock) -> None:
    # An empty backend has len() 0: the cache must not take it for "none given".
    backend = MemoryBackend(max_entries=16, retention=60, clock=clock)
    cache = PageCache(CacheSettings(), backend, clock)
    assert cache.backend is backend
    cache.get("k", Loader())
    assert backend.size() == (1, len(b'{"n":1}'))


def test_memory_backend_is_thread_safe() -> None:
    backend = MemoryBackend(max_entries=16, retention=60, clock=time.monotonic)
    page = CachedPage.make(b"x", 0)
    errors: list[BaseException] = []

    def hammer(seed: int) -> None:
        try:
            for i in range(5000):
                key = str((i * 7 + seed) % 40)
                backend.set(key, page)
                backend.get(str((i + seed) % 40))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(backend) <= 16


def test_memory_backend_size_follows_stores_evictions_and_expiry(clock: Clock) -> None:
    backend = MemoryBackend(max_entries=3, retention=60, clock=clock)

    def page(n: int) -> CachedPage:
        return CachedPage.make(b"x" * n, clock.now)

    backend.set("a", page(10))
    backend.set("b", page(20))
    assert backend.size() == (2, 30)
    backend.set("a", page(5))  # replaced: its old bytes go
    assert backend.size() == (2, 25)
    backend.set("c", page(1))
    backend.set("d", page(100))  # full: "b", the least recently used, is evicted
    assert backend.get("b") is None
    assert backend.size() == (3, 106)
    clock.now += 30
    backend.set("e", page(7))  # evicts "a" (least recently used)
    assert backend.size() == (3, 108)
    clock.now += 31  # "c" and "d" are past retention; "e" is not
    assert backend.size() == (1, 7)
    assert [backend.get(k) is not None for k in "abcde"] == [False] * 4 + [True]


def test_an_entry_with_its_own_lifetime_ends_then_and_is_never_stale(clock: Clock) -> None:
    cache, load = make(clock, ttl=30, stale=300), Loader()
    first = cache.get("link", load, lambda body: 100)  # longer than the cache's ttl
    assert first.max_age == 100
    assert first.page.expires_at == clock.now + 100
    clock.now += 99
    assert cache.get("link", load, lambda body: 100).cache_status == "music-facade; hit; ttl=1"
    clock.now += 1
    load.error = UpstreamTimeout("slow")
    with pytest.raises(UpstreamTimeout):  # no stale-if-error past its own expiry
        cache.get("link", load, lambda body: 100)
    load.error = None
    short = cache.get("short", load, lambda body: 5)  # shorter than the cache's ttl
    clock.now += 5
    assert cache.get("short", load, lambda body: 5).page != short.page
    assert load.calls == 4


def test_an_entry_lifetime_survives_the_shared_store_format() -> None:
    from music_facade.shared.pages import pack, unpack

    page = CachedPage.make(b'{"url":"https://x"}', 1000.5, 1070.25)
    assert unpack(pack(page)) == page
    plain = CachedPage.make(b"{}", 1000.5)
    assert unpack(pack(plain)) == plain


# --- keys: no two kinds or accounts share an entry ----------------------------------------------

KEY_PARTS = st.lists(st.text(alphabet=st.sampled_from("ab1:\x1f"), max_size=4), max_size=4)


@settings(max_examples=500, derandomize=True, database=None)
@given(kind_a=st.sampled_from([LIST, TRACK, LINK]), a=KEY_PARTS,
       kind_b=st.sampled_from([LIST, TRACK, LINK]), b=KEY_PARTS)  # fmt: skip
def test_keys_are_equal_only_for_equal_parts(
    kind_a: str, a: list[str], kind_b: str, b: list[str]
) -> None:
    # Parts drawn from the separator, digits and colons: whatever they hold, keys differ.
    assert (cache_key(kind_a, *a) == cache_key(kind_b, *b)) == ((kind_a, a) == (kind_b, b))
