"""Fixtures: `fakeapi` (a running FakeAPIServer), `kubeconfig` (a file naming it), `crds`
(manifests/crds/*.yaml created in the fake) and `kube_store` (a KubeStore over all that)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kube.fakeapi import FakeAPIServer


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
