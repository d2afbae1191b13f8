"""End to end: `mcc start` and `mcs start` on the host over one local store, three nspawn nodes
that boot with only a pointer config, join through `mcd firstboot`, and then follow the pool
through a rebootless change, a rolling reboot, a broken input, its revert and a hand edit.

The steps run in file order on one cluster (module-scoped fixtures); a failed step fails the
ones after it at once. Host state is read with testinfra over SSH, cluster state from the store.
"""
from __future__ import annotations

import base64
import gzip
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import (CURRENT, DESIRED, REASON, REPO_ROOT, STATE, condition,
                               wait_until)
from tests.e2e.conftest import E2E, JOIN_TIMEOUT, WORKERS
from tests.e2e.history import NodeHistory
from tests.e2e.nodes import FIRSTBOOT_UNIT_NAME
from tests.support.statuspage import PageDOM, artifacts_dir, chromium

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

REGISTRIES = "/etc/containers/registries.conf"
KUBELET_CONF = "/etc/kubernetes/kubelet.conf"
ROLLOUT_TIMEOUT = 240


# ---- helpers ----------------------------------------------------------------------------------

def write_input(e2e: E2E, name: str, obj: dict[str, Any]) -> None:
    """Atomically (the store must never see half a file)."""
    path = e2e.input_dir / name
    tmp = path.with_name(f".{name}.tmp")
    tmp.write_text(yaml.safe_dump(obj, sort_keys=False))
    os.replace(tmp, path)


def rendered_files(e2e: E2E, name: str) -> dict[str, bytes]:
    """Path → contents of every file in a rendered MachineConfig."""
    from machineconfig.ignition.dataurl import decode
    files = {}
    for entry in e2e.store.get_rendered(name).to_dict()["spec"]["config"]["storage"]["files"]:
        contents = entry.get("contents") or {}
        data = decode(contents["source"]) if contents.get("source") else b""
        if contents.get("compression") == "gzip":
            data = gzip.decompress(data)
        files[entry["path"]] = data
    return files


def append_search_registry(text: str, registry: str) -> str:
    """registries.conf with one more unqualified-search registry at the end of the list."""
    found = re.search(r"unqualified-search-registries\s*=\s*\[([^\]]*)\]", text)
    assert found is not None, text
    items = found.group(1).strip()
    listed = f'{items}, "{registry}"' if items else f'"{registry}"'
    return text[:found.start(1)] + listed + text[found.end(1):]


def pool_target(e2e: E2E) -> str:
    return str(e2e.pool()["spec"]["configuration"]["name"])


def wait_new_target(e2e: E2E, old: str) -> str:
    def changed() -> str | None:
        e2e.check_health()
        new = pool_target(e2e)
        return new if new != old else None
    return wait_until(changed, 60, f"the worker pool to leave {old}", e2e.describe)


def boot_ids(e2e: E2E) -> dict[str, str]:
    out = {}
    for node in e2e.nodes:
        node.wait_ready()
        host = node.testinfra()
        out[node.name] = host.file("/proc/sys/kernel/random/boot_id").content_string.strip()
    return out


def fixture_events(e2e: E2E, service: str) -> dict[str, list[str]]:
    """What the crio/kubelet TEST FIXTURE recorded on each node (start/reload/stop)."""
    out = {}
    for node in e2e.nodes:
        text = node.testinfra().file(f"/var/lib/test-fixtures/{service}.events").content_string
        out[node.name] = [line.split()[0] for line in text.splitlines()]
    return out


def check_rollout_history(history: NodeHistory, target: str) -> dict[str, tuple[float, float]]:
    """maxUnavailable 1: never two nodes away at once, and one node's update (targeted → Done)
    never overlaps another's."""
    assert not history.errors, history.errors
    assert len(history.snapshots) > 5, "too few snapshots to judge the rollout"
    worst, where = history.max_unavailable()
    assert worst <= 1, f"{worst} nodes unavailable at once: {where}"
    windows = history.update_windows(target)
    assert sorted(windows) == sorted(WORKERS), windows
    ordered = sorted(windows.values())
    for (_, done), (start, _) in zip(ordered, ordered[1:]):
        assert start >= done, f"updates overlap: {windows}"
    return windows


