"""What the request handlers of one worker share (`ServerState`) and its one construction
(`new_state`: the served-config cache and the metrics counting its builds), for either mode.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from mcs.auth import Authorizer
from mcs.cache import ServedConfigCache
from mcs.fleetlock import FleetLock
from mcs.metrics import ServerMetrics
from mcs.node_api import NodeAPIState
from mcs.sources import ConfigSource
from mcs.status_page import StatusPage


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


def new_state(source: ConfigSource, check_interval: float, watcher: RequestWatcher | None,
              auth: Authorizer | None, **extra: Any) -> ServerState:
    """The state over `source`: a cache checking its inputs every `check_interval` seconds and
    metrics counting its builds; `extra` sets ServerState's store-mode fields."""
    metrics = ServerMetrics()
    cache = ServedConfigCache(source, on_build=lambda pool, version: metrics.builds.labels(pool, version).inc(),
                              check_interval=check_interval)
    return ServerState(source=source, cache=cache, metrics=metrics, auth=auth, watcher=watcher,
                       **extra)
