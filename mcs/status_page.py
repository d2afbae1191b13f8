"""The read-only status page on the TLS listener (store mode with a state directory):

    GET /status                 an HTML shell (no data), its /status.css and /status.js
    GET /status.json            machineconfig.status's model; `Authorization: Bearer <admin token>`

Only /status.json carries cluster data, and only for the admin token (mcs.tokens.AdminToken),
never for a node or pool token. A browser gets the token once, typed into the page's form or in
the URL's fragment (`/status#token=...`, which is never sent to a server), and keeps it in the
tab's sessionStorage; the page polls the JSON and builds its tables as text. A strict Content
Security Policy (no inline script, no foreign origin) backs the escaping up.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading

from aiohttp import web

from machineconfig import status
from machineconfig.store.base import Store, StoreError
from mcs import status_assets
from mcs.node_policy import RateLimiter
from mcs.tokens import AdminToken

log = logging.getLogger(__name__)

PREFIX = "/status"
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self'; form-action 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'",
}
_READ_METHODS = ("GET", "HEAD")


class StatusPage:
    """The page over a store, guarded by the admin token; JSON requests are rate limited per peer
    (the page asks every few seconds; a guesser gets a 429)."""

    def __init__(self, store: Store, admin: AdminToken, limiter: RateLimiter | None = None) -> None:
        self.store = store
        self.admin = admin
        self.limiter = limiter or RateLimiter(rate=2.0, burst=30)
        # the events read so far: each request lists only the new ones (one reader at a time)
        self._tail = status.EventTail()
        self._lock = threading.Lock()

    def model_json(self) -> bytes:
        with self._lock:
            model = status.read(self.store, tail=self._tail)
        return json.dumps(model.to_dict()).encode()


def _response(body: bytes | str, content_type: str, status_code: int = 200) -> web.Response:
    resp = web.Response(body=body.encode() if isinstance(body, str) else body, status=status_code,
                        content_type=content_type, charset="utf-8")
    resp.headers.update(SECURITY_HEADERS)
    return resp


def _error(status_code: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    resp = _response(message + "\n", "text/plain", status_code)
    resp.headers.update(headers or {})
    return resp


def add_routes(app: web.Application, page: StatusPage) -> None:
    assets = {f"{PREFIX}": (status_assets.HTML, "text/html"),
              f"{PREFIX}/": (status_assets.HTML, "text/html"),
              f"{PREFIX}.css": (status_assets.CSS, "text/css"),
              f"{PREFIX}.js": (status_assets.JS, "text/javascript")}

    async def asset(request: web.Request) -> web.Response:
        if request.method not in _READ_METHODS:
            return _error(405, "method not allowed: use GET or HEAD", {"Allow": "GET, HEAD"})
        body, content_type = assets[request.path]
        return _response(body, content_type)

    async def model(request: web.Request) -> web.Response:
        if request.method not in _READ_METHODS:
            return _error(405, "method not allowed: use GET or HEAD", {"Allow": "GET, HEAD"})
        wait = page.limiter.retry_after(request.remote or "")
        if wait > 0:
            return _error(429, "too many requests", {"Retry-After": str(max(1, int(wait + 0.999)))})
        if not page.admin.allows(request.headers.get("Authorization")):
            return _error(401, "the status page's admin token is required "
                               "(mcs admin-token --state SDIR)",
                          {"WWW-Authenticate": 'Bearer realm="machine-config-server status"'})
        try:
            body = await asyncio.get_running_loop().run_in_executor(None, page.model_json)
        except StoreError as e:
            log.error("status page: store: %s", e)
            return _error(503, "the store is unavailable")
        return _response(body, "application/json")

    for path in assets:
        app.router.add_route("*", path, asset)
    app.router.add_route("*", f"{PREFIX}.json", model)


async def handle_over_plain(request: web.Request) -> web.StreamResponse:
    return _error(404, "not found: the status page is served over TLS only")


def add_plain_routes(app: web.Application) -> None:
    for path in (PREFIX, f"{PREFIX}/", f"{PREFIX}.css", f"{PREFIX}.js", f"{PREFIX}.json"):
        app.router.add_route("*", path, handle_over_plain)
