"""mcc.gc: delete rendered configs nothing refers to, never one in use."""
from __future__ import annotations

from pathlib import Path

from machineconfig.constants import CURRENT_CONFIG_ANNOTATION, DESIRED_CONFIG_ANNOTATION
from machineconfig.rendered_config import RenderedConfig
from machineconfig.store.base import NodeRecord
from mcc import gc
from tests.support.clusterkit import make_store


def rendered(name: str) -> RenderedConfig:
    return RenderedConfig({"apiVersion": "machineconfiguration.openshift.io/v1",
                           "kind": "MachineConfig", "metadata": {"name": name}, "spec": {}})


def test_unreferenced_is_pure() -> None:
    pools = [{"spec": {"configuration": {"name": "r-spec"}},
              "status": {"configuration": {"name": "r-status"}}}]
    nodes = [NodeRecord("n", annotations={CURRENT_CONFIG_ANNOTATION: "r-cur",
                                          DESIRED_CONFIG_ANNOTATION: "r-des"})]
    names = ["r-spec", "r-status", "r-cur", "r-des", "r-old", "r-older"]
    assert gc.unreferenced(names, pools, nodes) == ["r-old", "r-older"]


def test_collect_on_the_store(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    for name in ("rendered-worker-a", "rendered-worker-b", "rendered-worker-c"):
        store.put_rendered(rendered(name))
    store.set_pool_configuration("worker", "rendered-worker-a", [])
    store.register_node("n1", {})
    store.patch_node_annotations("n1", {CURRENT_CONFIG_ANNOTATION: "rendered-worker-b"})
    assert gc.collect(store) == ["rendered-worker-c"]
    assert store.list_rendered() == ["rendered-worker-a", "rendered-worker-b"]
    assert gc.collect(store) == []
