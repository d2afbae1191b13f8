"""FleetLock (Zincati's reboot-coordination protocol) on the node API's TLS listener.

    POST /fleetlock/v1/pre-reboot     RecursiveLock: take a reboot slot (or keep the one held)
    POST /fleetlock/v1/steady-state   UnlockIfHeld: give it back (200 whether held or not)

Requests carry the header `fleet-lock-protocol: true` and the body
`{"client_params": {"id": "<client>", "group": "<group>"}}`; errors are JSON `{kind, value}`
with a small, fixed set of kinds. A group is a pool: `default` (Zincati's default group) is the
worker pool, any other group names a pool. A pool has `maxUnavailable` slots (of its member
count, as the controller computes it), and they are shared with the controller's own rollout:
a member node that is updating takes a slot without a lock, and the controller counts lock
holders as unavailable machines, so Zincati hosts and this project's nodes never reboot more at
once than the pool allows. Slots live in the store (they survive restarts); they never expire:
a holder that does not come back stays listed (`mcs fleetlock list`, the pool's events) until
it unlocks or an admin releases it (`mcs fleetlock release`).

The protocol has no authentication: any client that reaches the TLS port can take a slot of a
pool (delaying other reboots, never changing a config). Ids and groups are validated and each
peer address is rate limited.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from machineconfig import rollout
from machineconfig.errors import MachineConfigError
from machineconfig.store.base import (
    MACHINE_CONFIG_POOL, NotFoundError, RebootLock, RebootLocks, Store, StoreError,
)
from mcs.node_policy import PolicyError, RateLimiter, parse_json_object, pool_of, pools_selecting

log = logging.getLogger(__name__)

PREFIX = "/fleetlock"
GROUP = re.compile(r"^[a-zA-Z0-9.-]+$")
MAX_ID = 253
_PRINTABLE_ID = re.compile(r"^[\x21-\x7e]+$")

T = TypeVar("T")


class FleetLockError(MachineConfigError):
    def __init__(self, status: int, kind: str, value: str) -> None:
        super().__init__(value)
        self.status, self.kind, self.value = status, kind, value


def client_params(body: dict[str, Any]) -> tuple[str, str]:
    """(id, group) of a request body, or FleetLockError."""
    params = body.get("client_params")
    if not isinstance(params, dict):
        raise FleetLockError(400, "bad_request", "client_params (an object) is required")
    client, group = params.get("id"), params.get("group")
    if not isinstance(client, str) or not client or len(client) > MAX_ID or \
            not _PRINTABLE_ID.match(client):
        raise FleetLockError(400, "bad_request", f"client_params.id must be 1 to {MAX_ID} "
                                                 "printable characters")
    if not isinstance(group, str) or not GROUP.match(group) or len(group) > 253:
        raise FleetLockError(400, "bad_request",
                             "client_params.group must match ^[a-zA-Z0-9.-]+$")
    return client, group


def slots_of(store: Store, pool_name: str) -> tuple[int, set[str]]:
    """The pool's slot count and the member nodes that take one without a lock (updating)."""
    try:
        pool = store.get_object(MACHINE_CONFIG_POOL, pool_name)
    except NotFoundError as e:
        raise FleetLockError(404, "unknown_group", f"no pool {pool_name} for this group") from e
    pools = store.list_objects(MACHINE_CONFIG_POOL)
    members = [n for n in store.list_nodes()
               if pool_of(pools_selecting(pools, n.labels)) == pool_name]
    try:
        limit = rollout.max_unavailable((pool.get("spec") or {}).get("maxUnavailable"),
                                        len(members))
    except rollout.MaxUnavailableError as e:
        raise FleetLockError(500, "invalid_pool", f"pool {pool_name}: {e}") from e
    return limit, {n.name for n in members if rollout.is_unavailable(n)}


def describe(locks: list[RebootLock]) -> str:
    return ", ".join(f"{lock.holder} (since {lock.since})" for lock in locks) or "none"


class FleetLock:
    """The two operations over a store with reboot slots (the local store)."""

    def __init__(self, store: Store, limiter: RateLimiter | None = None) -> None:
        if not isinstance(store, RebootLocks):
            raise TypeError("FleetLock needs a store with reboot slots (the local store)")
        self.store = store
        self.locks: RebootLocks = store
        self.limiter = limiter or RateLimiter(rate=1.0, burst=30)

    def pre_reboot(self, client: str, group: str) -> None:
        pool = rollout.pool_for_group(group)
        limit, busy = slots_of(self.store, pool)
        outcome, holders = self.locks.acquire_reboot_lock(group, client, limit, busy)
        if outcome == "full":
            raise FleetLockError(409, "failed_lock_semaphore_full",
                                 f"all {limit} reboot slots of pool {pool} are taken: holders "
                                 f"{describe(holders)}; updating {', '.join(sorted(busy)) or 'none'}")
        if outcome == "held":
            return
        self.store.record_event(MACHINE_CONFIG_POOL, pool, "RebootSlotTaken",
                                f"{client} took a reboot slot of group {group} "
                                f"({len(holders)}/{limit} held)")

    def steady_state(self, client: str, group: str) -> None:
        if self.locks.release_reboot_lock(group, client):
            self.store.record_event(MACHINE_CONFIG_POOL, rollout.pool_for_group(group),
                                    "RebootSlotReleased",
                                    f"{client} released its reboot slot of group {group}")


def _error(err: FleetLockError) -> web.Response:
    resp = web.json_response({"kind": err.kind, "value": err.value}, status=err.status)
    resp.headers["Cache-Control"] = "no-store"
    return resp


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))


def add_routes(app: web.Application, fleetlock: FleetLock) -> None:
    async def handle(request: web.Request, operation: Callable[[str, str], None]) -> web.Response:
        try:
            wait = fleetlock.limiter.retry_after(request.remote or "")
            if wait > 0:
                raise FleetLockError(429, "too_many_requests",
                                     f"too many requests: retry after {max(1, int(wait + 0.999))} s")
            if request.headers.get("fleet-lock-protocol", "").strip().lower() != "true":
                raise FleetLockError(400, "missing_header",
                                     "the header fleet-lock-protocol: true is required")
            try:
                body = parse_json_object(await request.read())
            except PolicyError as e:
                raise FleetLockError(400, "bad_request", str(e)) from e
            client, group = client_params(body)
            await _in_thread(operation, client, group)
        except FleetLockError as e:
            log.info("fleetlock %s from %s: %s: %s", request.path, request.remote, e.kind, e.value)
            return _error(e)
        except StoreError as e:
            log.error("fleetlock %s: store: %s", request.path, e)
            return _error(FleetLockError(503, "store_unavailable", "the store is unavailable"))
        log.info("fleetlock %s: %s in group %s", request.path, client, group)
        resp = web.json_response({})
        resp.headers["Cache-Control"] = "no-store"
        return resp

    async def pre_reboot(request: web.Request) -> web.Response:
        return await handle(request, fleetlock.pre_reboot)

    async def steady_state(request: web.Request) -> web.Response:
        return await handle(request, fleetlock.steady_state)

    app.router.add_post(f"{PREFIX}/v1/pre-reboot", pre_reboot)
    app.router.add_post(f"{PREFIX}/v1/steady-state", steady_state)


def format_locks(locks: list[RebootLock]) -> str:
    """`mcs fleetlock list`: one line per held slot."""
    return "".join(f"{lock.group}\t{lock.holder}\t{lock.since}\n" for lock in locks)


def dumps(locks: list[RebootLock]) -> str:
    return json.dumps([{"group": lock.group, "id": lock.holder, "since": lock.since}
                       for lock in locks], indent=2) + "\n"
