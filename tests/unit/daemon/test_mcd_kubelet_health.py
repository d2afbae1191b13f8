"""The kubelet health monitor against a real HTTP server on loopback standing in for the kubelet's
healthz endpoint (healthy, 500, refused, slow), the waits after a kubelet restart and after a
reboot (offline resume and the daemon), `mcd_kubelet_state` and `mcd_pivot_errors_total`.
"""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from machineconfig import constants as C
from machineconfig.disruption import merge_policies, parse_policy, DEFAULT_POLICY
from mcd import state as node_state
from mcd.state import Phase
from mcd.daemon import Daemon, DaemonError, Timeouts
from mcd.kubelet_health import KubeletHealth, kubelet_enabled, probe, url_from_kubelet_conf
from mcd.metrics import DaemonMetrics
from mcd.update import KUBELET_HEALTHY_BEFORE, apply_update, resume_after_boot
from tests.support.fakenodeapi import FakeNodeAPI
from tests.unit.daemon.test_mcd_daemon import lay_down
from tests.unit.daemon.test_mcd_rpm_ostree import FakeRpmOstree
from tests.unit.daemon.test_mcd_update import FakeSystemd, mc, root  # noqa: F401 - root is a fixture

NODE = "node-1"
STATE, REASON = C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION, C.MACHINE_CONFIG_DAEMON_REASON_ANNOTATION
KUBELET_UNIT = {"name": "kubelet.service", "enabled": True,
                "contents": "[Service]\nExecStart=/usr/bin/kubelet\n"}
UNIT_STATUS = "activating (auto-restart), result exit-code"