def targeted_events(e2e: E2E, target: str, since: int) -> list[str]:
    """The pool's SetDesiredConfig events for `target`, in the order they were recorded."""
    return [ev.message for ev in e2e.store.list_events("MachineConfigPool", "worker", since)
            if ev.reason == "SetDesiredConfig" and target in ev.message]


# What a daemon records while it updates, before it reports Done (ConfigDriftMonitorStarted
# comes after Done, so the controller may already have targeted the next node: not a marker).
UPDATE_STEPS = ("ConfigDriftMonitorStopped", "Cordon", "Drain", "Reboot")


def check_rollout_events(e2e: E2E, target: str, since: int) -> dict[str, list[str]]:
    """maxUnavailable 1 in the recorded events: each node's update, from the controller's
    SetDesiredConfig to the daemon's last update step (drift monitor stopped, cordon, drain,
    reboot), never overlaps another node's. Returns each node's event reasons."""
    events = e2e.store.list_events("Node", None, since)
    record = "\n".join(f"  {ev.seq} {ev.name} {ev.reason}: {ev.message}" for ev in events)
    spans: dict[str, list[int]] = {}
    reasons: dict[str, list[str]] = {name: [] for name in WORKERS}
    for ev in events:
        reasons.setdefault(ev.name, []).append(ev.reason)
        if ev.reason == "SetDesiredConfig" and ev.message.endswith(target):
            assert ev.name not in spans, f"{ev.name} targeted twice:\n{record}"
            spans[ev.name] = [ev.seq, ev.seq]
        elif ev.reason in UPDATE_STEPS and ev.name in spans:
            spans[ev.name][1] = ev.seq
    assert sorted(spans) == sorted(WORKERS), f"not every node was targeted:\n{record}"
    ordered = sorted(spans.values())
    for (_, end), (start, _) in zip(ordered, ordered[1:]):
        assert start > end, f"two nodes updating at once:\n{record}"
    return reasons


def check_status_page(e2e: E2E, target: str, profile: Path, screenshot: str) -> None:
    """mcs's status page in headless Chromium while the pool rolls out to `target`: its numbers
    lie between the store's just before and just after the load (a rollout only moves forward);
    the screenshot is kept as a CI artifact."""
    from machineconfig import status
    from mcs.tokens import AdminToken

    token = AdminToken(e2e.cluster.state_dir).ensure()
    before = {p.name: p for p in status.read(e2e.store).pools}
    dom = PageDOM()
    dom.feed(chromium(f"{e2e.cluster.url}/status#token={token}", profile,
                      artifacts_dir() / screenshot))
    after = {p.name: p for p in status.read(e2e.store).pools}
    assert dom.body_state == "loaded", "the page did not render /status.json"
    shown = dom.pools["worker"]
    assert shown["machines"] == str(len(WORKERS)) and shown["target"] == target, shown
    assert before["worker"].updated <= int(shown["updated"]) <= after["worker"].updated, shown
    assert int(shown["updating"]) <= 1 and shown["degraded"] == "0", shown
    assert dom.progress["worker"] == (shown["updated"], shown["machines"])
    assert set(WORKERS) <= set(dom.nodes), dom.nodes


def last_event_seq(e2e: E2E) -> int:
    events = e2e.store.list_events()
    return events[-1].seq if events else 0


# ---- the steps ----------------------------------------------------------------------------------

