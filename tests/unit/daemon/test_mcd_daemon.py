"""mcd.daemon against an in-memory NodeAPI, with the real update engine on a tmp root and an
in-memory systemd: Done, updates with the drain handshake, reboot and resume, Degraded and
Unreconcilable texts, self-healing, on-disk currentconfig, the drift monitor.
"""
from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from machineconfig import constants as C
from machineconfig.rendered_config import RenderedConfig
from mcd import state as node_state
from mcd.state import Phase
from mcd.daemon import Daemon, DaemonError, Timeouts
from mcd.drain import duration_text
from mcd.file_writers import FileWriter, Journal
from tests.support.fakenodeapi import FakeNodeAPI
from tests.unit.daemon.test_mcd_update import FakeSystemd, mc, root  # noqa: F401 - root is a fixture

NODE = "node-1"
CUR, DES = C.CURRENT_CONFIG_ANNOTATION, C.DESIRED_CONFIG_ANNOTATION
STATE, REASON = C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION, C.MACHINE_CONFIG_DAEMON_REASON_ANNOTATION
FAST = Timeouts(drain=5, uncordon=5, watch=0.05, backoff_min=0.01, backoff_max=0.05,
                drift_poll=0.01, drift_full=0.5)
POLLING = Timeouts(drain=5, uncordon=5, watch=0.05, backoff_min=0.01, backoff_max=0.05,
                   drift_poll=0.01, drift_full=0.5, drift_inotify=False)
# nothing periodic within a test: the loop sleeps until the store or inotify wakes it
SLEEPY = Timeouts(drain=5, uncordon=5, watch=60, backoff_min=0.01, backoff_max=0.05,
                  drift_poll=3600, drift_full=3600)

A = mc("rendered-worker-a", {"/etc/containers/policy.json": "{}", "/etc/motd": "hello"})
B_RELOAD = mc("rendered-worker-b", {"/etc/containers/policy.json": '{"x": 1}', "/etc/motd": "hello"})
B_REBOOT = mc("rendered-worker-b", {"/etc/containers/policy.json": "{}", "/etc/motd": "hello",
                                    "/etc/kubernetes/kubelet.conf": "kubelet"})


def lay_down(root: Path, config: dict[str, Any]) -> None:
    """The node's disk as Ignition left it for `config`."""
    journal = Journal()
    FileWriter(root, journal).write_files(config["spec"]["config"]["storage"]["files"])
    journal.sync()


def cluster(*configs: dict[str, Any], current: str = "", desired: str = "") -> FakeNodeAPI:
    api = FakeNodeAPI(NODE)
    for config in configs:
        api.rendered[config["metadata"]["name"]] = config
    api.set_annotations(NODE, {CUR: current or None, DES: desired or None})
    return api


def daemon(api: FakeNodeAPI, root: Path, systemd: FakeSystemd | None = None,
           timeouts: Timeouts = FAST) -> Daemon:
    return Daemon(api, NODE, systemd or FakeSystemd(), root=root, timeouts=timeouts)


def ann(api: FakeNodeAPI) -> dict[str, str]:
    return api.get_node(NODE).annotations


def test_done_when_current_equals_desired(root: Path) -> None:
    lay_down(root, A)
    api = cluster(A, current="rendered-worker-a", desired="rendered-worker-a")
    d = daemon(api, root)
    d.sync()
    a = ann(api)
    assert a[STATE] == "Done" and a[REASON] == "" and a[CUR] == "rendered-worker-a"
    assert a[C.DESIRED_DRAIN_ANNOTATION] == "uncordon-rendered-worker-a"
    assert "ConfigDriftMonitorStarted" in api.reasons()
    samples = {s.labels["state"]: s.value for m in d.metrics.registry.collect()
               if m.name == "mcd_state" for s in m.samples}
    assert list(samples) == ["Done"]


