"""Running the server: HTTPS and plain listeners, slow-client deadlines, one-line protocol errors,
TLS reload, and N worker processes sharing the ports (SO_REUSEPORT).
"""
from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import time
import weakref
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_request import BaseRequest

from machineconfig.sdnotify import notify
from mcs.answer import SERVER_HEADER
from mcs.app import make_app
from mcs.fastpath import DEADLINE_ATTR, FastPath, FastProtocol, fast_factory
from mcs.metrics import flush_every, multiprocess_dir
from mcs.options import BootstrapOptions, StoreOptions
from mcs.state import build_state, keep_pool_tokens
from mcs.tls import ReloadingTLS

log = logging.getLogger(__name__)


_PROTOCOLS = (web.RequestHandler, FastProtocol)


class ConnectionGuard:
    """Deadlines per connection: a request head must arrive within header_timeout of connecting (or
    of the previous response), and a response must be taken within response_timeout. Connections
    past their deadline are aborted by a sweep once a second; this stops one-byte-a-second clients.
    """

    def __init__(self, header_timeout: float, response_timeout: float) -> None:
        self.header_timeout = header_timeout
        self.response_timeout = response_timeout
        # The open connections (protocols with a `transport`); each one's deadline is an attribute
        # of its own (DEADLINE_ATTR), so the per-request calls are an attribute store and no
        # weak-reference lookup.
        self._handlers: weakref.WeakSet[Any] = weakref.WeakSet()
        self.aborted = 0

    def connection_made(self, handler: Any) -> None:
        setattr(handler, DEADLINE_ATTR, time.monotonic() + self.header_timeout)
        self._handlers.add(handler)

    def connection_lost(self, handler: Any) -> None:
        self._handlers.discard(handler)
        setattr(handler, DEADLINE_ATTR, None)

    def _set(self, protocol: object, seconds: float) -> None:
        # Only real connections (aiohttp's or the fast path's) this guard still watches (their
        # deadline is not None).
        if isinstance(protocol, _PROTOCOLS) and getattr(protocol, DEADLINE_ATTR, None) is not None:
            setattr(protocol, DEADLINE_ATTR, time.monotonic() + seconds)

    def close_all(self) -> None:
        """Abort every connection still open (shutdown)."""
        for handler in list(self._handlers):
            self.connection_lost(handler)
            if handler.transport is not None:
                handler.transport.abort()

    def request_started(self, protocol: object) -> None:
        self._set(protocol, self.response_timeout)

    def request_finished(self, protocol: object) -> None:
        self._set(protocol, self.header_timeout)

    def extend(self, protocol: object, seconds: float) -> None:
        self._set(protocol, seconds)

    def sweep(self) -> int:
        now = time.monotonic()
        late = [h for h in list(self._handlers) if (getattr(h, DEADLINE_ATTR, None) or now) < now]
        for handler in late:
            self.connection_lost(handler)
            if handler.transport is not None:
                handler.transport.abort()
        self.aborted += len(late)
        return len(late)

    async def run(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            if n := self.sweep():
                log.info("closed %d connection(s) that were too slow", n)


class GuardedRequestHandler(web.RequestHandler):
    """aiohttp's protocol with deadlines and one-line, secret-free protocol error responses."""

    def __init__(self, manager: web.Server, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._guard.connection_made(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._guard.connection_lost(self)
        super().connection_lost(exc)

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        # aiohttp's own text can quote the offending request line or header: log the kind only.
        log.info("bad request from %s: %d %s", request.remote, status, type(exc).__name__ if exc else "-")
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        try:
            phrase = HTTPStatus(status).phrase.lower()
        except ValueError:
            phrase = "error"
        resp = web.Response(status=status, text=f"{phrase}\n", content_type="text/plain")
        resp.headers["Server"] = SERVER_HEADER
        resp.force_close()
        return resp


async def serve(options: BootstrapOptions | StoreOptions, stop: asyncio.Event,
                on_ready: Callable[[list[str]], object] | None = None, reuse_port: bool = False,
                fast_paths: list[FastPath] | None = None) -> None:
    """Run the listeners until `stop` is set; each listener's FastPath is appended to `fast_paths`."""
    loop = asyncio.get_running_loop()
    guard = ConnectionGuard(options.header_timeout, options.response_timeout)
    state = build_state(options, guard)
    tls: ReloadingTLS | None = None
    if options.cert is not None and options.key is not None:
        tls = ReloadingTLS(options.cert, options.key)
    # One application per listener: the node API exists on the TLS one only.
    runners = {scheme: web.AppRunner(make_app(state, tls=scheme == "https"), access_log=None,
                                     handle_signals=False) for scheme in ("https", "http")}
    for runner in runners.values():
        await runner.setup()
    handler_args: dict[str, Any] = dict(
        loop=loop, keepalive_timeout=options.header_timeout + 5, max_line_size=options.max_line_size,
        max_field_size=options.max_field_size, max_headers=options.max_headers, access_log=None,
        lingering_time=1.0)

    def fallback_for(scheme: str) -> Callable[[], GuardedRequestHandler]:
        manager = runners[scheme].server
        assert manager is not None

        def fallback() -> GuardedRequestHandler:
            return GuardedRequestHandler(manager, guard=guard, **handler_args)

        return fallback

    servers: list[asyncio.Server] = []
    urls: list[str] = []
    listeners: list[tuple[str, int | None]] = [("https", options.secure_port if tls else None),
                                               ("http", options.insecure_port)]
    tasks = [asyncio.create_task(guard.run()), asyncio.create_task(flush_every(state.metrics))]
    try:
        for scheme, port in listeners:
            if port is None:
                continue
            # Cached config reads are answered by the fast path; it hands anything else to aiohttp.
            fallback = fallback_for(scheme)
            factory: Callable[[], asyncio.Protocol] = fallback
            if options.fast_path:
                fast = FastPath(state, guard, scheme)
                factory = fast_factory(fast, fallback, options.max_headers,
                                       min(options.max_line_size, options.max_field_size))
                if fast_paths is not None:
                    fast_paths.append(fast)
            server = await loop.create_server(
                factory, options.bind_address, port, ssl=tls.context if scheme == "https" and tls else None,
                ssl_handshake_timeout=options.handshake_timeout if scheme == "https" else None,
                backlog=1024, reuse_address=True, reuse_port=reuse_port or None)
            servers.append(server)
            for sock in server.sockets:
                host, bound = sock.getsockname()[:2]
                if scheme == "https":
                    state.tls_port = bound
                shown = f"[{host}]" if ":" in host else host
                urls.append(f"{scheme}://{shown}:{bound}")
        for url in urls:
            log.info("listening on %s", url)
        log.info("serving pools %s from %s (event loop: %s)", ", ".join(state.source.pools()) or "(none yet)",
                 state.source.describe(), type(loop).__module__.split(".")[0])
        if tls is not None:
            tasks.append(asyncio.create_task(tls.watch()))
        if state.node_api is not None:
            tasks.append(asyncio.create_task(keep_pool_tokens(state)))
        if on_ready is not None:
            on_ready(urls)
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        for server in servers:
            server.close()
        for runner in runners.values():
            await runner.cleanup()
        guard.close_all()  # the fast path's connections (aiohttp closed its own)
        state.metrics.flush()
        state.source.close()  # the store's threads end with it


def notify_ready(urls: list[str]) -> bool:
    """sd_notify READY=1 under a Type=notify unit ($NOTIFY_SOCKET); a no-op otherwise."""
    return notify(f"READY=1\nSTATUS=listening on {' '.join(urls)}")


def _run_one(options: BootstrapOptions | StoreOptions, reuse_port: bool) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # With --workers the parent is what systemd watches; each worker's datagram is harmless.
        await serve(options, stop, on_ready=notify_ready, reuse_port=reuse_port)

    with asyncio.Runner(loop_factory=loop_factory(options.event_loop)) as runner:
        runner.run(main())


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop's loop (libuv: about a quarter less CPU per answered request than asyncio's own,
    see bench/serve.py) for "uvloop" and, when it is installed, "auto"; else asyncio's."""
    if kind not in ("auto", "uvloop", "asyncio"):
        raise ValueError(f"event loop {kind!r}: expected auto, uvloop or asyncio")
    if kind != "asyncio":
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(options: BootstrapOptions | StoreOptions) -> int:
    """Serve in this process, or in `workers` processes sharing the ports; returns an exit status."""
    if options.workers <= 1:
        _run_one(options, reuse_port=False)
        return 0
    if 0 in (options.secure_port, options.insecure_port):
        raise ValueError("--workers needs fixed ports (0 would give every worker a different port)")
    if multiprocess_dir() is None:
        log.warning("PROMETHEUS_MULTIPROC_DIR is not set: /metrics shows only the worker that answers")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_run_one, args=(options, True), name=f"mcs-worker-{i}")
             for i in range(options.workers)]
    for proc in procs:
        proc.start()
    log.info("started %d workers: %s", len(procs), ", ".join(str(p.pid) for p in procs))

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                proc.terminate()

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for proc in procs:
        proc.join()
        status = status or (proc.exitcode or 0)
    return status