def test_nodes_join_from_a_pointer_config(e2e: E2E) -> None:
    start = time.monotonic()
    target = e2e.wait_pool_updated(JOIN_TIMEOUT)
    print(f"3 nodes joined and Done in {time.monotonic() - start:.0f}s on {target}")
    pool = e2e.pool()
    status = pool["status"]
    assert (status["machineCount"], status["updatedMachineCount"],
            status["readyMachineCount"], status["degradedMachineCount"]) == (3, 3, 3, 0)
    registries = rendered_files(e2e, target)[REGISTRIES]
    for node in e2e.nodes:
        # firstboot applied the served config and rebooted once into the daemon
        assert len(e2e.supervisor.reboots_of(node.name)) == 1, e2e.supervisor.reboots
        node.wait_ready()
        host = node.testinfra()
        creds = host.file("/etc/machine-config-daemon/node-credentials.json")
        assert creds.exists and creds.mode == 0o600
        assert host.service("machine-config-daemon.service").is_running
        assert host.service("crio.service").is_running
        # the pointer's first-boot unit does not run again once the node has joined
        result = host.run(f"systemctl show -P ConditionResult {FIRSTBOOT_UNIT_NAME}")
        assert result.stdout.strip() == "no"
        assert host.file(REGISTRIES).content == registries
        assert host.file("/var/lib/kubelet/config.json").mode == 0o600


def test_registries_change_reloads_crio_without_reboot(e2e: E2E) -> None:
    old = pool_target(e2e)
    before_boots, before_crio = boot_ids(e2e), fixture_events(e2e, "crio")
    reboots = len(e2e.supervisor.reboots)
    since = last_event_seq(e2e)
    current = rendered_files(e2e, old)[REGISTRIES].decode()
    # appending a search registry: crio takes it with a reload (no drain, no reboot)
    new_text = append_search_registry(current, "registry.e2e.example")
    from machineconfig.ignition.dataurl import encode_percent
    with NodeHistory(e2e.reopen) as history:
        write_input(e2e, "99-worker-e2e-registries.yaml", {
            "apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
            "metadata": {"name": "99-worker-e2e-registries",
                         "labels": {"machineconfiguration.openshift.io/role": "worker"}},
            "spec": {"config": {"ignition": {"version": "3.2.0"}, "storage": {"files": [{
                "path": REGISTRIES, "mode": 0o644, "overwrite": True,
                "contents": {"source": encode_percent(new_text.encode())}}]}}}})
        new = wait_new_target(e2e, old)
        e2e.wait_pool_updated(ROLLOUT_TIMEOUT, new)
    check_rollout_history(history, new)
    events = check_rollout_events(e2e, new, since)
    # a safe registries change: no cordon, no drain, no reboot (MCO's drain exemption)
    assert not any({"Cordon", "Drain", "Reboot"} & set(reasons) for reasons in events.values()), \
        events
    assert len(e2e.supervisor.reboots) == reboots, "a node rebooted"
    assert boot_ids(e2e) == before_boots
    after_crio = fixture_events(e2e, "crio")
    for node in e2e.nodes:
        assert after_crio[node.name][len(before_crio[node.name]):] == ["reload"], after_crio
        assert node.testinfra().file(REGISTRIES).content_string == new_text


def test_kubelet_change_rolls_out_with_reboots_one_node_at_a_time(e2e: E2E, tmp_path: Path
                                                                  ) -> None:
    old = pool_target(e2e)
    before_boots = boot_ids(e2e)
    since = last_event_seq(e2e)
    path = e2e.input_dir / "kubeletconfig.yaml"
    kubelet_config = yaml.safe_load(path.read_text())
    kubelet_config["spec"]["kubeletConfig"]["maxPods"] = 250
    with NodeHistory(e2e.reopen) as history:
        write_input(e2e, "kubeletconfig.yaml", kubelet_config)
        new = wait_new_target(e2e, old)
        # exactly a kubelet.conf change (the default policy reboots for it)
        old_files, new_files = rendered_files(e2e, old), rendered_files(e2e, new)
        assert [p for p in new_files if new_files[p] != old_files.get(p)] == [KUBELET_CONF]
        assert b'"maxPods": 250' in new_files[KUBELET_CONF]
        # the status page shows the rollout once a node is on its way
        wait_until(lambda: any(a.get(DESIRED) == new for a in e2e.annotations().values()) or None,
                   60, f"a node targeted to {new}", e2e.describe)
        check_status_page(e2e, new, tmp_path / "chromium", "status-page-e2e-rollout.png")
        e2e.wait_pool_updated(ROLLOUT_TIMEOUT, new)
        check_status_page(e2e, new, tmp_path / "chromium", "status-page-e2e-updated.png")
    windows = check_rollout_history(history, new)
    after_boots = boot_ids(e2e)
    for node in e2e.nodes:
        assert after_boots[node.name] != before_boots[node.name], f"{node.name} did not reboot"
        reboots = [r for r in e2e.supervisor.reboots_of(node.name) if r.exited >= history.snapshots[0][0]]
        assert len(reboots) == 1, reboots
        start, done = windows[node.name]
        assert start <= reboots[0].exited <= done, (node.name, reboots, windows)
        assert b'"maxPods": 250' in node.testinfra().file(KUBELET_CONF).content
    # the recorded events: one node in flight at a time, one reboot each, in rollout order
    events = check_rollout_events(e2e, new, since)
    assert all(reasons.count("Reboot") == 1 for reasons in events.values()), events
    messages = targeted_events(e2e, new, since)
    order = sorted(windows, key=lambda name: windows[name][0])
    assert messages == [f"Targeted node {name} to MachineConfig: {new}" for name in order], \
        messages


