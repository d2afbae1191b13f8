"""The aiohttp application: GET|HEAD /config/<pool>, /healthz and /metrics (plus the node API,
FleetLock and the status page in store mode), with one-line text error bodies, bearer-token checks, conditional GET, gzip, metrics
and a secret-free access log.
"""
from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from mcs import fleetlock, status_page
from mcs.auth import Authorizer
from mcs.cache import ConfigSource, Served, ServedConfigCache
from mcs.fleetlock import FleetLock
from mcs.metrics import UNKNOWN_POOL, ServerMetrics
from mcs.negotiate import UnsupportedVersion, negotiate
from mcs.node_api import NodeAPIState, add_routes
from mcs.serve import NotAcceptable, NotFound, ServeError, valid_pool_name
from mcs.status_page import StatusPage

log = logging.getLogger(__name__)
access_log = logging.getLogger("mcs.access")

SERVER_HEADER = "machine-config-server"
_READ_METHODS = ("GET", "HEAD")


class RequestWatcher(Protocol):
    """Told when a connection starts and finishes a request (slow-client deadlines, see server.py)."""

    def request_started(self, protocol: object) -> None: ...

    def request_finished(self, protocol: object) -> None: ...

    def extend(self, protocol: object, seconds: float) -> None:
        """Give the current response `seconds` from now (long polls)."""


class ServedSource(ConfigSource, Protocol):
    """A config source as the application sees it: the bootstrap directory or the store."""

    def pools(self) -> list[str]: ...

    def has_pool(self, pool: str) -> bool: ...

    def describe(self) -> str: ...


@dataclass
class ServerState:
    """Everything the handlers need; one per worker process."""

    source: ServedSource
    cache: ServedConfigCache
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    auth: Authorizer | None = None
    watcher: RequestWatcher | None = None
    # Store mode: the served config names the server URL (this one, or the request's own).
    per_server_url: bool = False
    advertise_url: str | None = None
    node_api: NodeAPIState | None = None
    tls_port: int | None = None  # the bound TLS port (set by the server once it listens)
    fleetlock: FleetLock | None = None  # FleetLock's reboot slots (TLS listener, local store)
    status_page: StatusPage | None = None  # the admin's status page (TLS listener, state dir)


STATE = web.AppKey("mcs_state", ServerState)
POOL = web.RequestKey("mcs_pool", str)
VERSION = web.RequestKey("mcs_version", str)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """Every error: a one-line text/plain body saying what is wrong, nothing cacheable."""
    resp = web.Response(status=status, text=message + "\n", content_type="text/plain", headers=headers)
    resp.headers["Cache-Control"] = "no-store"
    return resp


@functools.lru_cache(maxsize=256)
def _negotiate(accept: str | None) -> str:
    # Joining machines send a handful of distinct Accept headers; parse each once.
    return negotiate(accept)


def accepts_gzip(accept_encoding: str) -> bool:
    """True when gzip (or *) is listed with a non-zero q."""
    for item in accept_encoding.split(","):
        name, *params = (p.strip() for p in item.split(";"))
        if name.lower() not in ("gzip", "x-gzip", "*"):
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            return True
    return False


# Joining machines send a handful of distinct Accept-Encoding headers; parse each once. Bounded, as
# the header is the client's to choose.
_accepts_gzip = functools.lru_cache(maxsize=256)(accepts_gzip)


def _config_response(request: web.Request, served: Served) -> web.StreamResponse:
    headers = request.headers
    use_gzip = served.gzip_body is not None and _accepts_gzip(headers.get("Accept-Encoding", ""))
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None and served.matches(if_none_match):
        return web.Response(status=304, headers=served.validators(served.gzip_etag if use_gzip else served.etag))
    # aiohttp joins head and body into one buffer before the write (a copy of the body). Sending
    # the head in a write of its own avoids that copy, but measured no faster on loopback (an extra
    # send per response, and Python 3.11's transport copies whatever the socket does not take at
    # once anyway), so the response stays the plain one.
    if use_gzip:
        return web.Response(body=served.gzip_body, headers=served.gzip_headers)
    return web.Response(body=served.body, headers=served.headers)


