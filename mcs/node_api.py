"""The node API daemons use in store mode (JSON under /api/v1, on the TLS listener only):
register with a pool's bootstrap token for a node token (only into that pool; a node already
holding a token must present it), renew the token before it expires, read the own node record,
patch only daemon-owned annotations, read the rendered configs the controller decided for the
node, record events about the own node, and long-poll the store revision.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from machineconfig import constants
from machineconfig import machine_config_node as mcn
from machineconfig.errors import MachineConfigError
from machineconfig.rendered_config import RenderedConfig
from machineconfig.store import ConflictError, ForbiddenError, NodeRecord, NotFoundError, Store, StoreError
from machineconfig.store.base import MACHINE_CONFIG_POOL, MachineConfigNodes
from mcs.node_policy import (
    PolicyError, RateLimiter, check_labels, describe_pools, parse_json_object, pool_of, pools_selecting,
)
from mcs.revision_watch import RevisionWatch
from mcs.tokens import IssuedToken, NodeTokens, PoolTokens

log = logging.getLogger(__name__)

T = TypeVar("T")

NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
# rendered-<pool>-<hash>: the hash part has no dash, so a pool "worker" does not cover "worker-a".
RENDERED_HASH = re.compile(r"^[0-9a-f]+$")
_MAX_NAME = 253
_MAX_KEY = 317  # prefix (253) + "/" + name (63)
_MAX_VALUE = 8192
_EVENT_TYPES = ("Normal", "Warning")
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="machine-config-server"'}


def _register_limiter() -> RateLimiter:
    # Per peer address: a node registers once per boot; 20 at once then one every 3 s.
    return RateLimiter(rate=1 / 3, burst=20)


def _event_limiter() -> RateLimiter:
    # Per node: a daemon records a handful of events per update; 60 at once then one a second.
    return RateLimiter(rate=1.0, burst=60)


@dataclass
class NodeAPIState:
    """What the node API handlers need (one per worker process)."""

    store: Store
    pool_tokens: PoolTokens
    node_tokens: NodeTokens
    watch: RevisionWatch
    max_watch: float = constants.NODE_API_MAX_WATCH_SECONDS
    extend_deadline: Callable[[object, float], None] | None = field(default=None)
    register_limit: RateLimiter = field(default_factory=_register_limiter)
    event_limit: RateLimiter = field(default_factory=_event_limiter)


NODE_API = web.AppKey("mcs_node_api", NodeAPIState)


class _Refused(MachineConfigError):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


def _json(value: Any) -> web.Response:
    resp = web.json_response(value)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    resp = web.Response(status=status, text=message + "\n", content_type="text/plain",
                        headers=BEARER_CHALLENGE if status == 401 else headers)
    resp.headers["Cache-Control"] = "no-store"
    return resp


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    # The store is synchronous (SQLite, files): keep it off the event loop.
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))


def _handler(fn: Callable[[web.Request, NodeAPIState], Any]) -> Callable[[web.Request], Any]:
    """Turn refusals and store errors into one-line text answers."""

    @functools.wraps(fn)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            result: web.StreamResponse = await fn(request, request.app[NODE_API])
            return result
        except _Refused as e:
            return _text(e.status, _one_line(e), e.headers)
        except PolicyError as e:
            return _text(400, _one_line(e))
        except NotFoundError as e:
            return _text(404, _one_line(e))
        except ForbiddenError as e:
            return _text(403, _one_line(e))
        except ConflictError as e:
            return _text(409, _one_line(e))
        except StoreError as e:
            log.error("store error on %s %s: %s", request.method, request.rel_url.raw_path[:200], e)
            return _text(500, "store error")

    return wrapped


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__


async def _body(request: web.Request) -> dict[str, Any]:
    # Read the bytes ourselves: aiohttp would decode with whatever charset the client names.
    # Too large a body raises aiohttp's 413, answered as one line by the app's middleware.
    return parse_json_object(await request.read())


def _limit(limiter: RateLimiter, key: str, what: str) -> None:
    wait = limiter.retry_after(key)
    if wait > 0:
        seconds = max(1, int(wait + 0.999))
        raise _Refused(429, f"too many {what}: retry after {seconds} s", {"Retry-After": str(seconds)})


def _node_of(request: web.Request, api: NodeAPIState) -> str:
    """The node whose valid token the request carries (401 otherwise)."""
    node = api.node_tokens.node_for(request.headers.get("Authorization"))
    if node is None:
        raise _Refused(401, "a valid node token is required")
    return node


def _own(request: web.Request, api: NodeAPIState) -> str:
    node = _node_of(request, api)
    if request.match_info["name"] != node:
        raise _Refused(403, "a node may only use its own record")
    return node


def _str_map(value: Any, what: str, allow_none: bool = False) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Refused(400, f"{what} must be an object")
    for key, val in value.items():
        if not key or len(key) > _MAX_KEY:
            raise _Refused(400, f"{what}: invalid key")
        if not (isinstance(val, str) or (allow_none and val is None)):
            raise _Refused(400, f"{what}.{key[:_MAX_KEY]}: the value must be a string")
        if isinstance(val, str) and len(val) > _MAX_VALUE:
            raise _Refused(400, f"{what}.{key}: the value is longer than {_MAX_VALUE} characters")
    return value


def _issued(record: NodeRecord, issued: IssuedToken) -> dict[str, Any]:
    return {"node": record.to_dict(), "token": issued.token, "expiresIn": int(issued.expires_in)}


@_handler
async def register(request: web.Request, api: NodeAPIState) -> web.StreamResponse:
    """A pool's bootstrap token creates (or re-registers) a node of that pool only; a node that
    holds a live token must present it (`token` in the body) or be revoked by the admin first."""
    _limit(api.register_limit, request.remote or "", "registrations from this address")
    pool = api.pool_tokens.pool_for(request.headers.get("Authorization"))
    if pool is None:
        raise _Refused(401, "a valid pool bootstrap token is required")
    body = await _body(request)
    name = body.get("name")
    if not isinstance(name, str) or not NODE_NAME.match(name) or len(name) > _MAX_NAME:
        raise _Refused(400, "name must be a DNS subdomain")
    labels = check_labels(body.get("labels") if body.get("labels") is not None else {})
    proof = body.get("token")
    if proof is not None and (not isinstance(proof, str) or len(proof) > 512):
        raise _Refused(400, "token must be a string")
    pool_obj = await _in_thread(api.store.get_object, MACHINE_CONFIG_POOL, pool)
    pools = await _in_thread(api.store.list_objects, MACHINE_CONFIG_POOL)
    try:
        existing: NodeRecord | None = await _in_thread(api.store.get_node, name)
    except NotFoundError:
        existing = None
    if existing is not None:
        was = pools_selecting(pools, existing.labels)
        if was and pool_of(was) != pool:
            log.warning("refused to re-register node %s into pool %s: it is in %s",
                        name, pool, describe_pools(was))
            raise _Refused(403, f"node {name} is already registered in pool {describe_pools(was)}; "
                                f"a {pool} bootstrap token cannot re-register it")
    # The pool's selector labels make the node a member of the pool whose token it holds; they
    # must not make it a member of any other pool as well.
    selector = ((pool_obj.get("spec") or {}).get("nodeSelector") or {}).get("matchLabels") or {}
    merged = {**(existing.labels if existing is not None else {}), **labels,
              **{str(k): str(v) for k, v in selector.items()}}
    matched = pools_selecting(pools, merged)
    if pool_of(matched) != pool:
        log.warning("refused to register node %s with a %s bootstrap token: its labels put it in %s",
                    name, pool, describe_pools(matched))
        raise _Refused(403, f"a {pool} bootstrap token registers nodes of pool {pool} only: these "
                            f"labels put node {name} in {describe_pools(matched)}")
    if existing is not None and api.node_tokens.has_token(name) and \
            (proof is None or not api.node_tokens.owns(name, proof)):
        log.warning("refused to re-register node %s: it holds a live token that was not presented", name)
        raise _Refused(409, f"node {name} is registered and holds a live token: present it as "
                            f"\"token\", or revoke it on the server (mcs node revoke {name})")
    record = await _in_thread(api.store.register_node, name, merged)
    issued = await _in_thread(api.node_tokens.issue, name)
    log.info("node %s registered into pool %s", name, pool)
    return _json(_issued(record, issued))


@_handler
async def renew_token(request: web.Request, api: NodeAPIState) -> web.StreamResponse:
    """A new node token for the valid one presented; that one stays valid for a grace period."""
    rotated = await _in_thread(api.node_tokens.rotate, request.headers.get("Authorization"))
    if rotated is None:
        raise _Refused(401, "a valid node token is required")
    name, issued = rotated
    record = await _in_thread(api.store.get_node, name)
    return _json(_issued(record, issued))


async def _node_pool(api: NodeAPIState, record: NodeRecord) -> str | None:
    """The node's pool from the server's own record of it (labels the node cannot change)."""
    pools = await _in_thread(api.store.list_objects, MACHINE_CONFIG_POOL)
    return pool_of(pools_selecting(pools, record.labels))


def _of_pool(pool: str | None, name: str) -> bool:
    """Whether `name` is a rendered config of `pool` (rendered-<pool>-<hash>, hash without dash)."""
    if pool is None:
        return False
    prefix = f"rendered-{pool}-"
    return name.startswith(prefix) and RENDERED_HASH.match(name[len(prefix):]) is not None


async def _may_read_rendered(api: NodeAPIState, node: str, name: str) -> RenderedConfig | None:
    """The rendered config if the controller decided the node may read it: its desiredConfig
    (which only the controller writes, or the node once at bootstrap within its own pool), its
    own config where overlays select it (node-config, controller-written), and its pool's
    rendered configs except other nodes' own ones (an overlay may carry one host's key). Never
    by a value the node writes itself, such as currentConfig."""
    record = await _in_thread(api.store.get_node, node)
    a = record.annotations
    own = name in (a.get(constants.DESIRED_CONFIG_ANNOTATION), a.get(constants.NODE_CONFIG_ANNOTATION))
    if not own and not _of_pool(await _node_pool(api, record), name):
        return None
    rendered = await _in_thread(api.store.get_rendered, name)
    return rendered if own or constants.OVERLAYS_ANNOTATION not in rendered.annotations else None


@_handler
async def get_node(request: web.Request, api: NodeAPIState) -> web.StreamResponse:
    node = _own(request, api)
    record = await _in_thread(api.store.get_node, node)
    return _json(record.to_dict())


@_handler
async def patch_annotations(request: web.Request, api: NodeAPIState) -> web.StreamResponse:
    node = _own(request, api)
    body = await _body(request)
    changes = _str_map(body.get("changes"), "changes", allow_none=True)
    foreign = sorted(k for k in changes if k not in constants.DAEMON_OWNED_ANNOTATIONS)
    if foreign and foreign != [constants.DESIRED_CONFIG_ANNOTATION]:
        raise _Refused(403, f"annotation {foreign[0]} is not the daemon's to write")
    current = changes.get(constants.CURRENT_CONFIG_ANNOTATION)
    if not foreign and not current:
        return _json((await _in_thread(api.store.patch_node_annotations, node, changes)).to_dict())
    # Config names: judged against the server's own record of the node and its pool.
    record = await _in_thread(api.store.get_node, node)
    pool = await _node_pool(api, record)
    if foreign and not _bootstrap_desired(record, pool, changes):
        raise _Refused(403, f"annotation {foreign[0]} is not the daemon's to write")
    if foreign:
        log.info("node %s: bootstrap desiredConfig %s accepted", node,
                 changes[constants.DESIRED_CONFIG_ANNOTATION])
    if current and not _may_claim(record, pool, current):
        # The controller adopts a new node's currentConfig as its desiredConfig: a node must
        # not name another pool's config there.
        raise _Refused(403, f"annotation {constants.CURRENT_CONFIG_ANNOTATION}: {current[:80]} is not "
                            f"a rendered config of the node's pool nor its desiredConfig")
    record = await _in_thread(api.store.patch_node_annotations, node, changes)
    return _json(record.to_dict())


def _may_claim(record: NodeRecord, pool: str | None, config: str) -> bool:
    """A node may report as current its pool's configs, its desiredConfig, or what it reported."""
    a = record.annotations
    return _of_pool(pool, config) or config in (a.get(constants.DESIRED_CONFIG_ANNOTATION),
                                                a.get(constants.CURRENT_CONFIG_ANNOTATION))


