"""What the server was asked to do: the listeners and limits both modes share (`ServerOptions`),
and one type per mode, `BootstrapOptions` (`mcs bootstrap`) and `StoreOptions` (`mcs start`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from machineconfig import constants


@dataclass(frozen=True, kw_only=True)
class ServerOptions:
    """Listeners and limits. A port of None disables that listener; 0 picks one."""

    cert: Path | None = None
    key: Path | None = None
    secure_port: int | None = constants.SECURE_PORT
    insecure_port: int | None = constants.INSECURE_PORT
    bind_address: str | None = None
    workers: int = 1
    token_file: Path | None = None
    header_timeout: float = 10.0  # to send a complete request head (also the keep-alive idle limit)
    response_timeout: float = 60.0  # to build and receive one response
    handshake_timeout: float = 10.0  # TLS handshake; generous, since a burst of joins queues handshakes
    max_line_size: int = 8190
    max_field_size: int = 8190
    max_headers: int = 64
    # Seconds a pool's inputs (files, store revision) may go unchecked: the staleness bound of a
    # served config. 0 checks on every request; the command line defaults to INPUT_CHECK_INTERVAL.
    input_check_interval: float = 0.0
    # Answer cached `GET|HEAD /config/<pool>` in mcs.fastpath, in front of aiohttp (same answers).
    fast_path: bool = True
    # The event loop of each worker: "uvloop", "asyncio", or "auto" (uvloop when it is installed).
    event_loop: str = "auto"


@dataclass(frozen=True)
class BootstrapOptions(ServerOptions):
    """`mcs bootstrap`: serve a bootstrap directory."""

    basedir: Path
    kubeconfig: Path  # served as /etc/kubernetes/kubeconfig
    registry_cas: tuple[tuple[str, str], ...] = ()  # --bootstrap-certs: registry, file in basedir


@dataclass(frozen=True)
class StoreOptions(ServerOptions):
    """`mcs start`: serve a store (and, with a state directory, the node API)."""

    store: str  # store URL (`local:DIR`, `kube:...`)
    state_dir: Path | None = None
    ca: Path | None = None  # CA PEM handed to nodes (default: the --cert file)
    advertise_url: str | None = None
    kubeconfig: Path | None = None  # served as /etc/kubernetes/kubeconfig when given
    # Lifetime of a node token; the daemon renews it at half-life.
    node_token_ttl: float = 24 * 3600.0