def test_broken_machineconfig_degrades_render_and_touches_no_node(e2e: E2E) -> None:
    target = pool_target(e2e)
    desired = {name: a.get(DESIRED) for name, a in e2e.annotations().items()}
    reboots = len(e2e.supervisor.reboots)
    with NodeHistory(e2e.reopen) as history:
        write_input(e2e, "99-worker-e2e-broken.yaml", {
            "apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
            "metadata": {"name": "99-worker-e2e-broken",
                         "labels": {"machineconfiguration.openshift.io/role": "worker"}},
            "spec": {"config": {"ignition": {"version": "3.2.0"}, "storage": {"files": [{
                "path": "etc/e2e-relative-path", "contents": {"source": "data:,broken"}}]}}}})

        def render_degraded() -> dict[str, Any] | None:
            e2e.check_health()
            cond = condition(e2e.pool(), "RenderDegraded")
            return cond if cond.get("status") == "True" else None
        cond = wait_until(render_degraded, 60, "RenderDegraded on the worker pool", e2e.describe)
        time.sleep(5)  # long enough for a controller that wrongly rolls out to show it
    assert "path not absolute" in cond.get("message", ""), cond
    assert condition(e2e.pool(), "Degraded").get("status") == "True"
    assert pool_target(e2e) == target, "the last good rendered config must stay in force"
    assert {name: a.get(DESIRED) for name, a in e2e.annotations().items()} == desired
    assert all(view.desired == desired[name] and view.done
               for _, nodes in history.snapshots for name, view in nodes.items()), \
        "a node was touched while the pool could not render"
    assert len(e2e.supervisor.reboots) == reboots


def test_revert_makes_the_pool_updated_again(e2e: E2E) -> None:
    target = pool_target(e2e)
    (e2e.input_dir / "99-worker-e2e-broken.yaml").unlink()

    def healthy() -> bool:
        e2e.check_health()
        pool = e2e.pool()
        return (condition(pool, "RenderDegraded").get("status") != "True"
                and condition(pool, "Degraded").get("status") != "True"
                and condition(pool, "Updated").get("status") == "True")
    wait_until(healthy, 60, "the worker pool to render again and be Updated", e2e.describe)
    assert e2e.wait_pool_updated(30) == target


