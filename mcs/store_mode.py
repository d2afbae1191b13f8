"""`mcs start`: the same server over a store instead of a bootstrap directory - /config/<pool>
guarded by the pool's bootstrap token, node-credentials.json in what it serves, and the node API.
"""
from __future__ import annotations

import asyncio
import logging

from machineconfig.store import Store, StoreError
from machineconfig.store.base import RebootLocks
from mcs.auth import AnyOf, Authorizer, TokenAuth
from mcs.fleetlock import FleetLock
from mcs.node_api import NodeAPIState
from mcs.options import StoreOptions
from mcs.revision_watch import RevisionWatch
from mcs.state import RequestWatcher, ServerState, new_state
from mcs.status_page import StatusPage
from mcs.sources.store import StoreSource
from mcs.tokens import AdminToken, NodeTokens, PoolTokens

log = logging.getLogger(__name__)


def build_store_state(options: StoreOptions, store: Store, guard: RequestWatcher | None) -> ServerState:
    """Server state over `store`; creates a bootstrap token for every pool that has none yet.
    Without a state directory (the kube store) there are no bootstrap tokens and no node API:
    /config/<pool> only (guarded by --token-file when given)."""
    token_auth = TokenAuth(options.token_file) if options.token_file is not None else None
    # TLS on: nodes must trust our certificate; --ca names its CA, else the certificate is its own.
    ca = options.ca if options.ca is not None else options.cert
    if options.state_dir is None:
        source = StoreSource(store, None, f"store {options.store}", ca_file=ca, kubeconfig=options.kubeconfig)
        return new_state(source, options.input_check_interval, guard, token_auth,
                         per_server_url=True, advertise_url=options.advertise_url)
    state_dir = options.state_dir
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if options.cert is None or options.secure_port is None:
        log.warning("no TLS listener: the node API is off (it is served over TLS only)")
    pool_tokens = PoolTokens(state_dir)
    source = StoreSource(store, pool_tokens, f"store {options.store}", ca_file=ca, kubeconfig=options.kubeconfig)
    try:
        pool_tokens.ensure(source.pools())
    except StoreError as e:
        log.warning("cannot list pools yet, bootstrap tokens will be created later: %s", e)
    auth: Authorizer = pool_tokens if token_auth is None else AnyOf(pool_tokens, token_auth)
    node_api = NodeAPIState(store=store, pool_tokens=pool_tokens, node_tokens=NodeTokens(state_dir, ttl=options.node_token_ttl),
                            watch=RevisionWatch(store),
                            extend_deadline=guard.extend if guard is not None else None)
    # FleetLock on a store that keeps reboot slots (the local one)
    fleetlock = FleetLock(store) if isinstance(store, RebootLocks) else None
    # the admin's status page: its token is made now, for `mcs admin-token` to show
    admin = AdminToken(state_dir)
    admin.ensure()
    return new_state(source, options.input_check_interval, guard, auth, per_server_url=True,
                     advertise_url=options.advertise_url, node_api=node_api, fleetlock=fleetlock,
                     status_page=StatusPage(store, admin))


async def keep_pool_tokens(state: ServerState, interval: float = 2.0) -> None:
    """Pools added while we run get a bootstrap token too (checked when the store changes)."""
    api = state.node_api
    if api is None or not isinstance(state.source, StoreSource):
        return
    loop = asyncio.get_running_loop()
    source = state.source
    seen: int | None = None
    while True:
        try:
            revision = await loop.run_in_executor(None, api.store.revision)
            if revision != seen:
                await loop.run_in_executor(None, lambda: api.pool_tokens.ensure(source.pools()))
                seen = revision
        except (StoreError, OSError) as e:
            log.warning("cannot check pools for bootstrap tokens: %s", e)
        await asyncio.sleep(interval)