def test_rebootless_update_then_done(root: Path) -> None:
    lay_down(root, A)
    api = cluster(A, B_RELOAD, current="rendered-worker-a", desired="rendered-worker-a")
    systemd = FakeSystemd()
    d = daemon(api, root, systemd)
    d.sync()
    api.set_annotations(NODE, {DES: "rendered-worker-b"})
    d.sync()
    a = ann(api)
    assert a[STATE] == "Done" and a[CUR] == "rendered-worker-b"
    assert ("ReloadUnit", "crio.service") in systemd.calls
    # a crio reload needs no drain: only uncordon requests were made
    drains = [p[C.DESIRED_DRAIN_ANNOTATION] for p in api.patches if C.DESIRED_DRAIN_ANNOTATION in p]
    assert drains == ["uncordon-rendered-worker-a", "uncordon-rendered-worker-b"]
    states = [p[STATE] for p in api.patches if STATE in p]
    assert states == ["Done", "Working", "Done"]


def test_reboot_update_drains_and_resumes(root: Path) -> None:
    lay_down(root, A)
    api = cluster(A, B_REBOOT, current="rendered-worker-a", desired="rendered-worker-b")
    systemd = FakeSystemd()
    d = daemon(api, root, systemd)
    d.phase = Phase.FOLLOWING
    api.set_annotations(NODE, {STATE: "Done"})
    d.sync()
    a = ann(api)
    assert a[C.DESIRED_DRAIN_ANNOTATION] == "drain-rendered-worker-b"
    assert a[C.LAST_APPLIED_DRAIN_ANNOTATION] == "drain-rendered-worker-b"
    assert a[C.POST_CONFIG_ACTION_ANNOTATION] == "Rebooting"
    assert a[CUR] == "rendered-worker-a"  # annotated only after the reboot
    assert systemd.calls[-1] == ("Reboot", "Node will reboot into config rendered-worker-b")
    assert d.phase is Phase.REBOOTING and {"Cordon", "Drain", "Reboot"} <= set(api.reasons())
    d.sync()  # a queued reboot ignores further syncs
    assert ann(api)[C.POST_CONFIG_ACTION_ANNOTATION] == "Rebooting"
    # the machine comes back: a new daemon process
    resumed = daemon(api, root, systemd)
    resumed.sync()
    a = ann(api)
    assert a[C.POST_CONFIG_ACTION_ANNOTATION] == ""
    assert a[STATE] == "Done" and a[CUR] == "rendered-worker-b"
    assert a[C.DESIRED_DRAIN_ANNOTATION] == "uncordon-rendered-worker-b"
    assert not api.nodes[NODE].unschedulable


def test_reboot_failure_counts_and_degrades(root: Path) -> None:
    lay_down(root, A)
    api = cluster(A, B_REBOOT, current="rendered-worker-a", desired="rendered-worker-b")
    systemd = FakeSystemd()
    systemd.fail_on.add("Reboot")
    d = daemon(api, root, systemd)
    d.run(max_iterations=1)
    assert ann(api)[STATE] == "Degraded"
    assert ann(api)[REASON] == "reboot command failed, something is seriously wrong"
    assert d.metrics.registry.get_sample_value("mcd_reboots_failed_total") == 1


def test_degraded_with_reason_then_heals_when_reverted(root: Path) -> None:
    lay_down(root, A)
    broken = mc("rendered-worker-broken", {"/etc/containers/policy.json": '{"x": 1}',
                                           "/etc/motd": "hello"})
    broken["spec"]["config"]["storage"]["files"][1]["user"] = {"name": "nobody-here"}
    api = cluster(A, broken, current="rendered-worker-a", desired="rendered-worker-broken")
    d = daemon(api, root)
    d.run(max_iterations=1)
    a = ann(api)
    assert a[STATE] == "Degraded"
    assert a[REASON] == ("failed to apply rendered-worker-broken, rolled back to "
                         "rendered-worker-a: user 'nobody-here' not found")
    assert (root / "etc/containers/policy.json").read_text() == "{}"
    api.set_annotations(NODE, {DES: "rendered-worker-a"})  # MCO issue #1443: revert heals
    d.run(max_iterations=4)
    a = ann(api)
    assert a[STATE] == "Done" and a[REASON] == "" and a[CUR] == "rendered-worker-a"


