"""The served bytes per (pool, rendered config, spec version): built once, kept until an input file
changes on disk, with a strong ETag and a precomputed gzip body.

In store mode the served config names the server URL the machine reached us by (the request's Host):
that URL is its only part that depends on the request. So a pool's config is built once per spec
version with a placeholder URL, cut around it (a template), and each URL's answer is spliced from the
template: no rebuild, and its ETag and gzip body come from hash and deflate states kept at the cut.
Spliced answers are kept in an LRU of MAX_VARIANTS per pool, rendered config and version.
"""
from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import gzip
import hashlib
import logging
import os
import struct
import time
import weakref
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from mcs.serve import NotAcceptable, embedded
from mcs.sources import ConfigSource, Resolved

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


class BodyFile:
    """A served body in an anonymous in-memory file, sealed against change, for `os.sendfile`: the
    kernel sends from the file's pages, so a large answer costs no copy out of Python's bytes and can
    go out in bounded pieces. Closed when the last reference goes (a send in flight holds one)."""

    __slots__ = ("fd", "size", "__weakref__")

    def __init__(self, data: bytes) -> None:
        fd = os.memfd_create("mcs-served-body", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                        fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.size = len(data)
        weakref.finalize(self, os.close, fd)


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
    # Each coding's BodyFile, made on first use (see body_file); gzip -> file.
    _files: dict[bool, BodyFile] = dataclasses.field(init=False, repr=False, compare=False,
                                                      default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", {**self.validators(self.etag), "Content-Type": "application/json"})
        object.__setattr__(self, "gzip_headers", {**self.validators(self.gzip_etag),
                                                  "Content-Type": "application/json", "Content-Encoding": "gzip"})

    def body_file(self, gzip: bool) -> BodyFile:
        """The identity (or gzip) body as a sealed file, made once; OSError if the system has none."""
        found = self._files.get(gzip)
        if found is None:
            body = self.gzip_body if gzip else self.body
            assert body is not None
            found = self._files[gzip] = BodyFile(body)
        return found

    @staticmethod
    def validators(etag: str) -> dict[str, str]:
        """The headers of both a 200 and a 304: the tag, what the body varies by, and no-cache."""
        # The body depends on both the Accept (spec version) and Accept-Encoding request headers.
        return {"ETag": etag, "Vary": "Accept, Accept-Encoding", "Cache-Control": "no-cache"}

    def matches(self, if_none_match: str) -> bool:
        """If-None-Match (weak comparison, as RFC 9110 asks for GET) against either coding's tag."""
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return "*" in tags or self.etag in tags or self.gzip_etag in tags


# Server URLs no request can bring (`.invalid` is reserved): a template is built with the first, and
# with the second too when the first is not found in it, to tell whether the URL matters at all.
PLACEHOLDER_URL = "https://mcs-template-3f9c2e71d04b.invalid:1"
_SECOND_PLACEHOLDER_URL = "https://mcs-template-8a61d5c0b7e2.invalid:2"
# gzip's member header as gzip.compress(..., mtime=0) writes it: deflate, no flags, mtime 0, OS unknown.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


class Template:
    """A served config cut around its server URL, with the hash and deflate states of the part before."""

    __slots__ = ("config_name", "version", "prefix", "suffix", "_sha", "_deflated", "_crc")

    def __init__(self, config_name: str, version: str, prefix: bytes, suffix: bytes) -> None:
        self.config_name = config_name
        self.version = version
        self.prefix = prefix
        self.suffix = suffix
        self._sha = hashlib.sha256(prefix)
        # A sync flush ends the prefix on a byte boundary with no back-reference beyond it, so any
        # raw deflate stream may follow it.
        compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        self._deflated = compressor.compress(prefix) + compressor.flush(zlib.Z_SYNC_FLUSH)
        self._crc = zlib.crc32(prefix)

    def derive(self, url: str) -> Served:
        """The answer naming `url`: byte for byte what a full build for `url` gives, tagged alike."""
        middle = embedded(url)
        body = b"".join((self.prefix, middle, self.suffix))
        sha = self._sha.copy()
        sha.update(middle)
        sha.update(self.suffix)
        digest = sha.hexdigest()[:40]
        gz: bytes | None = None
        if len(body) >= GZIP_MIN_SIZE:
            compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
            tail = compressor.compress(middle) + compressor.compress(self.suffix) + compressor.flush()
            crc = zlib.crc32(self.suffix, zlib.crc32(middle, self._crc))
            gz = b"".join((_GZIP_HEADER, self._deflated, tail, struct.pack("<II", crc, len(body) & 0xFFFFFFFF)))
        return Served(self.config_name, self.version, body, f'"{digest}"', gz, f'"{digest}-gz"')


def make_template(source: ConfigSource, resolved: Resolved, version: str) -> Template | Served | None:
    """Build once with a placeholder URL: a Template when the URL occurs once, the Served itself when
    the answer does not depend on the URL (a second build with another placeholder is equal), else
    None (each URL then needs a build of its own)."""
    body = source.build(dataclasses.replace(resolved, variant=PLACEHOLDER_URL), version)
    parts = body.split(embedded(PLACEHOLDER_URL))
    if len(parts) == 2:
        return Template(resolved.config_name, version, parts[0], parts[1])
    if len(parts) == 1:
        other = source.build(dataclasses.replace(resolved, variant=_SECOND_PLACEHOLDER_URL), version)
        if other == body:
            return make_served(resolved.config_name, version, body)
    return None


def make_served(config_name: str, version: str, body: bytes) -> Served:
    """Hash and compress once; the gzip body is deterministic (mtime 0) so its tag is stable."""
    digest = hashlib.sha256(body).hexdigest()[:40]
    gz = gzip.compress(body, compresslevel=6, mtime=0) if len(body) >= GZIP_MIN_SIZE else None
    return Served(config_name, version, body, f'"{digest}"', gz, f'"{digest}-gz"')


_Key = tuple[str, str, str, str]  # pool, rendered config, spec version, variant
_TemplateKey = tuple[str, str, str]  # pool, rendered config, spec version


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
        # Least recently used first (a hit moves a variant's entry to the end).
        self._entries: dict[_Key, tuple[tuple[object, ...], Served]] = {}
        self._building: dict[tuple[_Key, tuple[object, ...]], asyncio.Future[Served]] = {}
        self._templates: dict[_TemplateKey, tuple[tuple[object, ...], Template | Served | None]] = {}
        self._making: dict[tuple[_TemplateKey, tuple[object, ...]],
                           asyncio.Future[Template | Served | None]] = {}
        # (pool, rendered config, spec version) -> (inputs' signature, the refusal): a config the
        # version cannot express stays refused until its inputs change, without a build per request.
        self._refused: dict[_TemplateKey, tuple[tuple[object, ...], NotAcceptable]] = {}
        self.builds = 0  # calls of the source's build (a template counts once)
        self.derived = 0  # answers spliced from a template
        # Raised by every change of what peek() can answer (an entry stored or dropped, a refusal
        # kept); with steady_until() it tells the fast path's memo (mcs.fastpath) that peek() would
        # still answer as it did.
        self.generation = 0

    def entry_count(self, pool: str) -> int:
        """How many answers are kept for `pool` (every config, version and server URL)."""
        return sum(1 for k in self._entries if k[0] == pool)

    async def get(self, pool: str, version: str, variant: str = "") -> Served:
        """The served representation; NotFound/ServeError from the source propagate."""
        resolved = self._resolve(pool)
        key = (pool, resolved.config_name, version, variant)
        served = self._current(key, resolved.signature)
        if served is not None:
            return served
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
        return self._current((pool, resolved.config_name, version, variant), resolved.signature)

    def steady_until(self, pool: str) -> float:
        """The time.monotonic() until which peek() for `pool` answers from the resolution it has
        (the inputs are not looked at), as long as `generation` stays; -inf when every peek looks."""
        hit = self._resolved.get(pool) if self.check_interval > 0 else None
        return hit[0] if hit is not None else float("-inf")

    def touch(self, key: _Key) -> None:
        """What a peek() hit of `key` does to the entries: a variant's becomes the most recently used."""
        if key[3] and key in self._entries:
            self._entries[key] = self._entries.pop(key)

    def _current(self, key: _Key, signature: tuple[object, ...]) -> Served | None:
        """The entry kept for `key` if built from inputs of this `signature`; the refusal kept for
        them raised (NotAcceptable); else None."""
        entry = self._entries.get(key)
        if entry is not None and entry[0] == signature:
            if key[3]:
                self._entries[key] = self._entries.pop(key)  # most recently used
            return entry[1]
        refused = self._refused.get(key[:3])
        if refused is not None and refused[0] == signature:
            raise refused[1]
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
            self.generation += 1
            raise
        self._resolved[pool] = (now + self.check_interval, resolved)
        self.generation += 1
        return resolved

    def _finished(self, building: tuple[_Key, tuple[object, ...]], task: asyncio.Future[Served]) -> None:
        self._building.pop(building, None)
        if task.cancelled():
            return
        error = task.exception()  # also marks it retrieved
        if isinstance(error, NotAcceptable):
            (pool, config_name, version, _), signature = building
            for old in [k for k in self._refused if k[0] == pool and k[1] != config_name]:
                del self._refused[old]
            self._refused[(pool, config_name, version)] = (signature, error)
            self.generation += 1
        if error is not None:
            return
        self._store(building[0], building[1], task.result())

    async def _build(self, resolved: Resolved, version: str) -> Served:
        loop = asyncio.get_running_loop()
        if resolved.variant:
            template = await self._template(resolved, version)
            if isinstance(template, Served):
                return template  # the same answer for every server URL
            if template is not None:
                self.derived += 1
                return await loop.run_in_executor(None, template.derive, resolved.variant)

        def work() -> Served:
            return make_served(resolved.config_name, version, self.source.build(resolved, version))

        self._count_build(resolved, version)
        return await loop.run_in_executor(None, work)

    def _count_build(self, resolved: Resolved, version: str) -> None:
        self.builds += 1
        if self._on_build is not None:
            self._on_build(resolved.pool, version)
        log.info("building config %s for pool %s at spec %s", resolved.config_name, resolved.pool, version)

    async def _template(self, resolved: Resolved, version: str) -> Template | Served | None:
        """The pool's template at this version for the current inputs, built once (shared)."""
        key = (resolved.pool, resolved.config_name, version)
        hit = self._templates.get(key)
        if hit is not None and hit[0] == resolved.signature:
            return hit[1]
        making = (key, resolved.signature)
        task = self._making.get(making)
        if task is None:
            self._count_build(resolved, version)
            task = asyncio.ensure_future(asyncio.get_running_loop().run_in_executor(
                None, make_template, self.source, resolved, version))
            self._making[making] = task
            task.add_done_callback(lambda t: self._template_made(making, t))
        return await asyncio.shield(task)

    def _template_made(self, making: tuple[_TemplateKey, tuple[object, ...]],
                       task: asyncio.Future[Template | Served | None]) -> None:
        self._making.pop(making, None)
        if task.cancelled() or task.exception() is not None:
            return
        (pool, config_name, version), signature = making
        for old in [k for k in self._templates if k[0] == pool and k[1] != config_name]:
            del self._templates[old]
        self._templates[(pool, config_name, version)] = (signature, task.result())

    def _store(self, key: _Key, signature: tuple[object, ...], served: Served) -> None:
        pool, config_name, version, variant = key
        # A pool that moved to a new rendered config will not be asked for the old one again.
        for old in [k for k in self._entries if k[0] == pool and k[1] != config_name]:
            del self._entries[old]
        same = [k for k in self._entries if k[:3] == key[:3] and k[3] != variant]
        for old in same[:max(0, len(same) - MAX_VARIANTS + 1)]:
            del self._entries[old]  # the least recently used first (the dict's order)
        self._entries.pop(key, None)
        self._entries[key] = (signature, served)
        self.generation += 1
