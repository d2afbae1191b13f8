"""The kubelet's health, as the daemon sees it: one GET of its healthz endpoint per probe, the
`mcd_kubelet_state` gauge (consecutive failed probes, 0 when healthy, as MCO counts them), and
the bounded wait for a kubelet to come back after a reboot or a restart.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import yaml

from machineconfig.errors import MachineConfigError
from machineconfig.reconcile import AnyConfig
from machineconfig.rendered_config import RenderedConfig
from machineconfig.sdnotify import notify
from mcd.noderoot import NodeRoot

log = logging.getLogger(__name__)

KUBELET_UNIT = "kubelet.service"
KUBELET_CONF = "/etc/kubernetes/kubelet.conf"
# MCO's --kubelet-healthz-endpoint is http://localhost:10248/healthz; the address, not the name,
# so a broken /etc/hosts or resolver cannot pass for a dead kubelet
DEFAULT_URL = "http://127.0.0.1:10248/healthz"
MONITOR_INTERVAL = 30.0  # MCO's kubeletHealthzPollingInterval
PROBE_TIMEOUT = 10.0  # MCO waits 30 s; ours runs in the daemon's loop, which must stay responsive
FAILURE_THRESHOLD = 3  # MCO's kubeletHealthzFailureThreshold: logged once reached
WAIT_BOUND = 300.0  # how long a kubelet may take to come back before the node is Degraded
WAIT_INTERVAL = 1.0  # between probes while waiting
PROGRESS_EVERY = 10.0  # a progress line (log and sd_notify STATUS) this often while waiting
MAX_BODY = 4096
MAX_KUBELET_CONF = 1 << 20


class WaitInterrupted(MachineConfigError):
    """The daemon is stopping: the wait ended without a verdict."""


class UnitStatus(Protocol):
    def __call__(self, name: str) -> str: ...


class Gauge(Protocol):
    def set(self, value: float) -> None: ...


@dataclass(frozen=True)
class Probe:
    """One answer (or its absence) from the healthz endpoint."""

    url: str
    healthy: bool
    detail: str  # "ok", "connection refused", "answered 500: ...", "no answer within 10s"

    def __str__(self) -> str:
        return f"{self.url} {self.detail}"


def kubelet_enabled(mc: AnyConfig) -> bool:
    """Whether the config runs a kubelet: kubelet.service enabled (and not masked) in it."""
    try:
        units = (RenderedConfig.of(mc).ignition.get("systemd") or {}).get("units") or []
    except Exception:  # noqa: BLE001 - a config that does not parse has no kubelet to wait for
        return False
    return any(isinstance(u, Mapping) and u.get("name") == KUBELET_UNIT and
               u.get("enabled") is True and not u.get("mask") for u in units)


def url_from_kubelet_conf(root: Path) -> str | None:
    """The healthz URL the kubelet on disk serves (`healthzBindAddress`, `healthzPort` of
    /etc/kubernetes/kubelet.conf; the kubelet's defaults 127.0.0.1 and 10248); None when the
    file sets `healthzPort: 0` (healthz disabled)."""
    fs = NodeRoot(root)
    address, port = "127.0.0.1", 10248
    try:
        if fs.lexists(KUBELET_CONF):
            data = fs.read_bytes(KUBELET_CONF)
            conf = yaml.safe_load(data) if len(data) <= MAX_KUBELET_CONF else None
            if isinstance(conf, Mapping):
                address = str(conf.get("healthzBindAddress") or address)
                raw_port = conf.get("healthzPort", port)
                port = int(raw_port) if raw_port is not None else port
    except (OSError, ValueError, TypeError, yaml.YAMLError) as err:
        log.warning("%s not read for the kubelet's healthz address (%s): using %s",
                    KUBELET_CONF, err, DEFAULT_URL)
        return DEFAULT_URL
    if port == 0:
        return None
    # a wildcard bind answers on loopback
    address = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(address, address)
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}/healthz"


def probe(url: str, timeout: float = PROBE_TIMEOUT) -> Probe:
    """GET `url` once; healthy only for 200 with the body `ok` (the kubelet's answer)."""
    import http.client  # here: `mcd apply` rarely probes, and http.client brings ssl and email

    parts = urlsplit(url)
    conn_type = http.client.HTTPSConnection if parts.scheme == "https" else \
        http.client.HTTPConnection
    try:
        conn = conn_type(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    except (ValueError, OSError) as err:
        return Probe(url, False, f"bad URL: {err}")
    try:
        conn.request("GET", parts.path or "/healthz", headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read(MAX_BODY).decode("utf-8", "replace").strip()
    except (TimeoutError, socket.timeout):
        return Probe(url, False, f"no answer within {timeout:g}s")
    except ConnectionRefusedError:
        return Probe(url, False, "connection refused")
    except (OSError, http.client.HTTPException) as err:
        return Probe(url, False, f"{type(err).__name__}: {err}")
    finally:
        conn.close()
    first_line = " ".join(body.split())[:120]
    if response.status != 200:
        return Probe(url, False, f"answered {response.status}"
                                 f"{': ' + first_line if first_line else ''}")
    if body != "ok":
        # MCO logs such an answer and counts it healthy; a kubelet always says "ok"
        return Probe(url, False, f"answered 200 with {first_line!r}, not 'ok'")
    return Probe(url, True, "ok")


@dataclass
class KubeletHealth:
    """Probes, the consecutive-failure count behind `mcd_kubelet_state`, and the bounded wait.

    `url` None: the one kubelet.conf on disk names (see `url_from_kubelet_conf`)."""

    root: Path = Path("/")
    url: str | None = None
    probe_timeout: float = PROBE_TIMEOUT
    wait_bound: float = WAIT_BOUND
    wait_interval: float = WAIT_INTERVAL
    unit_status: UnitStatus | None = None
    gauge: Gauge | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    last: Probe | None = None

    def target(self) -> str | None:
        return self.url or url_from_kubelet_conf(self.root)

    def check(self) -> Probe | None:
        """One probe; None when the kubelet serves no healthz (healthzPort 0)."""
        url = self.target()
        if url is None:
            return None
        result = probe(url, self.probe_timeout)
        self.failures = 0 if result.healthy else self.failures + 1
        if self.gauge is not None:
            self.gauge.set(self.failures)
        if not result.healthy:
            log.log(logging.WARNING if self.failures == FAILURE_THRESHOLD else logging.DEBUG,
                    "kubelet health check failed %d times in a row: %s", self.failures, result)
        elif self.last is not None and not self.last.healthy:
            log.info("kubelet healthy again: %s", result.url)
        self.last = result
        return result

    def unit(self) -> str:
        if self.unit_status is None:
            return ""
        try:
            return f"{KUBELET_UNIT} {self.unit_status(KUBELET_UNIT)}"
        except Exception as err:  # noqa: BLE001 - the reason must still be written
            return f"{KUBELET_UNIT} state unknown ({err})"

    def wait_healthy(self, context: str, once: bool = False) -> str | None:
        """Probe until healthy or `wait_bound` seconds pass (`once`: one probe, as a retry of a
        wait that already ran out); None when healthy (or healthz is disabled), else the
        one-line Degraded reason naming what was seen last. Raises WaitInterrupted on `stop`."""
        bound = self.wait_bound
        start = self.clock()
        next_progress = start + PROGRESS_EVERY
        while True:
            result = self.check()
            if result is None:
                log.info("kubelet healthz disabled (healthzPort 0): not waited for")
                return None
            elapsed = self.clock() - start
            if result.healthy:
                log.info("kubelet healthy %.0fs %s", elapsed, context)
                return None
            if self.stop.is_set():
                raise WaitInterrupted(context)
            if once or elapsed >= bound:
                unit = self.unit()
                reason = (f"kubelet did not become healthy within {bound:g}s {context}: "
                          f"{result}{'; ' + unit if unit else ''}")
                log.error("%s", reason)
                return reason
            if self.clock() >= next_progress:
                next_progress += PROGRESS_EVERY
                unit = self.unit()
                status = (f"waiting for the kubelet {context} ({elapsed:.0f}s of {bound:g}s): "
                          f"{result.detail}{'; ' + unit if unit else ''}")
                log.info("%s", status)
                notify(f"STATUS={status}")
            self.stop.wait(min(self.wait_interval, max(bound - elapsed, 0.0)))
