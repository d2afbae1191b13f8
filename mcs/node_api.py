"""The node API daemons use in store mode (JSON under /api/v1): register with a pool's bootstrap
token for a node token, then read the own node record, patch only daemon-owned annotations, read
rendered configs, record events about the own node, and long-poll the store revision.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from machineconfig import constants
from machineconfig import labels as label_selectors
from machineconfig.api import LabelSelector
from machineconfig.errors import MachineConfigError
from machineconfig.store import ConflictError, ForbiddenError, NotFoundError, Store, StoreError
from machineconfig.store.base import MACHINE_CONFIG_POOL
from mcs.tokens import NodeTokens, PoolTokens

log = logging.getLogger(__name__)

T = TypeVar("T")

NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
# rendered-<pool>-<hash>: the hash part has no dash, so a pool "worker" does not cover "worker-a".
RENDERED_HASH = re.compile(r"^[0-9a-f]+$")
_MAX_NAME = 253
_MAX_LABEL = 317  # prefix (253) + "/" + name (63)
_MAX_VALUE = 8192
_EVENT_TYPES = ("Normal", "Warning")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="machine-config-server"'}


class RevisionWatch:
    """One thread long-polls the store (`wait_for_change`) and wakes every waiting request, so a
    thousand watching nodes cost one thread, not a thousand."""

    def __init__(self, store: Store, poll: float = 1.0) -> None:
        self.store = store
        self.poll = poll
        self.revision: int | None = None
        self._changed: asyncio.Future[int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mcs-watch")

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.revision is None:
            self.revision = await loop.run_in_executor(self._executor, self.store.revision)
        if self._task is None:
            self._changed = loop.create_future()
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failing = False
        while True:
            assert self.revision is not None
            try:
                revision = await loop.run_in_executor(self._executor, self.store.wait_for_change,
                                                      self.revision, self.poll)
            except Exception as e:  # noqa: BLE001 - this task must outlive any store failure
                if not failing:
                    log.warning("watching the store failed, retrying every second: %s", type(e).__name__)
                failing = True
                await asyncio.sleep(1.0)
                continue
            failing = False
            if revision != self.revision:
                self.revision = revision
                changed, self._changed = self._changed, loop.create_future()
                if changed is not None and not changed.done():
                    changed.set_result(revision)

    async def wait(self, since: int, timeout: float) -> int:
        """The revision once it differs from `since`, or when `timeout` seconds have passed.

        A `since` ahead of the store (its state was replaced) is answered at once, as the store does.
        """
        await self._start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.revision == since:
            remaining = deadline - loop.time()
            if remaining <= 0 or self._changed is None:
                break
            try:
                await asyncio.wait_for(asyncio.shield(self._changed), remaining)
            except TimeoutError:
                break
        assert self.revision is not None
        return self.revision

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        # The worker thread ends by itself within `poll` seconds.
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class NodeAPIState:
    """What the node API handlers need (one per worker process)."""

    store: Store
    pool_tokens: PoolTokens
    node_tokens: NodeTokens
    watch: RevisionWatch
    max_watch: float = constants.NODE_API_MAX_WATCH_SECONDS
    extend_deadline: Callable[[object, float], None] | None = field(default=None)


NODE_API = web.AppKey("mcs_node_api", NodeAPIState)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _json(value: Any) -> web.Response:
    resp = web.json_response(value)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _text(status: int, message: str) -> web.Response:
    resp = web.Response(status=status, text=message + "\n", content_type="text/plain",
                        headers=_CHALLENGE if status == 401 else None)
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
            return _text(e.status, str(e))
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
    try:
        body = await request.json()
    except ValueError as e:
        raise _Refused(400, "the body is not JSON") from e
    if not isinstance(body, dict):
        raise _Refused(400, "the body must be a JSON object")
    return body


def _node_of(request: web.Request, api: NodeAPIState) -> str:
    """The node whose token the request carries (401 otherwise)."""
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
        if not isinstance(key, str) or not key or len(key) > _MAX_LABEL:
            raise _Refused(400, f"{what}: invalid key")
        if not (isinstance(val, str) or (allow_none and val is None)):
            raise _Refused(400, f"{what}: value of {key} must be a string")
        if isinstance(val, str) and len(val) > _MAX_VALUE:
            raise _Refused(400, f"{what}: value of {key} is too long")
    return value


@_handler
async def register(request: web.Request, api: NodeAPIState) -> web.StreamResponse:
    pool = api.pool_tokens.pool_for(request.headers.get("Authorization"))
    if pool is None:
        raise _Refused(401, "a valid pool bootstrap token is required")
    body = await _body(request)
    name = body.get("name")
    if not isinstance(name, str) or not NODE_NAME.match(name) or len(name) > _MAX_NAME:
        raise _Refused(400, "name must be a DNS subdomain")
    labels = _str_map(body.get("labels") or {}, "labels")
    pool_obj = await _in_thread(api.store.get_object, MACHINE_CONFIG_POOL, pool)
    selector = ((pool_obj.get("spec") or {}).get("nodeSelector") or {}).get("matchLabels") or {}
    await _check_reregistration(api, name, pool, pool_obj)
    # The pool's selector labels make the node a member of the pool whose token it holds.
    merged = {**labels, **{str(k): str(v) for k, v in selector.items()}}
    record = await _in_thread(api.store.register_node, name, merged)
    token = await _in_thread(api.node_tokens.issue, name)
    log.info("node %s registered into pool %s", name, pool)
    return _json({"node": record.to_dict(), "token": token})


def _member(pool: dict[str, Any], node_labels: dict[str, str]) -> bool:
    """Whether a node with these labels is selected by the pool (a bad selector selects nobody)."""
    raw = (pool.get("spec") or {}).get("nodeSelector")
    if raw is None:
        return False
    try:
        return label_selectors.matches(LabelSelector.model_validate(raw), node_labels)
    except (ValueError, MachineConfigError):  # pydantic's ValidationError is a ValueError
        return False


async def _check_reregistration(api: NodeAPIState, name: str, pool: str,
                                pool_obj: dict[str, Any]) -> None:
    """A pool token re-registers only nodes of its own pool: a worker's bootstrap token (which
    every worker's pointer config carries) must not mint a token for a master node."""
    try:
        record = await _in_thread(api.store.get_node, name)
    except NotFoundError:
        return
    if _member(pool_obj, record.labels):
        return
    pools = await _in_thread(api.store.list_objects, MACHINE_CONFIG_POOL)
    others = sorted(str(p["metadata"]["name"]) for p in pools
                    if _member(p, record.labels))
    if others:
        log.warning("refused to re-register node %s into pool %s: it is a member of %s",
                    name, pool, ", ".join(others))
        raise _Refused(403, f"node {name} is already registered in pool {others[0]}; "
                            f"a {pool} bootstrap token cannot re-register it")