def test_degraded_then_heals_when_desired_fixed(root: Path) -> None:
    lay_down(root, A)
    systemd = FakeSystemd()
    systemd.fail_on.add("crio.service")
    api = cluster(A, B_RELOAD, current="rendered-worker-a", desired="rendered-worker-b")
    d = daemon(api, root, systemd)
    d.run(max_iterations=1)
    assert ann(api)[REASON] == ("could not apply update: reloading crio.service configuration "
                                "failed. Error: ReloadUnit failed")
    systemd.fail_on.clear()
    fixed = mc("rendered-worker-c", {"/etc/containers/policy.json": '{"y": 2}', "/etc/motd": "hello"})
    api.rendered["rendered-worker-c"] = fixed
    api.set_annotations(NODE, {DES: "rendered-worker-c"})
    d.run(max_iterations=6)
    a = ann(api)
    assert (a[STATE], a[CUR]) == ("Done", "rendered-worker-c"), a
    assert (root / "etc/containers/policy.json").read_text() == '{"y": 2}'


def test_unreconcilable_text(root: Path) -> None:
    lay_down(root, A)
    fips = mc("rendered-worker-fips", {"/etc/containers/policy.json": "{}", "/etc/motd": "hello"},
              fips=True)
    api = cluster(A, fips, current="rendered-worker-a", desired="rendered-worker-fips")
    d = daemon(api, root)
    d.run(max_iterations=1)
    a = ann(api)
    assert a[STATE] == "Unreconcilable"
    assert a[REASON].startswith("can't reconcile config rendered-worker-a with "
                                "rendered-worker-fips: ")
    assert "FailedToReconcile" in api.reasons()
    api.set_annotations(NODE, {DES: "rendered-worker-a"})
    d.run(max_iterations=4)
    assert ann(api)[STATE] == "Done"


def test_missing_rendered_config_text(root: Path) -> None:
    lay_down(root, A)
    api = cluster(A, current="rendered-worker-a", desired="rendered-worker-zzz")
    daemon(api, root).run(max_iterations=1)
    assert ann(api)[REASON] == ('machineconfig.machineconfiguration.openshift.io '
                                '"rendered-worker-zzz" not found')


def test_reason_is_truncated(root: Path) -> None:
    api = cluster(A)
    d = daemon(api, root)
    d.report_error(DaemonError("x" * 5000))
    assert len(ann(api)[REASON]) == 2000


def test_on_disk_currentconfig_overrides_annotation(root: Path) -> None:
    lay_down(root, B_RELOAD)
    (root / "etc/machine-config-daemon").mkdir(parents=True, exist_ok=True)
    (root / C.CURRENT_CONFIG_PATH.lstrip("/")).write_bytes(node_state.current_config_bytes(RenderedConfig(B_RELOAD)))
    # rendered-worker-a is not even in the store: the annotation is stale (etcd restore)
    api = cluster(B_RELOAD, current="rendered-worker-a", desired="rendered-worker-b")
    daemon(api, root).sync()
    a = ann(api)
    assert (a[STATE], a[CUR]) == ("Done", "rendered-worker-b")


@pytest.mark.parametrize("daemon_keys_only", [False, True])
def test_bootstrap_from_node_annotations_file(root: Path, daemon_keys_only: bool) -> None:
    lay_down(root, A)
    mcd_dir = root / "etc/machine-config-daemon"
    mcd_dir.mkdir(parents=True, exist_ok=True)
    (mcd_dir / "node-annotations.json").write_text(json.dumps({
        CUR: "rendered-worker-a", DES: "rendered-worker-a", STATE: "Done",
        C.FIRST_PIVOT_CONFIG_ANNOTATION: "rendered-worker-a"}))
    (root / "etc/ignition-machine-config-encapsulated.json").write_text("{}")
    api = cluster(A)
    api.daemon_keys_only = daemon_keys_only
    daemon(api, root).sync()
    a = ann(api)
    assert (a[STATE], a[CUR], a[C.FIRST_PIVOT_CONFIG_ANNOTATION]) == (
        "Done", "rendered-worker-a", "rendered-worker-a")
    # MCO's daemon writes desiredConfig once at bootstrap; a node API may refuse it
    assert a.get(DES) == (None if daemon_keys_only else "rendered-worker-a")
    assert (mcd_dir / "node-annotation.json.bak").exists()
    assert not (mcd_dir / "node-annotations.json").exists()
    assert (root / "etc/ignition-machine-config-encapsulated.json.bak").exists()


