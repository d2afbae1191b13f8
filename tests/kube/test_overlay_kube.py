"""Per-node overlays on the kube store (the real control plane) and the local store: the same
controller, the same simulated daemons, the same inputs; one node gets its own rendered config,
the others keep the pool's, an overlay change moves that node only, and both stores end in the
same state (pool status, node annotations, rendered configs, events). The overlay MachineConfig
is applied with strict field validation, as kubectl would."""
from __future__ import annotations

from typing import Any

from machineconfig import constants as C
from tests.kube.controlplane import ControlPlane
from tests.kube.test_rollout_kube import Cluster, kube, local  # noqa: F401 - fixtures
from tests.support.clusterkit import machine_config
from tests.support.poolyaml import pool_yaml
from tests.unit.controller.test_overlay import overlay_yaml

NODES = ("n1", "n2", "n3")


def snapshot(cluster: Cluster) -> dict[str, Any]:
    base = cluster.snapshot()
    base["node-config"] = {n.name: n.annotations.get(C.NODE_CONFIG_ANNOTATION)
                           for n in cluster.store.list_nodes()}
    base["overlays"] = {name: cluster.store.get_rendered(name).annotations.get(
                               C.OVERLAYS_ANNOTATION)
                        for name in cluster.store.list_rendered()}
    return base


def scenario(cluster: Cluster) -> list[dict[str, Any]]:
    cluster.put_input("pool.yaml", pool_yaml("worker", role="worker", node_role="worker",
                                             max_unavailable=1))
    cluster.put_input("00-worker.yaml", machine_config("00-worker", "/etc/motd", "hello\n"))
    cluster.settle()
    first = cluster.pool()["spec"]["configuration"]["name"]
    for name in NODES:
        cluster.join(name, first)
    cluster.settle()
    phases = []
    cluster.put_input("50-n2.yaml", overlay_yaml("50-n2-hostname", "/etc/hostname", "n2\n",
                                                 node="n2"))
    assert cluster.settle() == 1
    phases.append(snapshot(cluster))
    cluster.put_input("50-n2.yaml", overlay_yaml("50-n2-hostname", "/etc/hostname", "node2\n",
                                                 node="n2"))
    assert cluster.settle() == 1
    phases.append(snapshot(cluster))
    return phases


def test_overlay_is_the_same_on_the_local_and_the_kube_store(
        local: Cluster, kube: Cluster, control_plane: ControlPlane) -> None:  # noqa: F811
    on_local = scenario(local)
    on_kube = scenario(kube)
    added, changed = on_kube
    pool_config = added["configuration"]["name"]
    own = added["node-config"]["n2"]
    assert own and own.startswith("rendered-worker-") and own != pool_config
    assert added["node-config"] == {"n1": None, "n2": own, "n3": None}
    current = {n: a[C.CURRENT_CONFIG_ANNOTATION] for n, (a, _, _) in added["nodes"].items()}
    assert current == {"n1": pool_config, "n2": own, "n3": pool_config}
    assert added["overlays"] == {pool_config: None, own: "50-n2-hostname"}
    assert added["status"]["updatedMachineCount"] == 3
    # an overlay change: n2 only, the pool's config unchanged; the old own config collected
    own2 = changed["node-config"]["n2"]
    assert own2 not in (own, pool_config) and changed["configuration"]["name"] == pool_config
    assert sorted(changed["rendered"]) == sorted([pool_config, own2])
    assert on_local == on_kube
    assert local.events() == kube.events()
