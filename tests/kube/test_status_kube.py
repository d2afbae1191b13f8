"""`mcc status --store kube:KUBECONFIG` against the real control plane: the same model as on the
local store, from real Nodes, a real MachineConfigPool and core/v1 Events."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from machineconfig import constants as C
from machineconfig.store.kube import KubeStore
from mcc import cli
from tests.kube.controlplane import ControlPlane
from tests.kube.kit import apply
from tests.kube.test_store_kube import pool


def test_mcc_status_on_the_kube_store(kube_store: KubeStore, control_plane: ControlPlane,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    apply(control_plane, pool())
    kube_store.set_pool_configuration("worker", "rendered-worker-2", [])
    kube_store.update_status("MachineConfigPool", "worker",
                             {"configuration": {"name": "rendered-worker-1"}})
    for name, current, desired, state in (("w1", "rendered-worker-2", "rendered-worker-2", "Done"),
                                          ("w2", "rendered-worker-1", "rendered-worker-2", "Working"),
                                          ("w3", "rendered-worker-1", "rendered-worker-1",
                                           "Degraded")):
        kube_store.register_node(name, {"node-role.kubernetes.io/worker": ""})
        kube_store.patch_node_annotations(name, {
            C.CURRENT_CONFIG_ANNOTATION: current, C.DESIRED_CONFIG_ANNOTATION: desired,
            C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: state,
            C.MACHINE_CONFIG_DAEMON_REASON_ANNOTATION: "drifted" if state == "Degraded" else ""})
    kube_store.record_event("Node", "w3", "ConfigDriftDetected", "/etc/motd drifted", "Warning")

    kubeconfig: Path = control_plane.kubeconfig
    assert cli.main(["status", "--store", f"kube:{kubeconfig}", "-o", "json"]) == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    [worker] = doc["pools"]
    assert {k: worker[k] for k in ("machines", "updated", "updating", "degraded", "ready",
                                   "currentConfig", "targetConfig")} == {
        "machines": 3, "updated": 1, "updating": 1, "degraded": 1, "ready": 1,
        "currentConfig": "rendered-worker-1", "targetConfig": "rendered-worker-2"}
    assert [(n["name"], n["phase"]) for n in doc["nodes"]] == [
        ("w1", "Updated"), ("w2", "Updating"), ("w3", "Degraded")]
    assert [(a["node"], a["active"]) for a in doc["drift"]] == [("w3", True)]
    assert doc["events"][0]["reason"] == "ConfigDriftDetected"

    assert cli.main(["status", "--store", "kube", "--kubeconfig", str(kubeconfig)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:8] == ["worker", "3", "1", "1", "1", "1", "rendered-worker-1",
                                    "rendered-worker-2"]
