"""Fixtures of the kube tests.

On the real control plane (tests/kube/controlplane.py; one per session):
- `control_plane` (session): the running ControlPlane (etcd, kube-apiserver,
  kube-controller-manager on loopback); a missing binary fails every test using it with one line.
- `kube_crds` (session): manifests/crds/*.yaml created there and Established; their names.
- `kube_namespace`: a fresh namespace for this test (its pods are force-deleted afterwards).
- `clean_cluster`: the ControlPlane with the CRDs, emptied of what a previous test left in
  cluster scope: every object of the machineconfiguration.openshift.io kinds, every Node, the
  Events of the store's event namespace, the Secrets of openshift-config.

- `kubeconfig`: the admin kubeconfig; `crds`: `kube_crds` on a `clean_cluster`;
  `kube_store`: a controller's KubeStore on a `clean_cluster` (closed afterwards).
- autouse `no_stray_watches`: a test that leaves a store watch running fails.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kube.controlplane import ControlPlane, ControlPlaneError

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "manifests" / "crds"
MC_GROUP_PATH = "/apis/machineconfiguration.openshift.io/v1"
MC_PLURALS = ("machineconfigs", "machineconfigpools", "controllerconfigs", "kubeletconfigs",
              "containerruntimeconfigs", "machineconfignodes")


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    problem = ""
    try:
        cp = ControlPlane.start()
    except ControlPlaneError as e:
        problem = str(e)
    if problem:
        pytest.fail(problem, pytrace=False)
    try:
        yield cp
    finally:
        cp.stop()


def apply_crds(cp: ControlPlane) -> list[str]:
    """Create every CRD under manifests/crds (as `kubectl create` would) and wait until each
    is Established and its kinds are served."""
    import yaml

    names = []
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            code, answer = cp.call("POST", "/apis/apiextensions.k8s.io/v1/"
                                   "customresourcedefinitions", doc)
            if code not in (201, 409):
                pytest.fail(f"{path.name}: CRD refused: {code} {answer.get('message')}",
                            pytrace=False)
            names.append(doc["metadata"]["name"])

    def established(name: str) -> bool:
        code, crd = cp.call("GET", f"/apis/apiextensions.k8s.io/v1/"
                            f"customresourcedefinitions/{name}")
        return code == 200 and any(c.get("type") == "Established" and c.get("status") == "True"
                                   for c in crd.get("status", {}).get("conditions", []))

    for name in names:
        cp.wait_for(f"CRD {name} Established", lambda n=name: established(n))
    for plural in MC_PLURALS:
        cp.wait_for(f"{plural} served",
                    lambda p=plural: cp.call("GET", f"{MC_GROUP_PATH}/{p}")[0] == 200)
    return names


@pytest.fixture(scope="session")
def kube_crds(control_plane: ControlPlane) -> list[str]:
    return apply_crds(control_plane)


@pytest.fixture
def kube_namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    name = control_plane.create_namespace(request.node.name.replace("_", "-")[:30])
    try:
        yield name
    finally:
        # nothing runs pods here: without a kubelet a pod bound to a node would stay
        # Terminating, so delete them at once, then the namespace
        control_plane.call("DELETE", f"/api/v1/namespaces/{name}/pods?gracePeriodSeconds=0")
        control_plane.delete_namespace(name)


def empty_cluster_scope(cp: ControlPlane) -> None:
    """Delete what tests create in cluster scope (and the store's shared namespaces), and every
    pod a failed test may have left bound to a node (a drain would find it)."""
    _, pods = cp.call("GET", "/api/v1/pods")
    for pod in pods.get("items", []):
        meta = pod["metadata"]
        cp.call("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
                "?gracePeriodSeconds=0")
    for plural in MC_PLURALS:
        cp.call("DELETE", f"{MC_GROUP_PATH}/{plural}")
    cp.call("DELETE", "/api/v1/nodes")
    cp.call("DELETE", "/api/v1/namespaces/default/events")
    cp.call("DELETE", "/api/v1/namespaces/openshift-config/secrets")


@pytest.fixture
def clean_cluster(control_plane: ControlPlane, kube_crds: list[str]) -> ControlPlane:
    empty_cluster_scope(control_plane)
    return control_plane


@pytest.fixture
def kubeconfig(control_plane: ControlPlane) -> Path:
    """The admin kubeconfig of the real control plane."""
    return control_plane.kubeconfig


@pytest.fixture
def crds(clean_cluster: ControlPlane, kube_crds: list[str]) -> list[str]:
    return kube_crds


@pytest.fixture
def kube_store(clean_cluster: ControlPlane) -> Iterator[Any]:
    """A controller's KubeStore on the real control plane (CRDs installed, cluster scope
    emptied)."""
    from machineconfig.store import open_store

    store = open_store(f"kube:{clean_cluster.kubeconfig}")
    try:
        yield store
    finally:
        store.close()  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def no_stray_watches() -> Iterator[None]:
    """Every test stops the store watches it starts (a watch left running retries against a
    server that is gone, into later tests)."""
    yield
    deadline = time.monotonic() + 5
    while True:
        stray = sorted(t.name for t in threading.enumerate()
                       if t.name.startswith("kube-watch-") and t.is_alive())
        if not stray or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not stray, f"store watches still running after the test: {stray}"
