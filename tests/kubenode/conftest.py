"""Fixtures of the Kubernetes node tests (marker `kubenode`): one KubeCluster per module (real
control plane in a network namespace of its own, mcc and mcs on the kube store) and two worker
nodes running the real kubelet and CRI-O from the served config. As root a missing prerequisite
fails with one line; as another user the tests skip (like tests/node).
"""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kube.controlplane import ControlPlaneError, bin_dir
from tests.kubenode.harness import KubeCluster, KubeNode, reap_stale_cgroups
from tests.node.harness import reap_stale
from tests.node.rootfs import HarnessError, require_prerequisites

log = logging.getLogger(__name__)

RUNS_DIR = Path("/var/tmp/machine-config-tests")
WORKERS = ("kn-worker-1", "kn-worker-2")
HOST_TOOLS = ("kubectl", "gcc", "unshare", "ip")
NODE_BINARIES = ("kubelet", "crio", "pinns", "copyimg", "etcd", "kube-apiserver",
                 "kube-controller-manager", "kube-scheduler")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.kubenode)


def require_kubenode_prerequisites() -> None:
    require_prerequisites("kubenode")
    missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
    missing += [f"{bin_dir() / name}.xz" for name in NODE_BINARIES
                if not (bin_dir() / f"{name}.xz").is_file()]
    if not (bin_dir() / "pause.c").is_file():
        missing.append(str(bin_dir() / "pause.c"))
    if missing:
        pytest.fail(f"kubenode test prerequisites missing: {', '.join(missing)}", pytrace=False)


@pytest.fixture(scope="module")
def kube_cluster() -> Iterator[KubeCluster]:
    require_kubenode_prerequisites()
    reap_stale(RUNS_DIR)
    reap_stale_cgroups()
    cluster = KubeCluster(RUNS_DIR / f"kubenode-{os.getpid()}")
    problem = ""
    try:
        cluster.start()
    except (ControlPlaneError, HarnessError) as err:
        problem = str(err)
    if problem:
        pytest.fail(problem, pytrace=False)
    try:
        yield cluster
    finally:
        for name in ("mcc", "mcs"):
            log.info("%s log tail:\n%s", name, cluster.log_tail(name, 60))
        for node in cluster.nodes:
            log.info("node %s console tail:\n%s", node.name, node.console_tail(40))
        cluster.close()


@pytest.fixture(scope="module")
def kube_nodes(kube_cluster: KubeCluster) -> list[KubeNode]:
    """Two workers, joined: Ready, the daemon Done with its own credentials."""
    nodes = kube_cluster.add_nodes(WORKERS)
    kube_cluster.timings.update(
        {f"{name} ready": t for name, t in kube_cluster.wait_joined(WORKERS).items()})
    return nodes