class Healthz(ThreadingHTTPServer):
    """A kubelet's healthz stand-in: `mode` is ok, 500, notok or slow."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = "ok"
        self.requests = 0
        self.release = threading.Event()  # ends a slow answer
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="test-healthz")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/healthz"

    def __enter__(self) -> Healthz:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()
        self.thread.join(5)


class _Handler(BaseHTTPRequestHandler):
    server: Healthz

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.requests += 1
        mode = self.server.mode
        if mode == "slow":
            self.server.release.wait(10)
        status, body = {"ok": (200, b"ok"), "500": (500, b"[-]syncloop failed\nhealthz check "
                                                         b"failed\n"),
                        "notok": (200, b"starting")}.get(mode, (200, b"ok"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def healthz() -> Iterator[Healthz]:
    with Healthz() as server:
        yield server


def refused_url() -> str:
    with socket.socket() as sock:  # a port nobody listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/healthz"


class StatusSystemd(FakeSystemd):
    """The in-memory systemd, with the unit state systemd would report for the kubelet."""

    def __init__(self, on_restart: Any = None) -> None:
        super().__init__()
        self.on_restart = on_restart

    def unit_status(self, name: str) -> str:
        return UNIT_STATUS

    def restart_unit(self, name: str) -> None:
        super().restart_unit(name)
        if self.on_restart is not None:
            self.on_restart(name)


def gauge(metrics: DaemonMetrics) -> float | None:
    return metrics.registry.get_sample_value("mcd_kubelet_state")


# ---- one probe --------------------------------------------------------------------------------

def test_probe_healthy_500_refused_slow_and_not_ok(healthz: Healthz) -> None:
    assert probe(healthz.url).healthy
    healthz.mode = "500"
    result = probe(healthz.url)
    assert not result.healthy
    assert result.detail == "answered 500: [-]syncloop failed healthz check failed"
    healthz.mode = "notok"
    assert probe(healthz.url).detail == "answered 200 with 'starting', not 'ok'"
    url = refused_url()
    assert str(probe(url)) == f"{url} connection refused"
    healthz.mode = "slow"
    started = time.monotonic()
    result = probe(healthz.url, timeout=0.3)
    assert result.detail == "no answer within 0.3s" and time.monotonic() - started < 3
    healthz.release.set()


def test_gauge_counts_consecutive_failures_as_mco(healthz: Healthz) -> None:
    metrics = DaemonMetrics()
    assert gauge(metrics) == 0  # registered at 0, as MCO does
    health = KubeletHealth(url=healthz.url, gauge=metrics.kubelet_state)
    healthz.mode = "500"
    for expected in (1, 2, 3):
        health.check()
        assert gauge(metrics) == expected
    healthz.mode = "ok"
    health.check()
    assert gauge(metrics) == 0


def test_url_from_kubelet_conf(tmp_path: Path) -> None:
    assert url_from_kubelet_conf(tmp_path) == "http://127.0.0.1:10248/healthz"
    conf = tmp_path / "etc/kubernetes/kubelet.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("kind: KubeletConfiguration\nhealthzBindAddress: 10.213.0.7\n"
                    "healthzPort: 10348\n")
    assert url_from_kubelet_conf(tmp_path) == "http://10.213.0.7:10348/healthz"
    conf.write_text('{"healthzBindAddress": "::", "healthzPort": 10249}')
    assert url_from_kubelet_conf(tmp_path) == "http://[::1]:10249/healthz"
    conf.write_text("healthzBindAddress: 0.0.0.0\n")
    assert url_from_kubelet_conf(tmp_path) == "http://127.0.0.1:10248/healthz"
    conf.write_text("healthzPort: 0\n")
    assert url_from_kubelet_conf(tmp_path) is None
    conf.write_text("healthzPort: [unclosed\n")
    assert url_from_kubelet_conf(tmp_path) == "http://127.0.0.1:10248/healthz"


def test_kubelet_enabled_only_when_the_config_enables_it() -> None:
    assert kubelet_enabled(mc("a", units=[KUBELET_UNIT]))
    assert not kubelet_enabled(mc("a", units=[{**KUBELET_UNIT, "enabled": False}]))
    assert not kubelet_enabled(mc("a", units=[{**KUBELET_UNIT, "mask": True}]))
    assert not kubelet_enabled(mc("a", {"/etc/motd": "x"}))


def test_wait_sees_a_kubelet_that_comes_up(healthz: Healthz) -> None:
    healthz.mode = "500"
    threading.Timer(0.5, lambda: setattr(healthz, "mode", "ok")).start()
    health = KubeletHealth(url=healthz.url, wait_bound=20, wait_interval=0.1)
    assert health.wait_healthy("after the reboot into b") is None
    assert health.failures == 0 and healthz.requests >= 2


def test_wait_ends_with_a_reason_naming_healthz_and_the_unit() -> None:
    url = refused_url()
    health = KubeletHealth(url=url, wait_bound=0.5, wait_interval=0.1,
                           unit_status=StatusSystemd().unit_status)
    started = time.monotonic()
    reason = health.wait_healthy("after the reboot into rendered-worker-b")
    assert reason == ("kubelet did not become healthy within 0.5s after the reboot into "
                      f"rendered-worker-b: {url} connection refused; kubelet.service {UNIT_STATUS}")
    assert 0.5 <= time.monotonic() - started < 5 and health.failures >= 3


# ---- the update engine and the offline resume ------------------------------------------------

RESTART_ON_KUBELET_CONF = merge_policies(DEFAULT_POLICY, parse_policy({"files": [
    {"path": "/etc/kubernetes/kubelet.conf",
     "actions": [{"type": "Restart", "restart": {"serviceName": "kubelet.service"}}]}]}))


@pytest.mark.parametrize("comes_back", [True, False])
def test_kubelet_restart_action_waits_for_the_kubelet(root: Path, healthz: Healthz,
                                                      comes_back: bool) -> None:
    a = mc("a", {"/etc/kubernetes/kubelet.conf": "maxPods: 110\n"}, units=[KUBELET_UNIT])
    b = mc("b", {"/etc/kubernetes/kubelet.conf": "maxPods: 250\n"}, units=[KUBELET_UNIT])
    systemd = StatusSystemd(on_restart=lambda _: setattr(healthz, "mode",
                                                         "ok" if comes_back else "500"))
    health = KubeletHealth(url=healthz.url, wait_bound=0.5, wait_interval=0.1,
                           unit_status=systemd.unit_status)
    assert apply_update(mc("empty"), a, systemd, root=root).rebooting  # the node is in a
    outcome = apply_update(a, b, systemd, root=root, policy=RESTART_ON_KUBELET_CONF,
                           kubelet=health)
    assert ("RestartUnit", "kubelet.service") in systemd.calls
    record = node_state.read_state(root)
    assert record[KUBELET_HEALTHY_BEFORE] is True
    if comes_back:
        assert outcome.state == "Done" and record["state"] == "Done"
        return
    assert outcome.state == "Degraded" and outcome.kubelet_unhealthy
    assert outcome.reason == (f"kubelet did not become healthy within 0.5s after restarting "
                              f"kubelet.service: {healthz.url} answered 500: [-]syncloop failed "
                              f"healthz check failed; kubelet.service {UNIT_STATUS}")
    assert record["state"] == "Degraded" and record["reason"] == outcome.reason


def test_no_wait_for_a_kubelet_that_never_answered(root: Path) -> None:
    """The nspawn nodes' template kubelet has no binary: a restart must not degrade them."""
    a = mc("a", {"/etc/kubernetes/kubelet.conf": "maxPods: 110\n"}, units=[KUBELET_UNIT])
    b = mc("b", {"/etc/kubernetes/kubelet.conf": "maxPods: 250\n"}, units=[KUBELET_UNIT])
    health = KubeletHealth(url=refused_url(), wait_bound=30)
    systemd = StatusSystemd()
    assert apply_update(mc("empty"), a, systemd, root=root).rebooting  # the node is in a
    started = time.monotonic()
    outcome = apply_update(a, b, systemd, root=root, policy=RESTART_ON_KUBELET_CONF,
                           kubelet=health)
    assert outcome.state == "Done" and time.monotonic() - started < 10
    assert node_state.read_state(root)[KUBELET_HEALTHY_BEFORE] is False


