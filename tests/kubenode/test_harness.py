"""The harness itself: two workers joined from the served config, Ready, a real pod on each."""
from __future__ import annotations

from tests.kubenode.harness import KubeCluster, KubeNode


def test_nodes_ready_from_served_config(kube_cluster: KubeCluster,
                                        kube_nodes: list[KubeNode]) -> None:
    for node in kube_nodes:
        assert kube_cluster.node_ready(node.name)
        units = node.run(["systemctl", "is-active", "crio", "kubelet",
                          "machine-config-daemon"], check=False).stdout.split()
        assert units == ["active"] * 3, (node.name, units)
        # the kubelet config on disk is the served one (the values file's failCgroupV1)
        assert "failCgroupV1: false" in (node.root / "etc/kubernetes/kubelet.conf").read_text()
