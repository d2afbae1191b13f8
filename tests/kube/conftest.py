"""Fixtures of the kube tests.

On the real control plane (tests/kube/controlplane.py; one per session):
- `control_plane` (session): the running ControlPlane (etcd, kube-apiserver,
  kube-controller-manager on loopback); a missing binary fails every test using it with one line.
- `kube_crds` (session): manifests/crds/*.yaml created there and Established; their names.
- `kube_namespace`: a fresh namespace for this test (its pods are force-deleted afterwards).
- `clean_cluster`: the ControlPlane with the CRDs, emptied of what a previous test left in
  cluster scope: every object of the machineconfiguration.openshift.io kinds, every Node, the
  Events of the store's event namespace, the Secrets of openshift-config.

On the fake (to be removed): `fakeapi`, `kubeconfig`, `crds`, `kube_store`.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kube.controlplane import ControlPlane, ControlPlaneError
from tests.kube.fakeapi import FakeAPIServer

MC_GROUP_PATH = "/apis/machineconfiguration.openshift.io/v1"
MC_PLURALS = ("machineconfigs", "machineconfigpools", "controllerconfigs", "kubeletconfigs",
              "containerruntimeconfigs")


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
    """Delete what tests create in cluster scope (and the store's shared namespaces)."""
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
def fakeapi() -> Iterator[FakeAPIServer]:
    server = FakeAPIServer(bookmark_interval=0.2).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kubeconfig(fakeapi: FakeAPIServer, tmp_path: Path) -> Path:
    return fakeapi.write_kubeconfig(tmp_path / "kubeconfig")


REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "manifests" / "crds"


def install_crds(server: FakeAPIServer) -> list[str]:
    """POST every CRD under manifests/crds to the fake, as `kubectl apply` would create them."""
    import yaml

    names = []
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            server.create("apiextensions.k8s.io", "v1", "customresourcedefinitions", doc)
            names.append(doc["metadata"]["name"])
    return names


@pytest.fixture
def crds(fakeapi: FakeAPIServer) -> list[str]:
    return install_crds(fakeapi)


@pytest.fixture
def kube_store(fakeapi: FakeAPIServer, kubeconfig: Path, crds: list[str]) -> Iterator[Any]:
    """A KubeStore over the fake, with the CRDs installed."""
    from machineconfig.store import open_store

    store = open_store(f"kube:{kubeconfig}")
    try:
        yield store
    finally:
        store.close()  # type: ignore[attr-defined]
