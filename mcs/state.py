"""What the request handlers of one worker share (`ServerState`) and its construction for either
mode (`build_state`): `mcs bootstrap` serves a bootstrap directory; `mcs start` serves a store,
/config/<pool> guarded by the pool's bootstrap token, node-credentials.json in what it serves, and
the node API. The served-config cache and the metrics counting its builds are made in `_new_state`.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from machineconfig.store import Store, StoreError, open_store
from machineconfig.store.base import RebootLocks
from mcs.auth import AnyOf, Authorizer, TokenAuth
from mcs.cache import ServedConfigCache
from mcs.fleetlock import FleetLock
from mcs.metrics import ServerMetrics
from mcs.node_api import NodeAPIState
from mcs.options import BootstrapOptions, StoreOptions
from mcs.revision_watch import RevisionWatch
from mcs.sources import ConfigSource
from mcs.sources.bootstrap import BootstrapSource
from mcs.sources.store import StoreSource
from mcs.status_page import StatusPage
from mcs.tokens import AdminToken, NodeTokens, PoolTokens

log = logging.getLogger(__name__)


class RequestWatcher(Protocol):
    """Told when a connection starts and finishes a request (slow-client deadlines, see server.py)."""

    def request_started(self, protocol: object) -> None: ...

    def request_finished(self, protocol: object) -> None: ...

    def extend(self, protocol: object, seconds: float) -> None:
        """Give the current response `seconds` from now (long polls)."""


@dataclass
class ServerState:
    """Everything the handlers need; one per worker process."""

    source: ConfigSource
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


def _new_state(source: ConfigSource, check_interval: float, watcher: RequestWatcher | None,
              auth: Authorizer | None, **extra: Any) -> ServerState:
    """The state over `source`: a cache checking its inputs every `check_interval` seconds and
    metrics counting its builds; `extra` sets ServerState's store-mode fields."""
    metrics = ServerMetrics()
    cache = ServedConfigCache(source, on_build=lambda pool, version: metrics.builds.labels(pool, version).inc(),
                              check_interval=check_interval)
    return ServerState(source=source, cache=cache, metrics=metrics, auth=auth, watcher=watcher,
                       **extra)


def build_state(options: BootstrapOptions | StoreOptions, guard: RequestWatcher | None) -> ServerState:
    """The state of one worker, as `options` ask (opening the store in store mode)."""
    if isinstance(options, StoreOptions):
        state_dir = str(options.state_dir) if options.state_dir is not None else None
        return build_store_state(options, open_store(options.store, state_dir), guard)
    source = BootstrapSource(options.basedir, options.kubeconfig, list(options.registry_cas))
    auth = TokenAuth(options.token_file) if options.token_file is not None else None
    return _new_state(source, options.input_check_interval, guard, auth)


def build_store_state(options: StoreOptions, store: Store, guard: RequestWatcher | None) -> ServerState:
    """Server state over `store`; creates a bootstrap token for every pool that has none yet.
    Without a state directory (the kube store) there are no bootstrap tokens and no node API:
    /config/<pool> only (guarded by --token-file when given)."""
    token_auth = TokenAuth(options.token_file) if options.token_file is not None else None
    # TLS on: nodes must trust our certificate; --ca names its CA, else the certificate is its own.
    ca = options.ca if options.ca is not None else options.cert
    if options.state_dir is None:
        source = StoreSource(store, None, f"store {options.store}", ca_file=ca, kubeconfig=options.kubeconfig)
        return _new_state(source, options.input_check_interval, guard, token_auth,
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
    return _new_state(source, options.input_check_interval, guard, auth, per_server_url=True,
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