def test_hand_edit_degrades_the_node_until_the_file_is_fixed(e2e: E2E) -> None:
    node = e2e.nodes[0]
    others = [n.name for n in e2e.nodes[1:]]
    reboots = len(e2e.supervisor.reboots)
    host = node.testinfra()
    original = host.file(REGISTRIES).content
    host.run_expect([0], f"echo '# hand edit' >> {REGISTRIES}")

    def degraded() -> str | None:
        e2e.check_health()
        a = e2e.annotations()[node.name]
        return a.get(REASON) if a.get(STATE) == "Degraded" else None
    reason = wait_until(degraded, 90, f"{node.name} Degraded after the hand edit", e2e.describe)
    assert REGISTRIES in reason, reason

    def pool_node_degraded() -> dict[str, Any] | None:
        # the controller counts it on its next pass over the changed annotations
        cond = condition(e2e.pool(), "NodeDegraded")
        count = e2e.pool()["status"].get("degradedMachineCount")
        return cond if cond.get("status") == "True" and count == 1 else None
    cond = wait_until(pool_node_degraded, 30, "the pool to count the Degraded node",
                      e2e.describe)
    assert node.name in cond.get("message", "") and REGISTRIES in cond["message"], cond
    assert all(e2e.annotations()[name].get(STATE) == "Done" for name in others)

    encoded = base64.b64encode(original).decode()
    host.run_expect([0], f"echo {encoded} | base64 -d > {REGISTRIES}")

    def done() -> bool:
        e2e.check_health()
        a = e2e.annotations()[node.name]
        return a.get(STATE) == "Done" and not a.get(REASON) and a.get(CURRENT) == a.get(DESIRED)
    wait_until(done, 120, f"{node.name} Done after the file was fixed", e2e.describe)
    e2e.wait_pool_updated(60)
    assert len(e2e.supervisor.reboots) == reboots, "fixing a drifted file needs no reboot"
    assert host.file(REGISTRIES).content == original


def test_host_checks_pass_on_every_node(e2e: E2E, tmp_path: Path) -> None:
    """The tests/hosts suite, unchanged (the Vagrant test runs it against its VMs), against the
    three nodes: given their ssh config and the pool's rendered config."""
    target = e2e.wait_pool_updated(ROLLOUT_TIMEOUT)
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("".join(node.ssh_config.read_text() for node in e2e.nodes))

    def host_suite(config_name: str) -> subprocess.CompletedProcess[str]:
        rendered = tmp_path / f"{config_name}.json"
        rendered.write_text(json.dumps(e2e.store.get_rendered(config_name).to_dict()))
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             str(REPO_ROOT / "tests/hosts"), "--hosts=" + ",".join(f"ssh://{n}" for n in WORKERS),
             f"--ssh-config={ssh_config}", f"--mc-config={rendered}"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)

    proc = host_suite(target)
    assert proc.returncode == 0, f"tests/hosts failed on the nodes:\n{proc.stdout[-6000:]}"
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary, summary
    # and it can fail: the master pool's config is not what these workers run
    master = str(e2e.pool("master")["spec"]["configuration"]["name"])
    proc = host_suite(master)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "test_current_config_is_the_pools" in proc.stdout, proc.stdout[-3000:]


def write_pool_annotation(e2e: E2E, pool: str, key: str, value: str | None) -> None:
    """Set (or, with None, remove) an annotation of a pool in the input's pools.yaml, atomically."""
    path = e2e.input_dir / "pools.yaml"
    docs = list(yaml.safe_load_all(path.read_text()))
    for doc in docs:
        if doc and doc.get("kind") == "MachineConfigPool" and doc["metadata"]["name"] == pool:
            annotations = doc["metadata"].setdefault("annotations", {})
            if value is None:
                annotations.pop(key, None)
            else:
                annotations[key] = value
    tmp = path.with_name(".pools.yaml.tmp")
    tmp.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    os.replace(tmp, path)


def reboot_slot_concurrency(e2e: E2E, target: str, since: int) -> tuple[int, str]:
    """From the store's events: the most reboot slots in use at once, counting FleetLock holders
    (RebootSlotTaken until RebootSlotReleased) and nodes updating to `target` (from the
    controller's SetDesiredConfig to the daemon's last update step), and the record."""
    events = e2e.store.list_events(None, None, since)
    record = "\n".join(f"  {ev.seq} {ev.kind}/{ev.name} {ev.reason}: {ev.message}"
                       for ev in events)
    ends: dict[str, int] = {}
    for ev in events:
        if ev.kind == "Node" and ev.reason in UPDATE_STEPS:
            ends[ev.name] = ev.seq
    holders: set[str] = set()
    updating: set[str] = set()
    worst = 0
    for ev in events:
        if ev.kind == "MachineConfigPool" and ev.reason == "RebootSlotTaken":
            holders.add(ev.message.split()[0])
        elif ev.kind == "MachineConfigPool" and ev.reason == "RebootSlotReleased":
            holders.discard(ev.message.split()[0])
        elif ev.kind == "Node" and ev.reason == "SetDesiredConfig" and ev.message.endswith(target):
            updating.add(ev.name)
        worst = max(worst, len(holders) + len(updating))
        if ev.kind == "Node" and ends.get(ev.name) == ev.seq:
            updating.discard(ev.name)
    return worst, record


