"""MachineConfigNodes on the real control plane: the controller creates one per pool member
(owned by its Node, so the garbage collector of the real kube-controller-manager removes it with
the Node), the real daemon (mcd.daemon on a tmp root, an in-memory systemd) writes its status
through a reboot rollout's phases, UpdatePrepared to Updated, every write checked by the CRD's
schema, and `mcc get machineconfignodes --store kube` prints what kubectl prints. (That a node's
credentials cannot write another node's object: test_manifests_cluster.py, with the admission
policy installed.)"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from machineconfig.rendered_config import RenderedConfig
from machineconfig import constants as C
from machineconfig import machine_config_node as mcn
from machineconfig.store import open_store
from mcc.controller import Controller
from mcd.daemon import Daemon
from tests.kube.controlplane import ControlPlane
from tests.kube.kit import GROUP_PATH, call, eventually, machine_config_node_history
from tests.kube.manifests_kit import kubectl
from tests.kube.test_daemon_kube import NODE, TIMEOUTS
from tests.unit.test_machine_config_node import REBOOT_PHASES, by_type, phases
from tests.unit.test_mcd_daemon import A, B_REBOOT, lay_down
from tests.unit.test_mcd_update import FakeSystemd, root  # noqa: F401 - root is a fixture
from tests.unit.poolyaml import pool_yaml

MCN_PATH = f"{GROUP_PATH}/machineconfignodes"


@pytest.fixture
def cluster(clean_cluster: ControlPlane, kubeconfig: Path) -> Iterator[Any]:
    """The worker pool, both rendered configs, node-1 Done in A and targeted at B, and the
    controller's loop running in a thread."""
    import yaml

    store = open_store(f"kube:{kubeconfig}")
    pool = yaml.safe_load(pool_yaml("worker", role="worker", node_role="worker",
                                    max_unavailable=1))
    code, answer = call(clean_cluster, "POST", f"{GROUP_PATH}/machineconfigpools", pool)
    assert code == 201, answer
    for config in (A, B_REBOOT):
        store.put_rendered(RenderedConfig(config))
    store.register_node(NODE, {"node-role.kubernetes.io/worker": ""})
    store.patch_node_annotations(NODE, {C.CURRENT_CONFIG_ANNOTATION: A["metadata"]["name"],
                                        C.DESIRED_CONFIG_ANNOTATION: B_REBOOT["metadata"]["name"],
                                        C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: "Done"})
    stop = threading.Event()
    # no render: the pool selects no MachineConfig here, the rendered configs are given
    controller = Controller(store)
    controller.run_pass = _nodes_only(controller)  # type: ignore[method-assign]
    thread = threading.Thread(target=controller.run, args=(stop, 1.0), daemon=True)
    thread.start()
    try:
        yield store
    finally:
        stop.set()
        thread.join(30)
        store.close()  # type: ignore[attr-defined]


def _nodes_only(controller: Controller) -> Any:
    from mcc.controller import PassReport

    def run_pass() -> PassReport:
        report = PassReport()
        controller._nodes(report)
        controller._drain(report)
        return report

    return run_pass


def get_mcn(cp: ControlPlane, name: str) -> tuple[int, dict[str, Any]]:
    return call(cp, "GET", f"{MCN_PATH}/{name}")


def test_controller_creates_it_owned_by_the_node_and_it_goes_with_the_node(
        cluster: Any, control_plane: ControlPlane) -> None:
    cp = control_plane
    eventually(lambda: get_mcn(cp, NODE)[0] == 200)
    _, obj = get_mcn(cp, NODE)
    _, node = call(cp, "GET", f"/api/v1/nodes/{NODE}")
    assert obj["spec"] == {"node": {"name": NODE}, "pool": {"name": "worker"},
                           "configVersion": {"desired": "rendered-worker-b"}}
    assert obj["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": node["metadata"]["uid"]}]
    # the CRD refuses what OpenShift's refuses
    code, answer = call(cp, "POST", MCN_PATH, {**mcn.new_object("n9", "worker", "x"),
                                               "spec": mcn.spec("n8", "worker", "x")})
    assert code == 422 and "spec.node.name must equal metadata.name" in answer["message"], answer
    code, answer = call(cp, "PATCH", f"{MCN_PATH}/{NODE}/status",
                        {"status": {"conditions": [{"type": "Updated", "status": "Maybe",
                                                    "reason": "X", "message": "",
                                                    "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                                    "configVersion": {"desired": "x"}}},
                        "application/merge-patch+json")
    assert code == 422, answer
    # the Node goes: so does its MachineConfigNode
    assert call(cp, "DELETE", f"/api/v1/nodes/{NODE}")[0] == 200
    eventually(lambda: get_mcn(cp, NODE)[0] == 404, timeout=30)


def test_a_reboot_rollout_goes_through_every_phase(cluster: Any, control_plane: ControlPlane,
                                                   kubeconfig: Path, root: Path) -> None:
    cp = control_plane
    eventually(lambda: get_mcn(cp, NODE)[0] == 200)
    _, created = get_mcn(cp, NODE)
    lay_down(root, A)
    systemd = FakeSystemd()
    api = open_store(f"kube:{kubeconfig}", node=NODE)
    try:
        daemon = Daemon(api, NODE, systemd, root=root, timeouts=TIMEOUTS)
        daemon.booting = False
        daemon.sync()
        assert daemon.reboot_queued
        _, during = get_mcn(cp, NODE)
        assert by_type(during["status"])["RebootedNode"]["status"] == "Unknown"
        assert during["status"]["configVersion"] == {"desired": "rendered-worker-b",
                                                     "current": "rendered-worker-a"}
        Daemon(api, NODE, systemd, root=root, timeouts=TIMEOUTS).sync()  # after the reboot
    finally:
        api.close()  # type: ignore[attr-defined]
    history = machine_config_node_history(cp, NODE, created["metadata"]["resourceVersion"])
    statuses = [o["status"] for o in history if o.get("status")]
    assert phases(statuses) == REBOOT_PHASES
    _, final = get_mcn(cp, NODE)
    assert final["status"]["configVersion"] == {"desired": "rendered-worker-b",
                                                "current": "rendered-worker-b"}
    assert [t for t, c in by_type(final["status"]).items() if c["status"] != "False"] == ["Updated"]
    assert final["status"]["observedGeneration"] == final["metadata"]["generation"]
    # what kubectl shows, and the same from mcc on the same store
    out = kubectl(cp, "get", "machineconfignodes").stdout.splitlines()
    assert out[0].split() == ["NAME", "POOLNAME", "DESIREDCONFIG", "CURRENTCONFIG", "UPDATED", "AGE"]
    assert out[1].split()[:5] == [NODE, "worker", "rendered-worker-b", "rendered-worker-b", "True"]
    import subprocess
    import sys
    mine = subprocess.run([sys.executable, "-m", "mcc.cli", "get", "machineconfignodes",
                           "--store", "kube", "--kubeconfig", str(kubeconfig)],
                          capture_output=True, text=True, timeout=60)
    assert mine.returncode == 0, mine.stderr
    assert [line.split() for line in mine.stdout.splitlines()] == \
        [line.split()[:5] for line in out]
