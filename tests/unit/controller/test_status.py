"""The status model (machineconfig.status) over the real local store caught mid-rollout, its
membership and phase rules on plain records, and `mcc status` (table and JSON)."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from machineconfig import status
from machineconfig.constants import (
    CURRENT_CONFIG_ANNOTATION as CUR, DESIRED_CONFIG_ANNOTATION as DES,
    MACHINE_CONFIG_DAEMON_REASON_ANNOTATION as REASON,
    MACHINE_CONFIG_DAEMON_STATE_ANNOTATION as STATE,
)
from machineconfig.store.base import NodeRecord, StoreEvent
from mcc import cli
from tests.support.statuskit import (DRIFT_MESSAGE, HOSTILE_NAME, HOSTILE_REASON, mid_rollout, settle,
                                 slots_of)

NOW = datetime(2026, 12, 7, 12, tzinfo=timezone.utc)


def pool(name: str, role: str, target: str = "", status_: dict[str, object] | None = None
         ) -> dict[str, object]:
    return {"kind": "MachineConfigPool", "metadata": {"name": name},
            "spec": {"nodeSelector": {"matchLabels": {f"node-role.kubernetes.io/{role}": ""}},
                     "configuration": {"name": target}},
            "status": status_ or {}}


def node(name: str, roles: tuple[str, ...], current: str, desired: str, state: str = "Done",
         reason: str = "") -> NodeRecord:
    return NodeRecord(name, labels={f"node-role.kubernetes.io/{r}": "" for r in roles},
                      annotations={CUR: current, DES: desired, STATE: state, REASON: reason})


def test_mid_rollout_counts_match_the_nodes_and_the_controller(tmp_path: Path) -> None:
    cluster = mid_rollout(tmp_path)
    model = status.read(cluster.store)
    [worker] = model.pools
    assert (worker.name, worker.machines, worker.updated, worker.updating, worker.degraded,
            worker.ready) == ("worker", 4, 0, 1, 2, 0)
    assert (worker.current_config, worker.target_config) == (cluster.first, cluster.second)
    assert "n3 is reporting" in worker.degraded_message
    # the controller's own counts for the pool agree
    recorded = cluster.store.get_object("MachineConfigPool", "worker")["status"]
    assert (recorded["machineCount"], recorded["updatedMachineCount"],
            recorded["degradedMachineCount"]) == (worker.machines, worker.updated,
                                                  worker.degraded)
    phases = {n.name: (n.phase, n.desired_config) for n in model.nodes}
    assert phases == {"n1": ("Updating", cluster.second), "n2": ("Waiting", cluster.first),
                      "n3": ("Degraded", cluster.first),
                      HOSTILE_NAME: ("Degraded", cluster.first)}
    reasons = {n.name: n.reason for n in model.nodes}
    assert reasons[HOSTILE_NAME] == HOSTILE_REASON  # kept as text: escaping is the page's job
    assert [(a.node, a.active, a.message) for a in model.drift] == [("n3", True, DRIFT_MESSAGE)]
    # newest first (the drift was recorded last), bounded
    assert (model.events[0].reason, model.events[0].name) == ("ConfigDriftDetected", "n3")
    assert len(status.read(cluster.store, recent=3).events) == 3


def test_the_rollout_completes_and_the_drift_alert_resolves(tmp_path: Path) -> None:
    cluster = mid_rollout(tmp_path)
    for name in ("n3", HOSTILE_NAME):  # the disk was fixed: the daemon reports Done again
        cluster.store.patch_node_annotations(name, {STATE: "Done", REASON: ""})
    settle(cluster.store, cluster.controller)
    model = status.read(cluster.store)
    [worker] = model.pools
    assert (worker.machines, worker.updated, worker.updating, worker.degraded, worker.ready) == \
        (4, 4, 0, 0, 4)
    assert worker.current_config == worker.target_config == cluster.second
    assert worker.progress == 1.0 and worker.degraded_message == ""
    assert {n.phase for n in model.nodes} == {"Updated"}
    assert [(a.node, a.active) for a in model.drift] == [("n3", False)]


def test_membership_as_the_controller_places_nodes() -> None:
    pools = [pool("master", "master", "m1"), pool("worker", "worker", "w1"),
             pool("infra", "infra", "i1"), pool("gpu", "gpu", "g1")]
    nodes = [node("cp", ("master", "worker"), "m1", "m1"),
             node("infra-0", ("infra", "worker"), "w1", "i1", state="Working"),
             node("both", ("infra", "gpu", "worker"), "w1", "w1"),
             node("stray", ("edge",), "", "", state=""),
             NodeRecord("win", labels={"node-role.kubernetes.io/worker": "",
                                       "kubernetes.io/os": "windows"})]
    model = status.build(pools, nodes, [], NOW)
    placed = {n.name: (n.pool, n.phase, n.reason) for n in model.nodes}
    assert placed["cp"] == ("master", "Updated", "")
    assert placed["infra-0"] == ("infra", "Updating", "")
    assert placed["both"] == ("", "Waiting", "selected by several custom pools: gpu, infra")
    assert placed["stray"][:1] == ("",) and placed["stray"][2] == "selected by no pool"
    assert placed["win"][0] == "" and placed["win"][2].startswith("a Windows node")
    counts = {p.name: (p.machines, p.updated, p.updating) for p in model.pools}
    assert counts == {"gpu": (0, 0, 0), "infra": (1, 0, 1), "master": (1, 1, 0),
                      "worker": (0, 0, 0)}
    assert [p.progress for p in model.pools if p.name == "gpu"] == [1.0]


def test_window_and_pause_come_from_the_pool() -> None:
    message = "maintenance window closed; next opens 2026-12-12T21:00:00Z; waiting: a"
    p = pool("worker", "worker", "w2", {"configuration": {"name": "w1"}, "conditions": [
        {"type": "MaintenanceWindow", "status": "False", "reason": "Closed", "message": message}]})
    p["spec"]["paused"] = True  # type: ignore[index]
    model = status.build([p], [node("a", ("worker",), "w1", "w1")], [], NOW)
    [view] = model.pools
    assert (view.window, view.paused, view.current_config, view.target_config) == \
        (message, True, "w1", "w2")
    text = status.format_text(model)
    assert "w2 (paused)" in text and message in text


def test_the_table_keeps_one_line_per_row_whatever_a_node_writes() -> None:
    hostile = node("n\x1b[2J1", ("worker",), "w1", "w1", state="Degraded",
                   reason="line one\nline two\r\x07" + "x" * 500)
    drift = StoreEvent(1, "2026-12-07T11:00:00Z", "Node", "n\x1b[2J1", "ConfigDriftDetected",
                       "moved\nfile", "Warning")
    text = status.format_text(status.build([pool("worker", "worker", "w1")], [hostile], [drift],
                                           NOW))
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    lines = text.splitlines()
    assert lines[0].split() == ["POOL", "MACHINES", "UPDATED", "UPDATING", "DEGRADED", "READY",
                                "CURRENT", "TARGET", "WINDOW"]
    assert lines[1].split()[:6] == ["worker", "1", "0", "0", "1", "0"]
    [row] = [line for line in lines if line.startswith("n [2J1")]
    assert "line one line two" in row and row.endswith("~")
    assert any("active  moved file" in line for line in lines)


def test_events_are_bounded_and_newest_first() -> None:
    events = [StoreEvent(i, f"2026-12-07T11:{i:02d}:00Z", "Node", "a", "R", f"m{i}")
              for i in range(1, 40)]
    model = status.build([], [], list(reversed(events)), NOW, recent=5)
    assert [e.message for e in model.events] == ["m39", "m38", "m37", "m36", "m35"]
    assert status.build([], [], events, NOW, recent=0).events == []
    long = StoreEvent(1, "t", "Node", "a", "R", "y" * 10_000)
    assert len(status.build([], [], [long], NOW).events[0].message) <= status.MAX_TEXT + 3


def test_mcc_status_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = mid_rollout(tmp_path)
    args = ["status", "--store", f"local:{cluster.inputs}", "--state", str(tmp_path / "state")]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1].split()[:8] == ["worker", "4", "0", "1", "2", "0", cluster.first,
                                    cluster.second]
    assert any(line.split()[:4] == ["n1", "worker", "Updating", "Done"] for line in lines)
    assert "DRIFT" in lines and any("n3  active" in line for line in lines)

    assert cli.main([*args, "-o", "json", "--events", "2"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == status.read(cluster.store, recent=2).to_dict() | {
        "generated": doc["generated"]}
    assert doc["pools"][0]["progress"] == 0.0 and len(doc["events"]) == 2


def test_mcc_status_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    assert cli.main(["status", "--store", f"local:{tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mcc status: ") and "state directory" in err and err.count("\n") == 1
    assert cli.main(["status", "--store", f"kube:{tmp_path}/missing-kubeconfig"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mcc status: ") and "kubeconfig file not found" in err


def test_the_event_tail_reads_only_new_events_and_folds_repeats(tmp_path: Path) -> None:
    cluster = mid_rollout(tmp_path)
    store = cluster.store
    asked: list[int] = []
    list_events = store.list_events

    def counting(kind: str | None = None, name: str | None = None,
                 since_seq: int = 0) -> list[StoreEvent]:
        asked.append(since_seq)
        return list_events(kind, name, since_seq)

    store.list_events = counting  # type: ignore[method-assign]
    tail = status.EventTail(recent=5)
    first = status.read(store, tail=tail)
    assert asked == [0] and tail.seq == list_events()[-1].seq
    assert [(a.node, a.active) for a in first.drift] == [("n3", True)]
    seen = tail.seq
    # a repeat of the drift (as the kube store moves a counted event to the end) and a new one
    store.record_event("Node", "n3", "ConfigDriftDetected", DRIFT_MESSAGE, "Warning")
    store.record_event("Node", "n2", "ConfigDriftDetected", "another", "Warning")
    second = status.read(store, tail=tail)
    assert asked[1] == seen and tail.seq > seen
    assert [(e.name, e.reason) for e in second.events][:2] == [
        ("n2", "ConfigDriftDetected"), ("n3", "ConfigDriftDetected")]
    assert [e.message for e in second.events].count(DRIFT_MESSAGE) == 1
    assert len(second.events) == 5
    assert [(a.node, a.active) for a in second.drift] in (
        [("n2", False), ("n3", True)], [("n3", True), ("n2", False)])  # same second
    assert status.read(store, tail=tail).events == second.events  # nothing new: the same



def test_fleetlock_holders_show_group_holder_since_and_the_nodes_state() -> None:
    from machineconfig.store.base import RebootLock

    nodes = [node("n1", ("worker",), "r1", "r1"),
             node("n2", ("worker",), "r1", "r2", "Degraded", "drain timed out")]
    locks = [RebootLock("default", "n2", "2026-12-04T07:30:00Z"),
             RebootLock("infra", "zincati-7", "2026-12-07T11:58:20Z")]
    model = status.build([pool("worker", "worker", "r2")], nodes, [], NOW, reboot_locks=locks)
    assert [(r.group, r.holder, r.since, r.node_state) for r in model.reboot_slots] == [
        ("default", "n2", "2026-12-04T07:30:00Z", "Degraded"),
        ("infra", "zincati-7", "2026-12-07T11:58:20Z", "")]
    assert model.to_dict()["rebootSlots"][0] == {
        "group": "default", "holder": "n2", "since": "2026-12-04T07:30:00Z",
        "nodeState": "Degraded"}
    lines = status.format_text(model).splitlines()
    header = lines.index(next(line for line in lines if line.startswith("FLEETLOCK GROUP")))
    assert lines[header].split() == ["FLEETLOCK", "GROUP", "HOLDER", "SINCE", "HELD", "FOR",
                                     "NODE", "STATE"]
    assert lines[header + 1].split() == ["default", "n2", "2026-12-04T07:30:00Z", "3d", "4h",
                                         "Degraded"]
    assert lines[header + 2].split() == ["infra", "zincati-7", "2026-12-07T11:58:20Z", "1m",
                                         "40s", "-"]
    # nothing held: no section
    assert "FLEETLOCK" not in status.format_text(
        status.build([pool("worker", "worker", "r2")], nodes, [], NOW))


def test_held_for_in_its_two_largest_units() -> None:
    assert status.held_for("2026-12-07T12:00:00Z", NOW) == "0s"
    assert status.held_for("2026-12-07T11:59:15Z", "2026-12-07T12:00:00Z") == "45s"
    assert status.held_for("2026-11-30T09:59:00Z", NOW) == "7d 2h"
    assert status.held_for("2026-12-07T12:00:30Z", NOW) == "0s"  # a clock behind the store's
    assert status.held_for("yesterday", NOW) == "?"


def test_mcc_status_lists_the_slots_a_store_holds(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    cluster = mid_rollout(tmp_path)
    assert slots_of(cluster.store).acquire_reboot_lock("default", "n3", 5)[0] == "taken"
    args = ["status", "--store", f"local:{cluster.inputs}", "--state", str(tmp_path / "state")]
    assert cli.main(args) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    [slot] = [row for row in rows if row[:2] == ["default", "n3"]]
    assert slot[-1] == "Degraded"
    assert cli.main([*args, "-o", "json"]) == 0
    [held] = json.loads(capsys.readouterr().out)["rebootSlots"]
    assert (held["group"], held["holder"], held["nodeState"]) == ("default", "n3", "Degraded")
