"""The aiohttp application: GET|HEAD /config/<pool>, /healthz and /metrics (plus the node API,
FleetLock and the status page in store mode), with one-line text error bodies, bearer-token checks, conditional GET, gzip, metrics
and a secret-free access log.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from mcs import fleetlock, status_page
from mcs.answer import BUILD, SERVER_HEADER, Answer, access_log, conditional, decide, refusal
from mcs.metrics import UNKNOWN_POOL
from mcs.node_api import add_routes
from mcs.serve import NotFound, ServeError, valid_pool_name
from mcs.state import ServerState

log = logging.getLogger(__name__)

_READ_METHODS = ("GET", "HEAD")


STATE = web.AppKey("mcs_state", ServerState)
POOL = web.RequestKey("mcs_pool", str)
VERSION = web.RequestKey("mcs_version", str)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """Every error: a one-line text/plain body saying what is wrong, nothing cacheable."""
    resp = web.Response(status=status, text=message + "\n", content_type="text/plain", headers=headers)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _config_response(answer: Answer) -> web.StreamResponse:
    served = answer.served
    if served is None:
        return error(answer.status, answer.message, answer.headers)
    if answer.status == 304:
        return web.Response(status=304, headers=served.validators(served.gzip_etag if answer.gzip else served.etag))
    # aiohttp joins head and body into one buffer before the write (a copy of the body). Sending
    # the head in a write of its own avoids that copy, but measured no faster on loopback (an extra
    # send per response, and Python 3.11's transport copies whatever the socket does not take at
    # once anyway), so the response stays the plain one.
    if answer.gzip:
        return web.Response(body=served.gzip_body, headers=served.gzip_headers)
    return web.Response(body=served.body, headers=served.headers)


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
    headers = request.headers
    answer = decide(state, pool, headers.get("Authorization"), headers.get("Accept"), request.scheme,
                    headers.get("Host", ""), headers.get("Accept-Encoding", ""), headers.get("If-None-Match"))
    if answer.version:
        request[VERSION] = answer.version
    if answer.status == BUILD:
        try:
            served = await state.cache.get(pool, answer.version, answer.variant)
        except (NotFound, ServeError) as e:
            answer = refusal(pool, answer.version, e)
        else:
            answer = conditional(served, headers.get("Accept-Encoding", ""), headers.get("If-None-Match"))
    if answer.status == 406:
        state.metrics.observe_not_acceptable(pool, answer.version)
        log.warning("pool %s at spec %s: %s", pool, answer.version, answer.detail)
    elif answer.status == 500:
        log.error("cannot serve pool %s at spec %s: %s", pool, answer.version, answer.detail)
    return _config_response(answer)


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
