"""A new node's self-reported currentConfig is adopted as its desiredConfig only when it is a
config of the pool the controller computes for the node (on the local store, the real loop)."""
from __future__ import annotations

import shutil
from pathlib import Path

from machineconfig.constants import (
    CURRENT_CONFIG_ANNOTATION as CUR, DESIRED_CONFIG_ANNOTATION as DES,
    MACHINE_CONFIG_DAEMON_STATE_ANNOTATION as STATE,
)
from machineconfig.store import open_store
from machineconfig.store.base import NodeRecord
from mcc.controller import Controller
from mcc.node_controller import belongs_to_pool, reconcile_pool

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "cluster"
WORKER = {"node-role.kubernetes.io/worker": ""}


def _store(tmp_path: Path):  # type: ignore[no-untyped-def]
    # the worker pool is paused: no rollout step corrects a wrong adoption afterwards
    inputs = tmp_path / "inputs"
    shutil.copytree(EXAMPLES, inputs)
    pools = inputs / "pools.yaml"
    text = pools.read_text()
    head, sep, tail = text.partition("  name: worker\n")
    assert sep and "\n  paused: false\n" in tail
    pools.write_text(head + sep + tail.replace("\n  paused: false\n", "\n  paused: true\n", 1))
    store = open_store(f"local:{inputs}", str(tmp_path / "state"))
    Controller(store).run_pass()
    configs = {str(p["metadata"]["name"]): str(p["spec"]["configuration"]["name"])
               for p in store.list_objects("MachineConfigPool")}
    return store, configs


def test_another_pools_config_is_not_adopted(tmp_path: Path) -> None:
    store, configs = _store(tmp_path)
    store.register_node("w1", WORKER)
    store.patch_node_annotations("w1", {CUR: configs["master"], STATE: "Done"})
    for _ in range(3):
        Controller(store).run_pass()
        assert store.get_node("w1").annotations.get(DES) == configs["worker"]


def test_garbage_current_config_is_not_adopted(tmp_path: Path) -> None:
    store, configs = _store(tmp_path)
    store.register_node("w1", WORKER)
    store.patch_node_annotations("w1", {CUR: "../../etc/shadow", STATE: "Done"})
    for _ in range(3):
        Controller(store).run_pass()
        assert store.get_node("w1").annotations.get(DES) == configs["worker"]


def test_own_pools_older_config_is_adopted(tmp_path: Path) -> None:
    store, configs = _store(tmp_path)
    older = "rendered-worker-0123456789abcdef0123456789abcdef"
    store.register_node("w1", WORKER)
    store.patch_node_annotations("w1", {CUR: older, STATE: "Done"})
    worker = store.get_object("MachineConfigPool", "worker")
    result = reconcile_pool({**worker, "spec": {**worker["spec"], "paused": True}},
                            [store.get_node("w1")])
    assert result.patches == {"w1": {DES: older}} and result.adopted == ["w1"]


def test_pool_name_prefix_of_another_pool_does_not_count() -> None:
    assert belongs_to_pool("rendered-worker-abc", "worker")
    assert not belongs_to_pool("rendered-worker-gpu-abc", "worker")
    assert belongs_to_pool("rendered-worker-gpu-abc", "worker-gpu")
    assert not belongs_to_pool("rendered-worker-", "worker")
    assert not belongs_to_pool("rendered-master-abc", "worker")


def test_paused_pool_still_refuses_a_foreign_config() -> None:
    pool = {"metadata": {"name": "worker"},
            "spec": {"nodeSelector": {"matchLabels": WORKER}, "paused": True,
                     "configuration": {"name": "rendered-worker-new"}}}
    joined = NodeRecord("n", WORKER, {CUR: "rendered-master-abc", STATE: "Done"})
    result = reconcile_pool(pool, [joined])
    assert result.patches == {"n": {DES: "rendered-worker-new"}}
    assert [reason for reason, _ in result.events] == ["ForeignConfig"]