def _bootstrap_desired(record: NodeRecord, pool: str | None, changes: dict[str, Any]) -> bool:
    """MCO's daemon writes desiredConfig once, from node-annotations.json, so the node controller
    sees a new node as Done in its config: allowed while the node has none, only equal to the
    current config and only a config of the node's own pool (the controller owns the key from
    then on)."""
    if constants.DESIRED_CONFIG_ANNOTATION in record.annotations:
        return False
    current = changes.get(constants.CURRENT_CONFIG_ANNOTATION,
                          record.annotations.get(constants.CURRENT_CONFIG_ANNOTATION))
    desired = changes[constants.DESIRED_CONFIG_ANNOTATION]
    return isinstance(desired, str) and desired == current and _of_pool(pool, desired)


@_handler
async def get_rendered(request: web.Request, api: NodeAPIState) -> web.StreamResponse:
    node = _node_of(request, api)
    name = request.match_info["name"]
    if not NODE_NAME.match(name) or len(name) > _MAX_NAME:
        raise _Refused(400, "invalid rendered config name")
    rendered = await _may_read_rendered(api, node, name)
    if rendered is None:
        raise _Refused(403, "a node may only read its desiredConfig and the rendered configs of its own pool")
    return _json(rendered.to_dict())


@_handler
async def post_event(request: web.Request, api: NodeAPIState) -> web.StreamResponse:
    node = _node_of(request, api)
    body = await _body(request)
    if body.get("kind") != "Node" or body.get("name") != node:
        raise _Refused(403, "a node may only record events about itself")
    reason, message, kind = body.get("reason"), body.get("message", ""), body.get("type", "Normal")
    if not isinstance(reason, str) or not reason or len(reason) > 128:
        raise _Refused(400, "reason must be a short non-empty string")
    if not isinstance(message, str) or len(message) > _MAX_VALUE:
        raise _Refused(400, "message must be a string of at most 8192 characters")
    if kind not in _EVENT_TYPES:
        raise _Refused(400, "type must be Normal or Warning")
    _limit(api.event_limit, node, "events from this node")
    await _in_thread(api.store.record_event, "Node", node, reason, message, kind)
    return _json({})


