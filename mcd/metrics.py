"""The daemon's Prometheus metrics, with MCO's names (pkg/daemon/metrics.go), and their listener.

Each Daemon owns one registry so tests can read it; `serve` binds 127.0.0.1:8797 by default.
The listener sleeps until a scrape comes (no periodic wake-up: the daemon is idle most of its life).
"""
from __future__ import annotations

import logging
import platform
import socket
import socketserver
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:8797"


def _os_release() -> tuple[str, str]:
    fields: dict[str, str] = {}
    try:
        with open("/etc/os-release", encoding="utf-8") as release:
            for line in release:
                key, _, value = line.strip().partition("=")
                fields[key] = value.strip('"')
    except OSError:
        pass
    return fields.get("ID", platform.system().lower()), fields.get("VERSION_ID", "")


@dataclass
class DaemonMetrics:
    """The gauges and counters of one daemon."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.host_os = Gauge("mcd_host_os_and_version", "os that MCD is running on and version "
                             "if RHCOS", ["os", "version"], registry=r)
        self.pivot_errors = Counter("mcd_pivot_errors", "errors encountered during pivot",
                                    registry=r)
        self.state = Gauge("mcd_state", "state of daemon on specified node", ["state", "reason"],
                           registry=r)
        self.kubelet_state = Gauge("mcd_kubelet_state", "state of kubelet health monitor",
                                   registry=r)
        self.reboots_failed = Counter("mcd_reboots_failed", "total reboots that failed",
                                      registry=r)
        self.update_state = Gauge("mcd_update_state", "completed update config or error",
                                  ["config", "err"], registry=r)
        self.config_drift = Gauge("mcd_config_drift", "timestamp of the last detected config "
                                  "drift", registry=r)
        self.local_unsupported_packages = Gauge(
            "mcd_local_unsupported_packages", "number of local packages not supported by MCO",
            ["node"], registry=r)
        self.drain_err = Gauge("mcd_drain_err", "errors from the last drain request", registry=r)
        self.host_os.labels(*_os_release()).set(1)

    def set_state(self, state: str, reason: str) -> None:
        # one series per daemon: the previous state's series is dropped, as a reader expects
        self.state.clear()
        self.state.labels(state, reason[:200]).set(time.time())

    def update_done(self, config: str, err: str = "") -> None:
        self.update_state.clear()
        self.update_state.labels(config, err[:200]).set(time.time())

    def drift_detected(self) -> None:
        self.config_drift.set(time.time())


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


class MetricsServer(socketserver.ThreadingMixIn, WSGIServer):
    """A thread per scrape. socketserver's `serve_forever` wakes twice a second to look for a
    shutdown request; this one sleeps until a connection comes, and `shutdown()` makes one."""

    daemon_threads = True

    def serve_forever(self, poll_interval: float | None = None) -> None:
        super().serve_forever(poll_interval=None)  # type: ignore[arg-type]  # None: no timeout

    def shutdown(self) -> None:
        ender = threading.Thread(target=super().shutdown, name="mcd-metrics-shutdown")
        ender.start()  # sets the request, then waits for serve_forever to end
        while ender.is_alive():
            try:
                address = (str(self.server_address[0]), int(self.server_address[1]))
                with socket.create_connection(address, timeout=1.0):
                    pass
            except OSError:
                pass
            ender.join(0.05)


def serve(metrics: DaemonMetrics, listen: str = DEFAULT_LISTEN) -> WSGIServer | None:
    """Start the /metrics listener in a thread; a busy port is logged, never fatal (nodes that
    share one network namespace, as nspawn test nodes do, cannot all have 8797)."""
    host, _, port = listen.rpartition(":")
    try:
        # the family of the address (an IPv6 listen address needs an AF_INET6 socket)
        family, _, _, _, address = socket.getaddrinfo(host or "127.0.0.1", int(port),
                                                      type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]

        class _Server(MetricsServer):
            address_family = family

        server = make_server(str(address[0]), int(port), make_wsgi_app(metrics.registry),
                             _Server, handler_class=_QuietHandler)
    except (OSError, ValueError) as err:
        log.warning("metrics listener on %s not started: %s", listen, err)
        return None
    threading.Thread(target=server.serve_forever, name="mcd-metrics", daemon=True).start()
    log.info("metrics on http://%s:%d/metrics", host, server.server_port)
    return server
