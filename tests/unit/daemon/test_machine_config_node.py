"""MachineConfigNode: the phase logic (machineconfig.machine_config_node.transition and
check_status), the daemon's reports through a reboot and a rebootless update (mcd.daemon with
mcd.node_progress, the real update engine on a tmp root), the controller creating, updating and
deleting the objects on the local store, the embedded node API (a node reads and writes only
its own), and `mcc get machineconfignodes`.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from machineconfig import constants as C
from machineconfig import machine_config_node as mcn
from machineconfig.machine_config_node import Condition
from machineconfig.store.base import MachineConfigNodes, NotFoundError
from mcd.state import Phase
from mcd.daemon import Daemon
from tests.support.fakenodeapi import FakeNodeAPI
from tests.unit.daemon.test_mcd_daemon import A, B_REBOOT, B_RELOAD, FAST, NODE, lay_down
from tests.unit.daemon.test_mcd_update import FakeSystemd, root  # noqa: F401 - root is a fixture

NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:01:00Z"


def obj(status: Mapping[str, Any] | None = None, desired: str = "rendered-worker-b",
        generation: int = 2) -> dict[str, Any]:
    o = mcn.new_object(NODE, "worker", desired, "uid-1")
    o["metadata"]["generation"] = generation
    if status is not None:
        o["status"] = dict(status)
    return o


def by_type(status: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


# ---- the phase logic -----------------------------------------------------------------------

def test_new_object_is_mcos_shape() -> None:
    o = mcn.new_object("n1", "worker", "", "u")
    assert o == {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfigNode",
                 "metadata": {"name": "n1", "ownerReferences": [
                     {"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "u"}]},
                 "spec": {"node": {"name": "n1"}, "pool": {"name": "worker"},
                          "configVersion": {"desired": "not-yet-set"}}}
    assert "ownerReferences" not in mcn.new_object("n1", "worker", "x")["metadata"]


def test_first_report_fills_every_condition() -> None:
    status = mcn.transition(obj(), Condition(mcn.UPDATE_PREPARED, "True", "UpdatePrepared", "ok"),
                            None, desired_config="rendered-worker-b",
                            current_config="rendered-worker-a", now=NOW)
    assert status is not None
    conditions = by_type(status)
    assert list(conditions) == [mcn.UPDATE_PREPARED] + [t for t in mcn.ALL_CONDITIONS
                                                        if t != mcn.UPDATE_PREPARED]
    assert conditions[mcn.UPDATE_PREPARED]["status"] == "True"
    assert conditions[mcn.DRAINED] == {
        "type": "Drained", "status": "False", "reason": "NotYetOccurred",
        "message": "This node has not yet entered the Drained phase", "lastTransitionTime": NOW}
    assert status["configVersion"] == {"desired": "rendered-worker-b", "current": "rendered-worker-a"}
    assert status["observedGeneration"] == 2
    mcn.check_status(status)


def test_desired_is_not_yet_set_until_the_update_is_compatible() -> None:
    status = mcn.transition(obj(), Condition(mcn.UPDATE_PREPARED, "Unknown", "UpdatePrepared",
                                             "not compatible"), None,
                            desired_config="rendered-worker-b", current_config="", now=NOW)
    assert status is not None and status["configVersion"] == {"desired": "not-yet-set"}


def test_an_unchanged_parent_writes_nothing_and_a_child_replaces_its_type() -> None:
    parent = Condition(mcn.UPDATE_EXECUTED, "Unknown", "Drained", "draining")
    child = Condition(mcn.DRAINED, "Unknown", "UpdateExecutedDrained", "wait")
    first = mcn.transition(obj(), parent, child, desired_config="b", current_config="a", now=NOW)
    assert first is not None
    assert mcn.transition(obj(first), parent, child, desired_config="b", current_config="a",
                          now=LATER) is None
    done = Condition(mcn.DRAINED, "True", "UpdateExecutedDrained", "drained")
    second = mcn.transition(obj(first), Condition(mcn.UPDATE_EXECUTED, "Unknown", "Drained",
                                                  "drained node"), done,
                            desired_config="b", current_config="a", now=LATER)
    assert second is not None
    assert by_type(second)[mcn.DRAINED]["status"] == "True"
    assert by_type(second)[mcn.DRAINED]["lastTransitionTime"] == LATER
    assert len(second["conditions"]) == len(mcn.ALL_CONDITIONS)


def test_updated_ends_an_update_and_the_next_update_clears_it() -> None:
    status = mcn.transition(obj(), Condition(mcn.UPDATE_PREPARED, "True", "UpdatePrepared", "ok"),
                            None, desired_config="rendered-worker-b", current_config="a", now=NOW)
    status = mcn.transition(obj(status), Condition(mcn.REBOOTED_NODE, "True", "RebootedNode",
                                                   "Node has rebooted"), None,
                            desired_config="rendered-worker-b", current_config="a", now=NOW)
    assert status is not None
    status = mcn.transition(obj(status), Condition(mcn.UPDATED, "True", "Updated", "in b"), None,
                            desired_config="rendered-worker-b",
                            current_config="rendered-worker-b", now=LATER)
    assert status is not None
    conditions = by_type(status)
    assert [t for t, c in conditions.items() if c["status"] != "False"] == [mcn.UPDATED]
    assert conditions[mcn.REBOOTED_NODE]["message"] == \
        "Action during update to rendered-worker-b: Node has rebooted"
    assert conditions[mcn.DRAINED]["reason"] == "NotYetOccurred"  # False ones are left alone
    # a degraded report leaves Updated alone; the next update's first phase clears it
    degraded = mcn.transition(obj(status), Condition(mcn.NODE_DEGRADED, "True", "NodeDegraded",
                                                     "drift"), None,
                              desired_config="rendered-worker-b", current_config="x", now=LATER)
    assert degraded is not None and by_type(degraded)[mcn.UPDATED]["status"] == "True"
    nxt = mcn.transition(obj(status, desired="rendered-worker-c", generation=3),
                         Condition(mcn.UPDATE_PREPARED, "True", "UpdatePrepared", "ok"), None,
                         desired_config="rendered-worker-c", current_config="rendered-worker-b",
                         now=LATER)
    assert nxt is not None
    assert by_type(nxt)[mcn.UPDATED]["status"] == "False"
    assert by_type(nxt)[mcn.UPDATED]["message"] == "This node is updating to rendered-worker-c"
    assert nxt["observedGeneration"] == 3


@pytest.mark.parametrize("status, field", [
    ([], "status must be an object"),
    ({"spec": {}}, "status.spec"),
    ({"conditions": [{"type": "Exploded", "status": "True", "reason": "R", "message": "",
                      "lastTransitionTime": NOW}]}, "status.conditions[0].type"),
    ({"conditions": [{"type": "Updated", "status": "Yes", "reason": "R", "message": "",
                      "lastTransitionTime": NOW}]}, "status.conditions[0].status"),
    ({"conditions": [{"type": "Updated", "status": "True", "reason": "not camel", "message": "",
                      "lastTransitionTime": NOW}]}, "status.conditions[0].reason"),
    ({"conditions": [{"type": "Updated", "status": "True", "reason": "R", "message": "x" * 40000,
                      "lastTransitionTime": NOW}]}, "status.conditions[0].message"),
    ({"configVersion": {"desired": "../etc"}}, "status.configVersion.desired"),
    ({"observedGeneration": 0}, "status.observedGeneration"),
])
def test_check_status_refuses_what_the_crd_refuses(status: Any, field: str) -> None:
    with pytest.raises(mcn.StatusError, match=field.replace("[", r"\[").replace("]", r"\]")):
        mcn.check_status(status)


# ---- the daemon's reports through an update ----------------------------------------------

class ReportingAPI(FakeNodeAPI):
    """The in-memory node API with the node's MachineConfigNode; every status written kept."""

    def __init__(self, node: str = NODE) -> None:
        super().__init__(node)
        self.mcn: dict[str, Any] | None = obj(desired="rendered-worker-b", generation=1)
        self.written: list[dict[str, Any]] = []

    def get_machine_config_node(self, name: str) -> dict[str, Any]:
        assert name == NODE
        if self.mcn is None:
            raise NotFoundError("no such MachineConfigNode")
        return copy.deepcopy(self.mcn)

    def set_machine_config_node_status(self, name: str, status: Mapping[str, Any]) -> None:
        assert name == NODE and self.mcn is not None
        mcn.check_status(status)
        self.mcn["status"] = copy.deepcopy(dict(status))
        self.written.append(copy.deepcopy(dict(status)))