@pytest.mark.parametrize("timeouts", [FAST, POLLING], ids=["inotify", "poll"])
def test_drift_degrades_naming_the_path_then_fix_is_done(root: Path, timeouts: Timeouts) -> None:
    lay_down(root, A)
    api = cluster(A, current="rendered-worker-a", desired="rendered-worker-a")
    d = daemon(api, root, timeouts=timeouts)
    d.run(max_iterations=2)
    assert ann(api)[STATE] == "Done"
    motd = root / "etc/motd"
    motd.write_text("hand edit")
    for _ in range(20):
        d.run(max_iterations=1)
        if ann(api)[STATE] == "Degraded":
            break
    assert ann(api)[REASON] == ('unexpected on-disk state validating against rendered-worker-a: '
                                'content mismatch for file "/etc/motd"')
    assert "ConfigDriftDetected" in api.reasons()
    assert (d.metrics.registry.get_sample_value("mcd_config_drift") or 0) > 0
    motd.write_text("hello")
    for _ in range(40):
        d.run(max_iterations=1)
        if ann(api)[STATE] == "Done":
            break
    assert ann(api)[STATE] == "Done" and ann(api)[REASON] == ""


def wait_for(check: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_drift_is_noticed_through_inotify_while_the_loop_sleeps(root: Path) -> None:
    """Poll, full check and store wait all an hour or a minute away: only inotify can tell."""
    lay_down(root, A)
    api = cluster(A, B_RELOAD, current="rendered-worker-a", desired="rendered-worker-a")
    d = daemon(api, root, timeouts=SLEEPY)
    loop = threading.Thread(target=d.run, daemon=True)
    loop.start()
    try:
        # Done is reported just before the monitor starts: wait for the monitor
        assert wait_for(lambda: "ConfigDriftMonitorStarted" in api.reasons())
        (root / "etc/motd").write_text("hand edit")
        assert wait_for(lambda: ann(api).get(STATE) == "Degraded"), ann(api)
        assert ann(api)[REASON].endswith('content mismatch for file "/etc/motd"')
        (root / "etc/motd").write_text("hello")
        assert wait_for(lambda: ann(api).get(STATE) == "Done"), ann(api)
        # the daemon's own writes (an update in watched directories) are no drift
        drifts = api.reasons().count("ConfigDriftDetected")
        api.set_annotations(NODE, {DES: "rendered-worker-b"})
        assert wait_for(lambda: ann(api).get(CUR) == "rendered-worker-b"
                        and ann(api).get(STATE) == "Done"), ann(api)
        assert wait_for(lambda: d.drift is not None and d.drift.name == "rendered-worker-b")
        assert api.reasons().count("ConfigDriftDetected") == drifts
    finally:
        d.stop_requested.set()
        api.set_annotations(NODE, {})  # wakes the loop
        loop.join(5)
    assert not loop.is_alive()
    # the store watch ends with its current long poll: one more change ends it now
    api.set_annotations(NODE, {})
    assert wait_for(lambda: not [t for t in threading.enumerate() if t.name == "mcd-store-watch"])


def test_boot_validation_failure_heals_when_file_fixed(root: Path) -> None:
    lay_down(root, A)
    (root / "etc/motd").write_text("wrong")
    api = cluster(A, current="rendered-worker-a", desired="rendered-worker-a")
    d = daemon(api, root)
    d.run(max_iterations=1)
    assert ann(api)[REASON].endswith('content mismatch for file "/etc/motd"')
    assert "OnDiskStateValidationFailed" in api.reasons()
    (root / "etc/motd").write_text("hello")
    for _ in range(40):
        d.run(max_iterations=1)
        if ann(api)[STATE] == "Done":
            break
    assert ann(api)[STATE] == "Done"


def test_drain_timeout_text(root: Path) -> None:
    lay_down(root, A)
    api = cluster(A, B_REBOOT, current="rendered-worker-a", desired="rendered-worker-b")
    api.auto_drain = False
    d = Daemon(api, NODE, FakeSystemd(), root=root,
               timeouts=Timeouts(drain=0.2, uncordon=5, watch=0.05, backoff_min=0.01))
    d.run(max_iterations=1)
    assert ann(api)[REASON] == ("failed to drain node: node-1 after 0.2 seconds. Please see "
                                "machine-config-controller logs for more information")
    assert d.metrics.registry.get_sample_value("mcd_drain_err") == 1
    assert (root / "etc/containers/policy.json").exists() and not (root / "etc/kubernetes").exists()
    # later syncs wait for the controller instead of retrying
    d.sync()
    assert ann(api)[STATE] == "Degraded"


def test_drain_timeout_names_what_blocks_it(root: Path) -> None:
    """The controller's drainReason (pods and budgets that refuse eviction) follows MCO's text."""
    lay_down(root, A)
    api = cluster(A, B_REBOOT, current="rendered-worker-a", desired="rendered-worker-b")
    api.auto_drain = False
    blocked = ("drain did not complete within 1m30s: pod default/web-0 blocked by "
               "PodDisruptionBudget default/web")
    api.patch_node_annotations(NODE, {C.DRAIN_REASON_ANNOTATION: blocked})
    d = Daemon(api, NODE, FakeSystemd(), root=root,
               timeouts=Timeouts(drain=0.2, uncordon=5, watch=0.05, backoff_min=0.01))
    d.run(max_iterations=1)
    assert ann(api)[REASON] == ("failed to drain node: node-1 after 0.2 seconds. Please see "
                                f"machine-config-controller logs for more information: {blocked}")


def test_durations_read_like_mco() -> None:
    assert duration_text(3600) == "1 hour"
    assert duration_text(600) == "10 minutes"


def test_sigterm_ignored_during_update(root: Path) -> None:
    d = daemon(cluster(A), root)
    d.phase = Phase.UPDATING
    d._on_sigterm(signal.SIGTERM, None)
    assert not d.stop_requested.is_set()
    d.phase = Phase.FOLLOWING
    d._on_sigterm(signal.SIGTERM, None)
    assert d.stop_requested.is_set()


def test_sigterm_during_update_stops_after_it(root: Path) -> None:
    lay_down(root, A)
    api = cluster(A, B_RELOAD, current="rendered-worker-a", desired="rendered-worker-b")
    systemd = FakeSystemd()
    d = daemon(api, root, systemd)
    real_reload = systemd.reload_unit

    def reload_with_sigterm(name: str) -> None:
        d._on_sigterm(signal.SIGTERM, None)  # arrives mid-update
        real_reload(name)

    systemd.reload_unit = reload_with_sigterm  # type: ignore[method-assign]
    d.run(max_iterations=5)
    assert ann(api)[STATE] == "Done" and ann(api)[CUR] == "rendered-worker-b"
    assert "GotSigtermDuringUpdate" in api.reasons() and d.stop_requested.is_set()


def test_rejected_token_ends_the_loop(root: Path) -> None:
    from machineconfig.store.base import ForbiddenError

    api = cluster(A, current="rendered-worker-a", desired="rendered-worker-a")

    def refuse(name: str) -> Any:
        raise ForbiddenError("node API: HTTP 401: unknown token")

    api.get_node = refuse  # type: ignore[method-assign]
    d = daemon(api, root)
    d.run(max_iterations=3)
    assert d.token_rejected


def test_a_refused_long_poll_ends_the_loop(root: Path) -> None:
    """The store watch thread's error reaches the loop: a rejected token ends it too."""
    from machineconfig.store.base import ForbiddenError

    lay_down(root, A)
    api = cluster(A, current="rendered-worker-a", desired="rendered-worker-a")

    def refuse(since: int, timeout: float) -> int:
        raise ForbiddenError("node API: HTTP 401: unknown token")

    api.wait_for_change = refuse  # type: ignore[method-assign]
    d = daemon(api, root, timeouts=SLEEPY)
    d.run(max_iterations=5)
    assert d.token_rejected and ann(api)[STATE] == "Done"
    assert wait_for(lambda: not [t for t in threading.enumerate() if t.name == "mcd-store-watch"])
