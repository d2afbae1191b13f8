"""The cluster's node disruption policies (operator.openshift.io/v1 MachineConfiguration
`cluster`) on the real local store: the controller merges spec.nodeDisruptionPolicy with MCO's
defaults as MCO's MergeClusterPolicies does (defaults in their order, a user entry for the same
path in place, other user entries after) and publishes them in
status.nodeDisruptionPolicyStatus.clusterPolicies in the API's shape; `mcc plan` prices changes
with them; a broken policy keeps the last good one and says why."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from machineconfig.store import Store
from mcc.cli import main
from mcc.controller import Controller
from tests.support.clusterkit import daemon_step, join, machine_config, make_store, write

POLICY = {
    "apiVersion": "operator.openshift.io/v1", "kind": "MachineConfiguration",
    "metadata": {"name": "cluster"},
    "spec": {"nodeDisruptionPolicy": {
        "files": [
            {"path": "/etc/chrony.conf",
             "actions": [{"type": "Restart", "restart": {"serviceName": "chronyd.service"}}]},
            {"path": "/var/lib/kubelet/config.json", "actions": [{"type": "Reboot"}]},
        ],
        "units": [{"name": "example.service",
                   "actions": [{"type": "DaemonReload"},
                               {"type": "Reload", "reload": {"serviceName": "example.service"}}]}],
        "sshkey": {"actions": [{"type": "Drain"}]},
    }},
}


def published(store: Store) -> dict[str, object]:
    obj = store.get_object("MachineConfiguration", "cluster")
    return dict(obj["status"]["nodeDisruptionPolicyStatus"]["clusterPolicies"])


def test_published_policies_merge_the_users_into_mcos(tmp_path: Path) -> None:
    store, inputs = make_store(tmp_path)
    write(inputs / "machineconfiguration.yaml", yaml.safe_dump(POLICY))
    store.revision()
    Controller(store).run_pass()
    policies = published(store)
    files = [(f["path"], f["actions"]) for f in policies["files"]]  # type: ignore[union-attr]
    paths = [p for p, _ in files]
    # MCO's defaults first, in their order; the user's pull-secret entry replaced in place
    assert paths[0] == "/var/lib/kubelet/config.json"
    assert files[0][1] == [{"type": "Reboot"}]
    assert ("/etc/containers/policy.json",
            [{"type": "Reload", "reload": {"serviceName": "crio.service"}}]) in files
    assert ("/etc/containers/registries.conf", [{"type": "Special"}]) in files
    # a new user path comes after every default
    assert paths[-1] == "/etc/chrony.conf"
    assert files[-1][1] == [{"type": "Restart", "restart": {"serviceName": "chronyd.service"}}]
    units = {u["name"]: u["actions"] for u in policies["units"]}  # type: ignore[union-attr]
    assert units["example.service"] == [
        {"type": "DaemonReload"}, {"type": "Reload", "reload": {"serviceName": "example.service"}}]
    assert "iri-registry.service" in units  # MCO's default unit policy stays
    assert policies["sshkey"] == {"actions": [{"type": "Drain"}]}


def test_a_broken_policy_keeps_the_last_good_one(tmp_path: Path) -> None:
    store, inputs = make_store(tmp_path)
    write(inputs / "machineconfiguration.yaml", yaml.safe_dump(POLICY))
    store.revision()
    controller = Controller(store)
    controller.run_pass()
    before = published(store)
    broken = yaml.safe_load(yaml.safe_dump(POLICY))
    broken["spec"]["nodeDisruptionPolicy"]["files"][0]["actions"] = [{"type": "Restart"}]
    write(inputs / "machineconfiguration.yaml", yaml.safe_dump(broken))
    store.revision()
    controller.run_pass()
    assert published(store) == before
    events = [(e.reason, e.message) for e in store.list_events("MachineConfiguration", "cluster")]
    assert ("InvalidNodeDisruptionPolicy",
            "spec.nodeDisruptionPolicy.files[/etc/chrony.conf].actions[0].restart.serviceName: "
            "required; the last good node disruption policies stay in force") in events
    # the controller keeps deciding with the good one
    assert "/etc/chrony.conf" in controller.policy.files


def test_mcc_plan_prices_changes_with_the_clusters_policy(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, inputs = make_store(tmp_path)
    write(inputs / "machineconfiguration.yaml", yaml.safe_dump(POLICY))
    controller = Controller(store)
    store.revision()
    controller.run_pass()
    current = str(store.get_object("MachineConfigPool", "worker")["spec"]["configuration"]["name"])
    join(store, "n1", current)
    controller.run_pass()
    daemon_step(store)
    write(inputs / "50-chrony.yaml", machine_config("50-chrony", "/etc/chrony.conf", "pool x\n"))
    store.revision()
    assert main(["plan", "--store", f"local:{inputs}", "--state", str(tmp_path / "state")]) == 0
    out = capsys.readouterr().out
    assert "  n1: restart chronyd.service (" in out, out  # MCO's defaults alone: a reboot


@pytest.mark.parametrize("text", [
    "apiVersion: operator.openshift.io/v1\nkind: MachineConfiguration\nmetadata: {name: cluster}\n"
    "spec: {nodeDisruptionPolicy: {files: [{path: /x, actions: nope}]}}\nstatus: 7\n",
    "apiVersion: operator.openshift.io/v1\nkind: MachineConfiguration\nmetadata: {name: cluster}\n"
    "spec: {nodeDisruptionPolicy: [1, 2]}\n",
    "apiVersion: operator.openshift.io/v1\nkind: MachineConfiguration\nmetadata: {name: cluster}\n"
    "spec: {}\nstatus: [not, a, mapping]\n",
])
def test_hostile_machine_configurations_never_stop_the_pass(tmp_path: Path, text: str) -> None:
    store, inputs = make_store(tmp_path)
    write(inputs / "machineconfiguration.yaml", text)
    store.revision()
    report = Controller(store).run_pass()
    assert report.errors == []
    # the rest of the pass ran: the pool rendered and got a status
    pool = store.get_object("MachineConfigPool", "worker")
    assert pool["spec"]["configuration"]["name"].startswith("rendered-worker-")
    assert pool["status"]["conditions"]