@pytest.mark.parametrize("comes_back", [True, False])
def test_resume_after_reboot_waits_for_a_kubelet_that_answered_before(
        root: Path, healthz: Healthz, comes_back: bool) -> None:
    a = mc("a", {"/etc/motd": "a"})
    b = mc("b", {"/etc/motd": "b"}, units=[KUBELET_UNIT])  # a unit added: reboot
    systemd = StatusSystemd()
    health = KubeletHealth(url=healthz.url, wait_bound=0.5, wait_interval=0.1,
                           unit_status=systemd.unit_status)
    outcome = apply_update(a, b, systemd, root=root, kubelet=health)
    assert outcome.rebooting and node_state.read_state(root)[KUBELET_HEALTHY_BEFORE] is True
    healthz.mode = "ok" if comes_back else "500"
    after = resume_after_boot(systemd, root, kubelet=health)
    if comes_back:
        assert (after.state, after.reason) == ("Done", "")
        return
    assert after.state == "Degraded" and after.kubelet_unhealthy
    assert after.reason.startswith("kubelet did not become healthy within 0.5s after the reboot "
                                   f"into b: {healthz.url} answered 500")
    assert node_state.read_state(root)["reason"] == after.reason


def test_resume_without_kubelet_in_the_config_does_not_probe(root: Path,
                                                             healthz: Healthz) -> None:
    a, b = mc("a", {"/etc/motd": "a"}), mc("b", {"/etc/motd": "b"}, kernelArguments=[])
    b["spec"]["config"]["systemd"] = {"units": [{"name": "other.service", "enabled": True,
                                                 "contents": "[Service]\n"}]}
    health = KubeletHealth(url=healthz.url)
    systemd = StatusSystemd()
    assert apply_update(a, b, systemd, root=root, kubelet=health).rebooting
    requests = healthz.requests
    assert resume_after_boot(systemd, root, kubelet=health).state == "Done"
    assert healthz.requests == requests