def test_rollout_waits_for_its_window_and_shares_reboot_slots_with_fleetlock(e2e: E2E) -> None:
    """A rebooting change made before the pool's maintenance window opens waits for it; once
    open, it still waits while a FleetLock client (a Zincati host) holds the pool's only slot,
    and rolls out one node at a time after the client releases it. The store's events never
    show more slots in use than maxUnavailable (1)."""
    import datetime

    from tests.unit.server.test_fleetlock import FleetLockClient

    assert e2e.cluster.ca is not None
    old = pool_target(e2e)
    since = last_event_seq(e2e)
    base = f"{e2e.cluster.url}/fleetlock"
    host_a = FleetLockClient(base, e2e.cluster.ca, "zincati-host-a")
    host_b = FleetLockClient(base, e2e.cluster.ca, "zincati-host-b")
    assert host_a.lock() == (200, {})
    code, error = host_b.lock()  # the pool's only slot is taken
    assert code == 409 and error["kind"] == "failed_lock_semaphore_full", (code, error)
    # a window opening 20-80 s from now, every day, UTC
    now = datetime.datetime.now(datetime.timezone.utc)
    opening = (now + datetime.timedelta(seconds=80)).replace(second=0, microsecond=0)
    window = ("timeZone: UTC\nwindows:\n  - days: [Mon, Tue, Wed, Thu, Fri, Sat, Sun]\n"
              f"    start: \"{opening:%H:%M}\"\n    lengthMinutes: 30\n")
    write_pool_annotation(e2e, "worker", "machine-config.io/maintenance-window", window)
    with NodeHistory(e2e.reopen) as history:
        write_input(e2e, "99-worker-e2e-window.yaml", {
            "apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
            "metadata": {"name": "99-worker-e2e-window",
                         "labels": {"machineconfiguration.openshift.io/role": "worker"}},
            "spec": {"config": {"ignition": {"version": "3.4.0"}, "storage": {"files": [{
                "path": "/etc/mct/window", "mode": 0o644,
                "contents": {"source": "data:,after%20the%20window%0A"}}]}}}})
        new = wait_new_target(e2e, old)

        def waiting() -> str | None:
            cond = condition(e2e.pool(), "MaintenanceWindow")
            message = str(cond.get("message", ""))
            return message if cond.get("status") == "False" and "waiting:" in message else None
        message = wait_until(waiting, 60, "the MaintenanceWindow condition to name waiting nodes",
                             e2e.describe)
        assert f"next opens {opening:%Y-%m-%dT%H:%M:%SZ}" in message, message
        assert all(name in message for name in WORKERS), message

        def targeted() -> list[str]:
            return sorted(n for n, a in e2e.annotations().items() if a.get(DESIRED) == new)
        while datetime.datetime.now(datetime.timezone.utc) < opening:
            e2e.check_health()
            assert targeted() == [], f"targeted before the window opened at {opening}"
            time.sleep(1)
        # open now, but the slot is still Zincati's: nobody moves
        wait_until(lambda: condition(e2e.pool(), "MaintenanceWindow").get("status") == "True",
                   60, "the window to open", e2e.describe)
        time.sleep(5)
        assert targeted() == [], "a node was targeted while FleetLock held the only slot"
        assert host_a.unlock() == (200, {})
        e2e.wait_pool_updated(ROLLOUT_TIMEOUT, new)
    check_rollout_history(history, new)
    worst, record = reboot_slot_concurrency(e2e, new, since)
    assert worst <= 1, f"{worst} reboot slots in use at once:\n{record}"
    assert "RebootSlotTaken" in record and "RebootSlotReleased" in record, record
    first = min(datetime.datetime.fromisoformat(ev.time.replace("Z", "+00:00"))
                for ev in e2e.store.list_events("Node", None, since)
                if ev.reason == "SetDesiredConfig" and ev.message.endswith(new))
    assert first >= opening, (first, opening)
    for node in e2e.nodes:
        assert node.testinfra().file("/etc/mct/window").content_string == "after the window\n"
    # the next step (if any) starts without a window
    write_pool_annotation(e2e, "worker", "machine-config.io/maintenance-window", None)