async def _may_read_rendered(api: NodeAPIState, node: str, name: str) -> bool:
    """A node reads its current and desired configs, and the rendered configs of the pools it
    belongs to (what /config/<pool> would give it anyway) - never another pool's."""
    record = await _in_thread(api.store.get_node, node)
    if name in (record.annotations.get(constants.CURRENT_CONFIG_ANNOTATION),
                record.annotations.get(constants.DESIRED_CONFIG_ANNOTATION)):
        return True
    for pool in await _in_thread(api.store.list_objects, MACHINE_CONFIG_POOL):
        prefix = f"rendered-{pool['metadata']['name']}-"
        if (name.startswith(prefix) and RENDERED_HASH.match(name[len(prefix):])
                and _member(pool, record.labels)):
            return True
    return False


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
    if foreign == [constants.DESIRED_CONFIG_ANNOTATION]:
        if await _bootstrap_desired(api, node, changes):
            foreign = []
    if foreign:
        raise _Refused(403, f"annotation {foreign[0]} is not the daemon's to write")
    record = await _in_thread(api.store.patch_node_annotations, node, changes)
    return _json(record.to_dict())


async def _bootstrap_desired(api: NodeAPIState, node: str, changes: dict[str, Any]) -> bool:
    """MCO's daemon writes desiredConfig once, from node-annotations.json, so the node controller
    sees a new node as Done in its config: allowed while the node has none, and only equal to the
    current config (the controller owns the key from then on)."""
    record = await _in_thread(api.store.get_node, node)
    if constants.DESIRED_CONFIG_ANNOTATION in record.annotations:
        return False
    current = changes.get(constants.CURRENT_CONFIG_ANNOTATION,
                          record.annotations.get(constants.CURRENT_CONFIG_ANNOTATION))
    desired = changes[constants.DESIRED_CONFIG_ANNOTATION]
    if desired is None or desired != current:
        return False
    log.info("node %s: bootstrap desiredConfig %s accepted", node, desired)
    return True


@_handler
async def get_rendered(request: web.Request, api: NodeAPIState) -> web.StreamResponse:
    node = _node_of(request, api)
    name = request.match_info["name"]
    if not NODE_NAME.match(name) or len(name) > _MAX_NAME:
        raise _Refused(400, "invalid rendered config name")
    if not await _may_read_rendered(api, node, name):
        raise _Refused(403, "a node may only read the rendered configs of its own pool")
    return _json(await _in_thread(api.store.get_rendered, name))


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
    await _in_thread(api.store.record_event, "Node", node, reason, message, kind)
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
    app.router.add_get(f"{prefix}/nodes/{{name}}", get_node, allow_head=False)
    app.router.add_patch(f"{prefix}/nodes/{{name}}/annotations", patch_annotations)
    app.router.add_get(f"{prefix}/rendered/{{name}}", get_rendered, allow_head=False)
    app.router.add_post(f"{prefix}/events", post_event)
    app.router.add_get(f"{prefix}/watch", watch, allow_head=False)

    async def close(_app: web.Application) -> None:
        await api.watch.close()

    app.on_cleanup.append(close)