def test_pivot_error_is_counted(root: Path) -> None:
    (root / "run").mkdir()
    (root / "run/ostree-booted").touch()
    outcome = apply_update(mc("a", osImageURL="quay.io/os@sha256:old"),
                           mc("b", osImageURL="quay.io/os@sha256:new"), StatusSystemd(),
                           root=root, os_runner=FakeRpmOstree(fail="rebase"))
    assert outcome.state == "Degraded" and outcome.pivot_error
    outcome = apply_update(mc("a", {"/etc/motd": "a"}), mc("b", {"/etc/motd": "b"}),
                           FakeSystemd(), root=root, os_runner=FakeRpmOstree())
    assert not outcome.pivot_error


# ---- the daemon -------------------------------------------------------------------------------

A = mc("rendered-worker-a", {"/etc/motd": "a"})
B = mc("rendered-worker-b", {"/etc/motd": "b", "/etc/kubernetes/kubelet.conf": "maxPods: 250\n"},
       units=[KUBELET_UNIT])
FAST = Timeouts(drain=5, uncordon=5, watch=0.05, backoff_min=0.01, backoff_max=0.05,
                drift_poll=3600, drift_full=3600, kubelet_wait=1.0, kubelet_monitor=3600)


def node_api(current: str, desired: str) -> FakeNodeAPI:
    api = FakeNodeAPI(NODE)
    for config in (A, B):
        api.rendered[config["metadata"]["name"]] = config
    api.set_annotations(NODE, {C.CURRENT_CONFIG_ANNOTATION: current,
                               C.DESIRED_CONFIG_ANNOTATION: desired, STATE: "Done"})
    return api


def reboot_into_b(root: Path, url: str, systemd: FakeSystemd) -> FakeNodeAPI:
    """A Done in rendered-worker-a, updated to rendered-worker-b (kubelet added): reboot queued."""
    lay_down(root, A)
    api = node_api("rendered-worker-a", "rendered-worker-b")
    d = Daemon(api, NODE, systemd, root=root, timeouts=FAST, kubelet_url=url)
    d.phase = Phase.FOLLOWING
    d.sync()
    assert d.phase is Phase.REBOOTING
    return api


def test_daemon_degraded_when_the_kubelet_does_not_come_back_then_heals(
        root: Path, healthz: Healthz) -> None:
    systemd = StatusSystemd()
    api = reboot_into_b(root, healthz.url, systemd)
    assert node_state.read_state(root)[KUBELET_HEALTHY_BEFORE] is True
    healthz.mode = "500"  # the machine is back; its kubelet is not
    resumed = Daemon(api, NODE, systemd, root=root, timeouts=FAST, kubelet_url=healthz.url)
    with pytest.raises(DaemonError) as err:
        resumed.sync()
    resumed.report_error(err.value)
    annotations = api.get_node(NODE).annotations
    assert annotations[STATE] == "Degraded"
    assert annotations[REASON] == (
        "kubelet did not become healthy within 1s after the reboot into rendered-worker-b: "
        f"{healthz.url} answered 500: [-]syncloop failed healthz check failed; "
        f"kubelet.service {UNIT_STATUS}")
    assert annotations[C.DESIRED_DRAIN_ANNOTATION] == "drain-rendered-worker-b"  # no uncordon
    assert (gauge(resumed.metrics) or 0) >= 2
    # the kubelet comes back: the next retry (one probe, not another full wait) reports Done
    healthz.mode = "ok"
    resumed.sync()
    annotations = api.get_node(NODE).annotations
    assert annotations[STATE] == "Done" and annotations[REASON] == ""
    assert annotations[C.CURRENT_CONFIG_ANNOTATION] == "rendered-worker-b"
    assert gauge(resumed.metrics) == 0 and resumed.kubelet_next is not None


def test_daemon_done_after_reboot_when_the_kubelet_answers(root: Path, healthz: Healthz) -> None:
    systemd = StatusSystemd()
    api = reboot_into_b(root, healthz.url, systemd)
    healthz.mode = "500"
    threading.Timer(0.3, lambda: setattr(healthz, "mode", "ok")).start()
    resumed = Daemon(api, NODE, systemd, root=root,
                     timeouts=Timeouts(**{**FAST.__dict__, "kubelet_wait": 20}),
                     kubelet_url=healthz.url)
    resumed.sync()
    assert api.get_node(NODE).annotations[STATE] == "Done"
    assert gauge(resumed.metrics) == 0


