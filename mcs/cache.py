"""The served bytes per (pool, rendered config, spec version): built once, kept until an input file
changes on disk, with a strong ETag and a precomputed gzip body.
"""
from __future__ import annotations

import asyncio
import dataclasses
import gzip
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mcs.layout import Resolved

log = logging.getLogger(__name__)

# Only worth compressing above this size; tiny bodies grow under gzip.
GZIP_MIN_SIZE = 256


# Distinct variants (server URLs in the served credentials) kept per pool and rendered config; the
# Host header is the client's to choose, so it must not grow the cache without bound.
MAX_VARIANTS = 8

# How stale the served config may be, in seconds: a pool's inputs (files on disk, the store revision)
# are checked at most this often rather than on every request, so a change on disk is served within
# this bound. The command line (`mcs bootstrap|start --input-check-interval`) defaults to this;
# ServedConfigCache and ServerOptions default to 0, which checks on every request.
INPUT_CHECK_INTERVAL = 0.5


class ConfigSource(Protocol):
    """Where served configs come from: the bootstrap directory (mcs.layout) or a store (mcs.store_source)."""

    def resolve(self, pool: str) -> Resolved:
        """Cheap: which rendered config the pool serves and a signature of its inputs."""

    def build(self, resolved: Resolved, version: str) -> bytes:
        """Slow: the served bytes (`resolved.variant` says for which server URL, if that matters)."""


@dataclass(frozen=True)
class Served:
    """One served representation set: identity and gzip bodies with their strong ETags."""

    config_name: str
    version: str
    body: bytes
    etag: str
    gzip_body: bytes | None
    gzip_etag: str
    # The 200 response headers of either coding, computed once (a request copies them, no more).
    headers: dict[str, str] = dataclasses.field(init=False, repr=False, compare=False)
    gzip_headers: dict[str, str] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", {**self.validators(self.etag), "Content-Type": "application/json"})
        object.__setattr__(self, "gzip_headers", {**self.validators(self.gzip_etag),
                                                  "Content-Type": "application/json", "Content-Encoding": "gzip"})

    @staticmethod
    def validators(etag: str) -> dict[str, str]:
        """The headers of both a 200 and a 304: the tag, what the body varies by, and no-cache."""
        # The body depends on both the Accept (spec version) and Accept-Encoding request headers.
        return {"ETag": etag, "Vary": "Accept, Accept-Encoding", "Cache-Control": "no-cache"}

    def matches(self, if_none_match: str) -> bool:
        """If-None-Match (weak comparison, as RFC 9110 asks for GET) against either coding's tag."""
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return "*" in tags or self.etag in tags or self.gzip_etag in tags


def make_served(config_name: str, version: str, body: bytes) -> Served:
    """Hash and compress once; the gzip body is deterministic (mtime 0) so its tag is stable."""
    digest = hashlib.sha256(body).hexdigest()[:40]
    gz = gzip.compress(body, compresslevel=6, mtime=0) if len(body) >= GZIP_MIN_SIZE else None
    return Served(config_name, version, body, f'"{digest}"', gz, f'"{digest}-gz"')


_Key = tuple[str, str, str, str]  # pool, rendered config, spec version, variant


class ServedConfigCache:
    """Concurrent misses for the same key share one build, run off the event loop."""

    def __init__(self, source: ConfigSource, on_build: Callable[[str, str], None] | None = None,
                 check_interval: float = 0.0) -> None:
        self.source = source
        self._on_build = on_build
        self.check_interval = check_interval
        # pool -> (when to check its inputs again, what they resolved to); only pools that resolved
        # get an entry, so clients asking for made-up pools cannot grow it.
        self._resolved: dict[str, tuple[float, Resolved]] = {}
        self._entries: dict[_Key, tuple[tuple[object, ...], Served]] = {}
        self._building: dict[tuple[_Key, tuple[object, ...]], asyncio.Future[Served]] = {}
        self.builds = 0

    async def get(self, pool: str, version: str, variant: str = "") -> Served:
        """The served representation; NotFound/ServeError from the source propagate."""
        resolved = self._resolve(pool)
        key = (pool, resolved.config_name, version, variant)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == resolved.signature:
            return entry[1]
        if variant:
            resolved = dataclasses.replace(resolved, variant=variant)
        building = (key, resolved.signature)
        task = self._building.get(building)
        if task is None:
            # One task per build, not tied to any request: a client that disconnects mid-build
            # neither cancels it for the others nor leaves a half-finished entry behind.
            task = asyncio.ensure_future(self._build(resolved, version))
            self._building[building] = task
            task.add_done_callback(lambda t: self._finished(building, t))
        return await asyncio.shield(task)

    def peek(self, pool: str, version: str, variant: str = "") -> Served | None:
        """The served representation if it is built and current, else None (never builds);
        NotFound/ServeError from resolving the pool propagate."""
        resolved = self._resolve(pool)
        entry = self._entries.get((pool, resolved.config_name, version, variant))
        if entry is not None and entry[0] == resolved.signature:
            return entry[1]
        return None

    def _resolve(self, pool: str) -> Resolved:
        """The source's resolution, reused for check_interval seconds (the staleness bound)."""
        if self.check_interval <= 0:
            return self.source.resolve(pool)
        now = time.monotonic()
        hit = self._resolved.get(pool)
        if hit is not None and now < hit[0]:
            return hit[1]
        try:
            resolved = self.source.resolve(pool)
        except Exception:
            self._resolved.pop(pool, None)
            raise
        self._resolved[pool] = (now + self.check_interval, resolved)
        return resolved

    def _finished(self, building: tuple[_Key, tuple[object, ...]], task: asyncio.Future[Served]) -> None:
        self._building.pop(building, None)
        if task.cancelled() or task.exception() is not None:  # .exception() also marks it retrieved
            return
        self._store(building[0], building[1], task.result())

    async def _build(self, resolved: Resolved, version: str) -> Served:
        def work() -> Served:
            return make_served(resolved.config_name, version, self.source.build(resolved, version))

        self.builds += 1
        if self._on_build is not None:
            self._on_build(resolved.pool, version)
        log.info("building config %s for pool %s at spec %s", resolved.config_name, resolved.pool, version)
        return await asyncio.get_running_loop().run_in_executor(None, work)

    def _store(self, key: _Key, signature: tuple[object, ...], served: Served) -> None:
        pool, config_name, version, variant = key
        # A pool that moved to a new rendered config will not be asked for the old one again.
        for old in [k for k in self._entries if k[0] == pool and k[1] != config_name]:
            del self._entries[old]
        same = [k for k in self._entries if k[:3] == key[:3] and k[3] != variant]
        for old in same[:max(0, len(same) - MAX_VARIANTS + 1)]:
            del self._entries[old]  # the oldest variants first (dicts keep insertion order)
        self._entries[key] = (signature, served)
