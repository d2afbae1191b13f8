"""The served-config cache: one build per (pool, rendered config, version) and input state, shared
by concurrent misses; failures reach every waiter and are not cached; ETags and gzip bodies.
"""
from __future__ import annotations

import asyncio
import gzip
import threading

import pytest

from mcs.cache import Served, ServedConfigCache, make_served
from mcs.sources import Resolved
from mcs.serve import ServeError


class FakeSource:
    def __init__(self) -> None:
        self.signature: tuple[object, ...] = (1,)
        self.config_name = "rendered-worker-1"
        self.fail = False
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()

    def resolve(self, pool: str) -> Resolved:
        return Resolved(pool, self.config_name, self.signature)  # type: ignore[arg-type]

    def build(self, resolved: Resolved, version: str) -> bytes:
        self.calls += 1
        self.gate.wait(10)
        if self.fail:
            raise ServeError("broken")
        return f'{{"ignition":{{"version":"{version}"}},"name":"{resolved.config_name}"}}'.encode() * 20


def test_shared_build_and_invalidation() -> None:
    async def main() -> None:
        source = FakeSource()
        cache = ServedConfigCache(source)
        source.gate.clear()
        waiters = [asyncio.ensure_future(cache.get("worker", "3.5.0")) for _ in range(10)]
        await asyncio.sleep(0.05)
        source.gate.set()
        results = await asyncio.gather(*waiters)
        assert source.calls == 1 and len({id(r) for r in results}) == 1
        assert await cache.get("worker", "3.5.0") is results[0]
        await cache.get("worker", "3.2.0")
        assert source.calls == 2
        source.signature = (2,)
        await cache.get("worker", "3.5.0")
        assert source.calls == 3

    asyncio.run(main())


def test_failures_reach_every_waiter_and_are_retried() -> None:
    async def main() -> None:
        source = FakeSource()
        source.fail = True
        cache = ServedConfigCache(source)
        outcomes = await asyncio.gather(*(cache.get("worker", "3.5.0") for _ in range(5)), return_exceptions=True)
        assert all(isinstance(o, ServeError) for o in outcomes) and source.calls == 1
        source.fail = False
        assert isinstance(await cache.get("worker", "3.5.0"), Served) and source.calls == 2

    asyncio.run(main())


def test_a_cancelled_request_does_not_cancel_the_build() -> None:
    async def main() -> None:
        source = FakeSource()
        source.gate.clear()
        cache = ServedConfigCache(source)
        first = asyncio.ensure_future(cache.get("worker", "3.5.0"))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(cache.get("worker", "3.5.0"))
        await asyncio.sleep(0.01)
        first.cancel()
        source.gate.set()
        assert isinstance(await second, Served) and source.calls == 1
        with pytest.raises(asyncio.CancelledError):
            await first

    asyncio.run(main())


def test_old_rendered_configs_are_dropped() -> None:
    async def main() -> None:
        source = FakeSource()
        cache = ServedConfigCache(source)
        await cache.get("worker", "3.5.0")
        source.config_name = "rendered-worker-2"
        await cache.get("worker", "3.5.0")
        assert {k[1] for k in cache._entries} == {"rendered-worker-2"}

    asyncio.run(main())


def test_make_served() -> None:
    body = b'{"ignition":{"version":"3.5.0"}}' * 50
    served = make_served("c", "3.5.0", body)
    assert served.gzip_body is not None and gzip.decompress(served.gzip_body) == body
    assert make_served("c", "3.5.0", body).gzip_body == served.gzip_body  # deterministic
    assert served.etag != served.gzip_etag and served.etag.startswith('"') and served.etag.endswith('"')
    assert served.matches(served.etag) and served.matches(f"W/{served.gzip_etag}") and served.matches("*")
    assert not served.matches('"x"')
    assert make_served("c", "3.5.0", b"{}").gzip_body is None  # too small to gain