def _progress_store(api: NodeAPIState) -> MachineConfigNodes:
    if not isinstance(api.store, MachineConfigNodes):
        raise _Refused(404, "this store keeps no MachineConfigNodes")
    return api.store


@_handler
async def get_machine_config_node(request: web.Request, api: NodeAPIState) -> web.StreamResponse:
    """The node's own MachineConfigNode (created by the controller)."""
    node = _own(request, api)
    return _json(await _in_thread(_progress_store(api).get_machine_config_node, node))


@_handler
async def put_machine_config_node_status(request: web.Request,
                                         api: NodeAPIState) -> web.StreamResponse:
    """The node's daemon replaces its own MachineConfigNode's status (never the spec, which is
    the controller's, nor another node's); checked against the CRD's rules first."""
    node = _own(request, api)
    body = await _body(request)
    try:
        status = mcn.check_status(body.get("status"))
    except mcn.StatusError as e:
        raise _Refused(400, str(e)) from e
    await _in_thread(_progress_store(api).set_machine_config_node_status, node, status)
    return _json({})


@_handler
async def watch(request: web.Request, api: NodeAPIState) -> web.StreamResponse:
    _node_of(request, api)
    try:
        since = int(request.query.get("since", "0"))
        timeout = float(request.query.get("timeout", "30"))
    except ValueError as e:
        raise _Refused(400, "since must be an integer and timeout a number") from e
    if not 0.0 <= timeout < float("inf"):
        raise _Refused(400, "timeout must be a non-negative number")
    timeout = min(timeout, api.max_watch)
    if api.extend_deadline is not None:
        # A long poll is not a slow client: give this response its timeout plus a margin.
        api.extend_deadline(request.protocol, timeout + 10.0)
    return _json({"revision": await api.watch.wait(since, timeout)})