def phases(written: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Each condition as it turned True or Unknown, in the order the writes did it (the resets
    to False that Updated brings are left out)."""
    seen: list[tuple[str, str]] = []
    before: dict[str, tuple[str, str]] = {}
    for status in written:
        for cond in status["conditions"]:
            now = (cond["status"], cond["message"])
            if before.get(cond["type"]) != now and cond["status"] != "False":
                seen.append((cond["type"], cond["status"]))
            before[cond["type"]] = now
    return seen


REBOOT_PHASES = [
    ("UpdatePrepared", "True"), ("UpdateExecuted", "Unknown"), ("Drained", "Unknown"),
    ("UpdateExecuted", "Unknown"), ("Cordoned", "True"), ("UpdateExecuted", "Unknown"),
    ("Drained", "True"), ("UpdateExecuted", "Unknown"), ("AppliedFilesAndOS", "Unknown"),
    ("UpdateExecuted", "True"), ("AppliedFilesAndOS", "True"), ("RebootedNode", "Unknown"),
    # the machine is back: a new daemon process
    ("RebootedNode", "True"), ("Resumed", "True"), ("UpdateComplete", "True"),
    ("Uncordoned", "True"), ("Updated", "True")]


REBOOTLESS_PHASES = [
    ("UpdatePrepared", "True"), ("UpdateExecuted", "Unknown"),  # Drained False: not required
    ("UpdateExecuted", "Unknown"), ("AppliedFilesAndOS", "Unknown"),
    ("UpdateExecuted", "True"), ("AppliedFilesAndOS", "True"),
    ("UpdatePostActionComplete", "True"), ("Resumed", "True"), ("UpdateComplete", "True"),
    ("Uncordoned", "True"), ("Updated", "True")]


def test_a_reboot_update_goes_through_mcos_phases(root: Path) -> None:
    lay_down(root, A)
    api = ReportingAPI()
    api.rendered.update({"rendered-worker-a": A, "rendered-worker-b": B_REBOOT})
    api.set_annotations(NODE, {C.CURRENT_CONFIG_ANNOTATION: "rendered-worker-a",
                               C.DESIRED_CONFIG_ANNOTATION: "rendered-worker-b",
                               C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: "Done"})
    systemd = FakeSystemd()
    d = Daemon(api, NODE, systemd, root=root, timeouts=FAST)
    d.phase = Phase.FOLLOWING
    d.sync()
    assert d.phase is Phase.REBOOTING
    assert api.mcn is not None
    during = by_type(api.mcn["status"])
    assert during[mcn.REBOOTED_NODE]["status"] == "Unknown"
    assert during[mcn.UPDATE_PREPARED]["message"] == \
        "Update Compatible. Post Cfg Actions: [reboot] Drain Required: true"
    assert api.mcn["status"]["configVersion"] == {"desired": "rendered-worker-b",
                                                  "current": "rendered-worker-a"}
    Daemon(api, NODE, systemd, root=root, timeouts=FAST).sync()  # after the reboot
    assert phases(api.written) == REBOOT_PHASES
    final = api.mcn["status"]
    assert final["configVersion"] == {"desired": "rendered-worker-b", "current": "rendered-worker-b"}
    assert [t for t, c in by_type(final).items() if c["status"] != "False"] == [mcn.UPDATED]
    assert by_type(final)[mcn.UNCORDONED]["message"] == \
        "Action during update to rendered-worker-b: UnCordoned node. The node is reporting " \
        "Unschedulable = false"
    # the daemon restarting at rest writes nothing more
    count = len(api.written)
    Daemon(api, NODE, systemd, root=root, timeouts=FAST).sync()
    assert len(api.written) == count


def test_a_rebootless_update_completes_its_post_action(root: Path) -> None:
    lay_down(root, A)
    api = ReportingAPI()
    api.rendered.update({"rendered-worker-a": A, "rendered-worker-b": B_RELOAD})
    api.set_annotations(NODE, {C.CURRENT_CONFIG_ANNOTATION: "rendered-worker-a",
                               C.DESIRED_CONFIG_ANNOTATION: "rendered-worker-b",
                               C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: "Done"})
    d = Daemon(api, NODE, FakeSystemd(), root=root, timeouts=FAST)
    d.phase = Phase.FOLLOWING
    d.sync()
    assert phases(api.written) == REBOOTLESS_PHASES
    drained = [by_type(s)[mcn.DRAINED] for s in api.written]
    assert drained[1]["message"] == "Node Drain Not required for this update."
    post = [by_type(s)[mcn.UPDATE_POST_ACTION_COMPLETE] for s in api.written
            if by_type(s)[mcn.UPDATE_POST_ACTION_COMPLETE]["status"] == "True"]
    assert post[0]["message"] == "Node has reloaded service crio.service"


def test_a_failed_update_is_node_degraded_and_unreconcilable_is_not_prepared(root: Path) -> None:
    lay_down(root, A)
    api = ReportingAPI()
    bad = copy.deepcopy(B_RELOAD)
    bad["spec"]["config"]["passwd"] = {"users": [{"name": "someone"}]}
    api.rendered.update({"rendered-worker-a": A, "rendered-worker-b": bad})
    api.set_annotations(NODE, {C.CURRENT_CONFIG_ANNOTATION: "rendered-worker-a",
                               C.DESIRED_CONFIG_ANNOTATION: "rendered-worker-b",
                               C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: "Done"})
    d = Daemon(api, NODE, FakeSystemd(), root=root, timeouts=FAST)
    d.phase = Phase.FOLLOWING
    d.run(max_iterations=1)
    assert api.mcn is not None
    conditions = by_type(api.mcn["status"])
    assert conditions[mcn.UPDATE_PREPARED]["status"] == "Unknown"
    assert conditions[mcn.UPDATE_PREPARED]["message"].startswith(
        "Update Failed compatibility validation. MachineConfigs rendered-worker-a and "
        "rendered-worker-b are not compatible. Err: can't reconcile config")
    assert conditions[mcn.NODE_DEGRADED]["status"] == "True"
    assert conditions[mcn.NODE_DEGRADED]["message"].startswith(f"Node {NODE} upgrade failure. ")
    # the incompatible update never became the status's desired config (MCO's NodeDegraded
    # report, which follows, names the node's desiredConfig again)
    (refused,) = [s for s in api.written
                  if by_type(s)[mcn.UPDATE_PREPARED]["status"] == "Unknown"
                  and by_type(s)[mcn.NODE_DEGRADED]["status"] != "True"]
    assert refused["configVersion"]["desired"] == "not-yet-set"


def test_no_object_yet_or_a_store_without_them_never_fails_the_update(root: Path) -> None:
    lay_down(root, A)
    for api in (ReportingAPI(), FakeNodeAPI(NODE)):
        if isinstance(api, ReportingAPI):
            api.mcn = None
        api.rendered.update({"rendered-worker-a": A, "rendered-worker-b": B_RELOAD})
        api.set_annotations(NODE, {C.CURRENT_CONFIG_ANNOTATION: "rendered-worker-a",
                                   C.DESIRED_CONFIG_ANNOTATION: "rendered-worker-b",
                                   C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: "Done"})
        d = Daemon(api, NODE, FakeSystemd(), root=root, timeouts=FAST)
        d.phase = Phase.FOLLOWING
        d.sync()
        assert api.get_node(NODE).annotations[C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION] == "Done"
        lay_down(root, A)
        (root / "etc/machine-config-daemon/currentconfig").unlink()


# ---- the controller (local store) and `mcc get` ---------------------------------------------

def test_controller_keeps_one_per_pool_member_and_mcc_get_shows_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mcc.cli import main as mcc_main
    from mcc.controller import Controller
    from tests.support.clusterkit import join, machine_config, make_store, write

    store, inputs = make_store(tmp_path)
    controller = Controller(store)
    store.revision()
    first = controller.run_pass()
    assert first.machine_config_nodes == []  # no nodes yet
    rendered = str(store.get_object("MachineConfigPool", "worker")["spec"]["configuration"]["name"])
    join(store, "w1", rendered)
    store.register_node("stray", {"somewhere": "else"})  # in no pool: no object
    store.put_machine_config_node(mcn.new_object("gone", "worker", rendered))  # node deleted
    report = controller.run_pass()
    assert sorted(report.machine_config_nodes) == ["created w1", "deleted gone"]
    got = store.get_machine_config_node("w1")
    assert got["spec"] == mcn.spec("w1", "worker", rendered)
    assert got["metadata"]["generation"] == 1 and "status" not in got
    assert controller.run_pass().machine_config_nodes == []  # nothing to do twice
    # the daemon reports; a new rendered config moves the spec, the status stays
    store.set_machine_config_node_status("w1", {"conditions": [], "observedGeneration": 1})
    write(inputs / "01-worker.yaml", machine_config("01-worker", "/etc/issue", "hi\n"))
    store.revision()
    report = controller.run_pass()
    new = store.get_node("w1").annotations[C.DESIRED_CONFIG_ANNOTATION]
    assert new != rendered and report.machine_config_nodes == ["updated w1"]
    got = store.get_machine_config_node("w1")
    assert got["spec"]["configVersion"]["desired"] == new
    assert got["metadata"]["generation"] == 2 and got["status"]["observedGeneration"] == 1

    store.set_machine_config_node_status("w1", mcn.transition(
        got, Condition(mcn.UPDATED, "True", "Updated", "done"), None, desired_config=new,
        current_config=new, now=NOW) or {})
    args = ["get", "machineconfignodes", "--store", f"local:{inputs}",
            "--state", str(tmp_path / "state")]
    assert mcc_main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "POOLNAME", "DESIREDCONFIG", "CURRENTCONFIG", "UPDATED"]
    assert lines[1].split() == ["w1", "worker", new, new, "True"]
    assert mcc_main([*args, "-o", "wide"]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header[5:] == [c for c, _ in mcn.WIDE_COLUMNS]
    assert mcc_main([*args[:2], "w1", *args[2:], "-o", "json"]) == 0
    import json
    assert json.loads(capsys.readouterr().out)["spec"]["node"] == {"name": "w1"}
    assert mcc_main([*args[:2], "nope", *args[2:]]) == 1
    assert "NotFound" in capsys.readouterr().err


# ---- the embedded node API: a node reads and writes its own only -----------------------------

def test_node_api_lets_a_node_write_only_its_own(tmp_path: Path) -> None:
    from aiohttp.test_utils import TestClient

    from machineconfig.store import Store
    from mcs.state import ServerState
    from tests.unit.server.test_mcs_node_api import API, auth, refused, register, run

    async def scenario(client: TestClient, state: ServerState, store: Store, sdir: Path) -> None:
        _, token = await register(client, sdir, "worker-0")
        await register(client, sdir, "worker-1")
        assert isinstance(store, MachineConfigNodes)
        path = f"{API}/nodes/worker-0/machineconfignode"
        await refused(await client.get(path, headers=auth(token)), 404)  # not created yet
        for name in ("worker-0", "worker-1"):
            store.put_machine_config_node(mcn.new_object(name, "worker", "rendered-worker-x"))
        resp = await client.get(path, headers=auth(token))
        assert resp.status == 200 and (await resp.json())["spec"]["node"] == {"name": "worker-0"}
        status = mcn.transition(store.get_machine_config_node("worker-0"),
                                Condition(mcn.UPDATED, "True", "Updated", "done"), None,
                                desired_config="rendered-worker-x",
                                current_config="rendered-worker-x", now=NOW)
        resp = await client.put(path + "/status", headers=auth(token), json={"status": status})
        assert resp.status == 200, await resp.text()
        assert store.get_machine_config_node("worker-0")["status"] == status
        # another node's object: neither read nor written
        other = f"{API}/nodes/worker-1/machineconfignode"
        await refused(await client.get(other, headers=auth(token)), 403)
        text = await refused(await client.put(other + "/status", headers=auth(token),
                                              json={"status": status}), 403)
        assert "own record" in text
        assert "status" not in store.get_machine_config_node("worker-1")
        # not a status, or no token
        text = await refused(await client.put(path + "/status", headers=auth(token),
                                              json={"status": {"spec": {}}}), 400)
        assert "status.spec" in text
        await refused(await client.put(path + "/status", json={"status": status}), 401)

    run(tmp_path, scenario)


def test_remote_client_reaches_the_same_object(tmp_path: Path) -> None:
    """The daemon's client of the node API (RemoteNodeAPI) offers the daemon's half."""
    from machineconfig.store.base import NodeProgressReports
    from machineconfig.store.remote import RemoteNodeAPI

    assert isinstance(RemoteNodeAPI("https://127.0.0.1:1", "t"), NodeProgressReports)
