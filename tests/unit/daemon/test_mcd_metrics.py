"""mcd.metrics: MCO's metric names on a real /metrics listener; a busy port is not fatal; the
listener sleeps between scrapes; sd_notify readiness over a real datagram socket.
"""
from __future__ import annotations

import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from mcd.metrics import DaemonMetrics, serve
from machineconfig.sdnotify import notify


def scrape(port: int) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text: str = response.read().decode()
    return text


def test_names_and_values_on_the_listener() -> None:
    metrics = DaemonMetrics()
    metrics.set_state("Degraded", "content mismatch")
    metrics.set_state("Done", "")
    metrics.update_done("rendered-worker-b")
    metrics.reboots_failed.inc()
    metrics.drain_err.set(1)
    metrics.drift_detected()
    server = serve(metrics, "127.0.0.1:0")
    assert server is not None
    try:
        text = scrape(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
    for name in ("mcd_host_os_and_version", "mcd_pivot_errors_total", "mcd_state",
                 "mcd_kubelet_state", "mcd_reboots_failed_total", "mcd_update_state",
                 "mcd_config_drift", "mcd_drain_err"):
        assert f"\n{name}" in text, name
    assert 'mcd_state{reason="",state="Done"}' in text
    assert 'state="Degraded"' not in text  # one state series at a time
    assert 'mcd_update_state{config="rendered-worker-b",err=""}' in text
    assert "mcd_reboots_failed_total 1.0" in text and "mcd_drain_err 1.0" in text


def context_switches(thread: threading.Thread) -> int:
    """How often the thread went to sleep or was preempted so far (its wake-ups)."""
    status = open(f"/proc/self/task/{thread.native_id}/status").read()
    return sum(int(line.split()[1]) for line in status.splitlines()
               if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")))


def test_the_listener_sleeps_between_scrapes() -> None:
    server = serve(DaemonMetrics(), "127.0.0.1:0")
    assert server is not None
    try:
        listener, = [t for t in threading.enumerate() if t.name == "mcd-metrics"]
        scrape(server.server_port)
        time.sleep(0.2)
        before = context_switches(listener)
        time.sleep(1.6)  # a listener polling for shutdown every 0.5 s wakes 3 times
        assert context_switches(listener) - before <= 1
        assert "mcd_state" in scrape(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
    assert not listener.is_alive()


def test_busy_port_is_not_fatal() -> None:
    first = serve(DaemonMetrics(), "127.0.0.1:0")
    assert first is not None
    try:
        assert serve(DaemonMetrics(), f"127.0.0.1:{first.server_port}") is None
    finally:
        first.shutdown()
        first.server_close()


def test_sd_notify_datagram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify("READY=1")
        assert sock.recv(100) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not notify("READY=1")  # not under a Type=notify unit: nothing to do