_HOST = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$")


def server_url(state: ServerState, request: web.Request) -> str | None:
    """The URL a served machine should use for the node API: --advertise-url, else how it reached us."""
    return server_url_for(state, request.scheme, request.headers.get("Host", ""))


def server_url_for(state: ServerState, scheme: str, host: str) -> str | None:
    """`server_url` from the request's scheme and Host header; None when the Host is not a host."""
    if state.advertise_url is not None:
        return state.advertise_url.rstrip("/")
    match = _HOST.match(host)
    if match is None or len(host) > 260:
        return None
    if scheme == "http" and state.node_api is not None and state.tls_port is not None:
        # The node API is served over TLS only: a config fetched from the plain port names the
        # TLS listener at the same host.
        return f"https://{match.group(1).lower()}:{state.tls_port}"
    # One URL per server, however the Host was spelled: host names are case-insensitive, and the
    # scheme's default port is the same as none (the URL keys the cached answer).
    host = host.lower()
    default = ":443" if scheme == "https" else ":80"
    if host.endswith(default):
        host = host[:-len(default)]
    return f"{scheme}://{host}"


def _pool_from_path(tail: str) -> str:
    # `/config/worker` and `/config/worker/` name the pool; anything else (nested paths, dots,
    # encoded slashes) fails the pool-name pattern, so no path ever escapes machine-pools/.
    return tail[:-1] if tail.endswith("/") else tail