LOCAL_DRAIN_RECORD = ("echo \"$MCD_HOOK_PHASE $(cat /proc/sys/kernel/random/boot_id) "
                      "$(systemctl is-active workload-web.service)\" >> /var/lib/local-drain.log")


def test_local_drain_stops_a_workload_before_each_reboot_and_starts_it_after(e2e: E2E) -> None:
    """The worker pool's machine-config.io/local-drain: on each node a running workload unit
    (not enabled: only the daemon brings it back) is stopped after the cordon and before the
    reboot, and started again before the node reports Done, one node at a time."""
    from machineconfig import localdrain
    for node in e2e.nodes:
        node.put("/etc/systemd/system/workload-web.service",
                 "[Unit]\nDescription=TEST FIXTURE: a workload\n[Service]\n"
                 "ExecStart=/bin/sleep infinity\n")
        node.ssh("systemctl daemon-reload && systemctl start workload-web.service")
    write_pool_annotation(e2e, "worker", localdrain.POOL_ANNOTATION, f"""
stopUnits: ["workload-*.service"]
hooks:
  - {{name: before, command: [/bin/sh, -c, '{LOCAL_DRAIN_RECORD}'], phase: beforeDrain}}
  - {{name: drained, command: [/bin/sh, -c, '{LOCAL_DRAIN_RECORD}'], phase: afterDrain}}
  - {{name: back, command: [/bin/sh, -c, '{LOCAL_DRAIN_RECORD}'], phase: afterReturn}}
""")

    def published() -> bool:
        e2e.check_health()
        return all(localdrain.NODE_ANNOTATION in a for a in e2e.annotations().values())
    wait_until(published, 60, "the local drain published on every node", e2e.describe)
    old = pool_target(e2e)
    before_boots = boot_ids(e2e)
    since = last_event_seq(e2e)
    path = e2e.input_dir / "kubeletconfig.yaml"
    kubelet_config = yaml.safe_load(path.read_text())
    kubelet_config["spec"]["kubeletConfig"]["maxPods"] = 260
    with NodeHistory(e2e.reopen) as history:
        write_input(e2e, "kubeletconfig.yaml", kubelet_config)
        new = wait_new_target(e2e, old)
        e2e.wait_pool_updated(ROLLOUT_TIMEOUT, new)
    check_rollout_history(history, new)
    check_rollout_events(e2e, new, since)
    after_boots = boot_ids(e2e)
    for node in e2e.nodes:
        old_boot, new_boot = before_boots[node.name], after_boots[node.name]
        assert old_boot != new_boot, f"{node.name} did not reboot"
        lines = node.ssh("cat /var/lib/local-drain.log").stdout.split("\n")
        assert [line for line in lines if line] == [
            f"beforeDrain {old_boot} active", f"afterDrain {old_boot} inactive",
            f"afterReturn {new_boot} active"], (node.name, lines)
        assert node.ssh("systemctl is-active workload-web.service",
                        check=False).stdout.strip() == "active"
    assert not [ev for ev in e2e.store.list_events("Node", None, since)
                if ev.reason == "DrainBlocked"]
    # the next step (if any) starts without a local drain
    write_pool_annotation(e2e, "worker", localdrain.POOL_ANNOTATION, None)