def add_routes(app: web.Application, api: NodeAPIState) -> None:
    """The node API routes (before the server's catch-all route)."""
    app[NODE_API] = api
    prefix = constants.NODE_API_PREFIX
    app.router.add_post(f"{prefix}/nodes/register", register)
    app.router.add_post(f"{prefix}/token", renew_token)
    app.router.add_get(f"{prefix}/nodes/{{name}}", get_node, allow_head=False)
    app.router.add_patch(f"{prefix}/nodes/{{name}}/annotations", patch_annotations)
    app.router.add_get(f"{prefix}/rendered/{{name}}", get_rendered, allow_head=False)
    app.router.add_get(f"{prefix}/nodes/{{name}}/machineconfignode", get_machine_config_node,
                       allow_head=False)
    app.router.add_put(f"{prefix}/nodes/{{name}}/machineconfignode/status",
                       put_machine_config_node_status)
    app.router.add_post(f"{prefix}/events", post_event)
    app.router.add_get(f"{prefix}/watch", watch, allow_head=False)

    async def release(_app: web.Application) -> None:
        api.watch.release()

    async def close(_app: web.Application) -> None:
        await api.watch.close()

    app.on_shutdown.append(release)  # before aiohttp waits for the requests still running
    app.on_cleanup.append(close)