async def handle_config(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    pool = _pool_from_path(request.match_info["tail"])
    request[POOL] = pool
    if request.method not in _READ_METHODS:
        return error(405, "method not allowed: use GET or HEAD", {"Allow": "GET, HEAD"})
    if not valid_pool_name(pool):
        return error(404, "no such pool: invalid pool name")  # checked before any file or store look-up
    if state.auth is not None and not state.auth.allows(pool, request.headers.get("Authorization")):
        return error(401, "a valid bearer token for this pool is required",
                     {"WWW-Authenticate": 'Bearer realm="machine-config-server"'})
    try:
        version = _negotiate(request.headers.get("Accept"))
    except UnsupportedVersion as e:
        return error(400, str(e))
    request[VERSION] = version
    variant = ""
    if state.per_server_url:
        url = server_url(state, request)
        if url is None:
            return error(400, "invalid Host header")
        variant = url
    try:
        served = await state.cache.get(pool, version, variant)
    except NotFound as e:
        return error(404, str(e))
    except NotAcceptable as e:
        state.metrics.observe_not_acceptable(pool, version)
        log.warning("pool %s at spec %s: %s", pool, version, e)
        return error(406, str(e))
    except ServeError as e:
        log.error("cannot serve pool %s at spec %s: %s", pool, version, e)
        return error(500, f"cannot serve pool {pool!r}: {e}")
    return _config_response(request, served)


async def handle_healthz(request: web.Request) -> web.StreamResponse:
    if request.method not in _READ_METHODS:
        return error(405, "method not allowed: use GET or HEAD", {"Allow": "GET, HEAD"})
    # As MCO: an empty body with an explicit zero length, for HEAD too.
    return web.Response(status=200, body=b"", headers={"Content-Length": "0"})


async def handle_metrics(request: web.Request) -> web.StreamResponse:
    if request.method not in _READ_METHODS:
        return error(405, "method not allowed: use GET or HEAD", {"Allow": "GET, HEAD"})
    metrics = request.app[STATE].metrics
    resp = web.Response(body=metrics.render())
    resp.headers["Content-Type"] = metrics.content_type
    return resp


async def handle_other(request: web.Request) -> web.StreamResponse:
    # As MCO: unknown paths are 404 to readers and 405 to anything else.
    if request.method not in _READ_METHODS:
        return error(405, "method not allowed", {"Allow": "GET, HEAD"})
    return error(404, "not found")


def _loggable_path(request: web.Request) -> str:
    # The still percent-encoded path without the query: the query may carry credentials, and a
    # decoded path could smuggle a newline into the log.
    return request.rel_url.raw_path[:200]


def _route_of(path: str) -> str:
    if path.startswith("/config/"):
        return "config"
    if path.startswith("/api/"):
        return "api"
    return path[1:] if path in ("/healthz", "/metrics") else "other"


def _pool_label(state: ServerState, pool: object, status: int) -> str:
    if not isinstance(pool, str) or not valid_pool_name(pool):
        return UNKNOWN_POOL
    if status in (200, 304):
        return pool
    # Only pools that exist become label values, so clients cannot grow the series count.
    return pool if state.source.has_pool(pool) else UNKNOWN_POOL


@web.middleware
async def observe(request: web.Request,
                  handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Time, count and log every request; finish sending inside so slow readers hit the deadline."""
    state = request.app[STATE]
    started = time.perf_counter()
    watcher = state.watcher
    if watcher is not None:
        watcher.request_started(request.protocol)
    try:
        resp = await handler(request)
    except web.HTTPException as e:
        resp = error(e.status, e.reason)
    except Exception as e:  # noqa: BLE001 - the client gets a 500, the log a secret-free line
        log.error("internal error on %s %s: %s", request.method, _loggable_path(request), type(e).__name__)
        resp = error(500, "internal server error")
    resp.headers["Server"] = SERVER_HEADER
    status = resp.status
    try:
        await resp.prepare(request)
        await resp.write_eof()
    finally:
        elapsed = time.perf_counter() - started
        version = request.get(VERSION)
        pool = request.get(POOL)
        if pool is None:
            route = _route_of(request.path)
            state.metrics.observe(route, status, elapsed)
            if route == "config":  # answered before the handler named the pool
                state.metrics.observe_config(UNKNOWN_POOL, version or "", status)
        elif status == 200 or status == 304:
            # A config answer: the pool exists and the version was negotiated (one bound lookup).
            state.metrics.observe_served(pool, version or "", status, elapsed)
        else:
            state.metrics.observe(_route_of(request.path), status, elapsed)
            state.metrics.observe_config(_pool_label(state, pool, status), version or "", status)
        if watcher is not None:
            watcher.request_finished(request.protocol)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info("%s %s %s %d %s %.1fms", request.remote, request.method, _loggable_path(request),
                            status, version or "-", elapsed * 1000)
    return resp


async def handle_api_over_plain(request: web.Request) -> web.StreamResponse:
    return error(404, "not found: the node API is served over TLS only")


async def handle_fleetlock_over_plain(request: web.Request) -> web.StreamResponse:
    return error(404, "not found: FleetLock is served over TLS only")


def make_app(state: ServerState, tls: bool = True) -> web.Application:
    """The application of one listener. The node API (and so every token issued) is served on the
    TLS listener only (`tls`); the plain one serves /config/<pool>, /healthz and /metrics."""
    node_api = state.node_api if tls else None
    # Only the node API takes bodies (annotation patches, events); keep the rest tight.
    app = web.Application(middlewares=[observe],
                          client_max_size=64 * 1024 if node_api is not None else 1024)
    app[STATE] = state
    if node_api is not None:
        add_routes(app, node_api)
    elif state.node_api is not None:
        app.router.add_route("*", "/api/{tail:.*}", handle_api_over_plain)
    if state.fleetlock is not None:
        if tls:
            fleetlock.add_routes(app, state.fleetlock)
        else:
            app.router.add_route("*", f"{fleetlock.PREFIX}/{{tail:.*}}", handle_fleetlock_over_plain)
    if state.status_page is not None:
        if tls:
            status_page.add_routes(app, state.status_page)
        else:
            status_page.add_plain_routes(app)
    app.router.add_route("*", "/config/{tail:.*}", handle_config)
    app.router.add_route("*", "/healthz", handle_healthz)
    app.router.add_route("*", "/metrics", handle_metrics)
    app.router.add_route("*", "/{tail:.*}", handle_other)
    return app