def test_daemon_without_an_answering_kubelet_is_done_and_not_monitored(root: Path) -> None:
    """A node whose kubelet never answered (the e2e nodes' template kubelet has no binary)
    reaches Done as before, and is probed once, not every 30 s."""
    systemd = StatusSystemd()
    url = refused_url()
    api = reboot_into_b(root, url, systemd)
    assert node_state.read_state(root)[KUBELET_HEALTHY_BEFORE] is False
    resumed = Daemon(api, NODE, systemd, root=root, timeouts=FAST, kubelet_url=url)
    resumed.sync()
    assert api.get_node(NODE).annotations[STATE] == "Done"
    assert gauge(resumed.metrics) == 1 and resumed.kubelet_next is None


def test_daemon_monitors_a_kubelet_at_rest_without_degrading(root: Path,
                                                             healthz: Healthz) -> None:
    systemd = StatusSystemd()
    api = reboot_into_b(root, healthz.url, systemd)
    monitor = Timeouts(**{**FAST.__dict__, "kubelet_monitor": 0.05})
    resumed = Daemon(api, NODE, systemd, root=root, timeouts=monitor, kubelet_url=healthz.url)
    resumed.sync()
    healthz.mode = "500"
    resumed.run(max_iterations=8)
    assert (gauge(resumed.metrics) or 0) >= 3  # MCO's alert fires above 2
    assert api.get_node(NODE).annotations[STATE] == "Done"


def test_daemon_counts_pivot_errors(root: Path) -> None:
    (root / "run").mkdir()
    (root / "run/ostree-booted").touch()
    old = mc("rendered-worker-a", osImageURL="quay.io/os@sha256:old")
    new = mc("rendered-worker-b", osImageURL="quay.io/os@sha256:new")
    api = FakeNodeAPI(NODE)
    api.rendered.update({"rendered-worker-a": old, "rendered-worker-b": new})
    api.set_annotations(NODE, {C.CURRENT_CONFIG_ANNOTATION: "rendered-worker-a",
                               C.DESIRED_CONFIG_ANNOTATION: "rendered-worker-b", STATE: "Done"})
    d = Daemon(api, NODE, StatusSystemd(), root=root, timeouts=FAST,
               os_runner=FakeRpmOstree(fail="rebase"))
    d.phase = Phase.FOLLOWING
    assert d.metrics.registry.get_sample_value("mcd_pivot_errors_total") == 0
    with pytest.raises(DaemonError, match="boom"):
        d.sync()
    assert d.metrics.registry.get_sample_value("mcd_pivot_errors_total") == 1


def test_daemon_stopping_during_the_wait_reports_nothing(root: Path, healthz: Healthz) -> None:
    """SIGTERM while the daemon waits for the kubelet: it stops, and the node is not Degraded
    by a wait that never ran its course."""
    systemd = StatusSystemd()
    api = reboot_into_b(root, healthz.url, systemd)
    healthz.mode = "500"
    resumed = Daemon(api, NODE, systemd, root=root,
                     timeouts=Timeouts(**{**FAST.__dict__, "kubelet_wait": 60}),
                     kubelet_url=healthz.url)
    stopper = threading.Timer(0.5, resumed.stop_requested.set)
    stopper.start()
    started = time.monotonic()
    resumed.run(max_iterations=3)
    stopper.join()
    assert time.monotonic() - started < 30
    assert api.get_node(NODE).annotations[STATE] != "Degraded"


def test_cli_kubelet_options() -> None:
    from mcd.cli import build_parser
    for command in (["start"], ["resume"], ["apply", "--current", "a", "--desired", "b"]):
        args = build_parser().parse_args([*command, "--kubelet-healthz-url",
                                          "http://10.0.0.7:10248/healthz", "--kubelet-wait", "45"])
        assert (args.kubelet_healthz_url, args.kubelet_wait) == \
            ("http://10.0.0.7:10248/healthz", 45.0)
        defaults = build_parser().parse_args(command)
        assert (defaults.kubelet_healthz_url, defaults.kubelet_wait) == (None, 300.0)
