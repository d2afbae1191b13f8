"""Per-node overlays (mcc.overlay): selection, the per-node render with the pool's name rules,
the pool's render unchanged byte for byte, rollout to each node's own target, pool status, plan,
GC and the node API's read rule."""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from machineconfig.api import MachineConfig, MachineConfigPool
from machineconfig.constants import (
    CURRENT_CONFIG_ANNOTATION as CUR, DESIRED_CONFIG_ANNOTATION as DES,
    MACHINE_CONFIG_DAEMON_STATE_ANNOTATION as STATE, NODE_CONFIG_ANNOTATION as NODE_CONFIG,
    OVERLAY_NODE_LABEL, OVERLAYS_ANNOTATION, ROLE_LABEL,
)
from machineconfig.store import Store
from machineconfig.store.base import NodeRecord
from mcc import gc, overlay
from mcc.cli import main
from mcc.controller import Controller
from mcc.node_controller import reconcile_pool
from machineconfig.status import find_condition
from mcc.pool_status import calculate_status
from mcc.render import (
    generate_rendered_machine_config, hashed_name, merge_order, render_pool, spec_yaml,
)
from tests.support.clusterkit import daemon_step, join, machine_config, make_store, write
from tests.unit.render.test_render_vectors import CASES, build_inputs

WORKER_POOL = MachineConfigPool.model_validate({
    "kind": "MachineConfigPool", "metadata": {"name": "worker"},
    "spec": {"machineConfigSelector": {"matchLabels": {ROLE_LABEL: "worker"}}}})


def overlay_yaml(name: str, path: str, content: str, node: str | None = None,
                 selector: str | None = None, role: str | None = None) -> str:
    data = base64.b64encode(content.encode()).decode()
    meta = f"metadata:\n  name: {name}\n"
    node_labels = []
    if node is not None:
        node_labels.append(f"    {OVERLAY_NODE_LABEL}: {node}\n")
    if role is not None:
        node_labels.append(f"    {ROLE_LABEL}: {role}\n")
    if node_labels:
        meta += "  labels:\n" + "".join(node_labels)
    if selector is not None:
        meta += f"  annotations:\n    machine-config.io/node-selector: '{selector}'\n"
    return f"""\
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
{meta}spec:
  config:
    ignition:
      version: 3.2.0
    storage:
      files:
      - path: {path}
        mode: 420
        contents:
          source: data:text/plain;charset=utf-8;base64,{data}
"""


def mc(name: str, labels: dict[str, str] | None = None,
       annotations: dict[str, str] | None = None, files: dict[str, str] | None = None
       ) -> MachineConfig:
    entries = [{"path": p, "contents": {"source": "data:," + c}} for p, c in
               (files or {}).items()]
    return MachineConfig.model_validate({
        "kind": "MachineConfig",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"config": {"ignition": {"version": "3.2.0"}, "storage": {"files": entries}}}})


# --- selection ----------------------------------------------------------------------------

def test_selection_by_name_labels_and_role() -> None:
    n1 = NodeRecord("n1", labels={"disk": "nvme"})
    n2 = NodeRecord("n2", labels={"disk": "sata"})
    by_name = mc("50-n1", {OVERLAY_NODE_LABEL: "n1"})
    by_labels = mc("50-nvme", annotations={
        "machine-config.io/node-selector": '{"matchLabels": {"disk": "nvme"}}'})
    both = mc("50-both", {OVERLAY_NODE_LABEL: "n2"},
              {"machine-config.io/node-selector": "matchLabels: {disk: nvme}"})
    master_only = mc("50-master", {OVERLAY_NODE_LABEL: "n1", ROLE_LABEL: "master"})
    worker_role = mc("50-worker-n1", {OVERLAY_NODE_LABEL: "n1", ROLE_LABEL: "worker"})
    plain = mc("00-worker", {ROLE_LABEL: "worker"})
    assert [overlay.is_overlay(m) for m in (by_name, by_labels, both, plain)] == \
        [True, True, True, False]
    every = [by_name, by_labels, both, master_only, worker_role]
    assert [m.name for m in overlay.overlays_for(n1, WORKER_POOL, every)] == \
        ["50-n1", "50-nvme", "50-worker-n1"]
    assert overlay.overlays_for(n2, WORKER_POOL, every) == []  # "both": n2 is not nvme
    index = overlay.OverlayIndex(every)
    for n in (n1, n2, NodeRecord("n3", labels={"disk": "nvme"})):
        assert index.overlays_for(n, WORKER_POOL) == overlay.overlays_for(n, WORKER_POOL, every)


@pytest.mark.parametrize(("text", "message"), [
    ("[", "not YAML"),
    ("[disk]", "must be a label selector"),
    ("{}", "selects every node"),
    ('{"matchExpressions": [{"key": "disk", "operator": "In"}]}', "values set can't be empty"),
    ('{"matchLabels": {"disk": 1}}', "matchLabels.disk"),
])
def test_bad_selector_is_named(text: str, message: str) -> None:
    bad = mc("50-bad", annotations={"machine-config.io/node-selector": text})
    errors = overlay.check([bad])
    assert len(errors) == 1 and message in str(errors[0]) and "50-bad" in str(errors[0])


# --- rendering ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_pool_render_ignores_overlays_byte_for_byte(path: Path) -> None:
    """Every render vector: with overlays among the inputs (even ones carrying the pool's role
    label), the pool's rendered config is MCO's expected one, name and bytes."""
    case = json.loads(path.read_text(encoding="utf-8"))
    expected = case["expected"]
    if not expected["ok"]:
        return
    pool, configs, cconfig = build_inputs(case)
    role = next(iter((configs[0].labels or {}).values()), "worker") if configs else "worker"
    extra = [mc("00-aaa-overlay", {OVERLAY_NODE_LABEL: "n1", ROLE_LABEL: role},
                files={"/etc/hostname": "n1"}),
             mc("zz-overlay", annotations={"machine-config.io/node-selector":
                                           "matchLabels: {a: b}"}, files={"/etc/x": "y"})]
    rendered = render_pool(pool, configs + extra, cconfig)
    assert rendered.spec_yaml == expected["specYAML"]
    assert rendered.name == expected["renderedName"]
    assert rendered.annotations == expected["annotations"]
    assert rendered.sources == sorted(m.name for m in configs
                                      if m.name in rendered.sources)


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_node_render_has_the_pool_rules(path: Path) -> None:
    """A node's config is the pool's merge with the overlay last, named with the same hash: the
    same as MCO's render of a pool whose last config (in merge order) is the overlay."""
    case = json.loads(path.read_text(encoding="utf-8"))
    if not case["expected"]["ok"]:
        return
    pool, configs, cconfig = build_inputs(case)
    chosen = [m for m in configs if m.name in render_pool(pool, configs, cconfig).sources]
    files = {"/etc/hostname": "n1"}
    own = generate_rendered_machine_config(pool, chosen, cconfig,
                                           [mc("zzzz-n1", {OVERLAY_NODE_LABEL: "n1"},
                                               files=files)])
    assert own.name == hashed_name(pool.name, spec_yaml(own.spec))
    assert own.name.startswith(f"rendered-{pool.name}-")
    assert own.annotations[OVERLAYS_ANNOTATION] == "zzzz-n1"
    assert own.sources[-1] == "zzzz-n1"
    # the same config as an ordinary MachineConfig that merges last gives the same name
    role = (chosen[-1].labels or {}).get(ROLE_LABEL, "")
    plain = mc("zzzz-n1", {ROLE_LABEL: role}, files=files)
    if merge_order(chosen + [plain])[-1] is plain:
        twin = generate_rendered_machine_config(pool, chosen + [plain], cconfig)
        assert (twin.name, twin.spec_yaml) == (own.name, own.spec_yaml)


def test_overlay_wins_over_a_custom_pool_config() -> None:
    infra = MachineConfigPool.model_validate({
        "kind": "MachineConfigPool", "metadata": {"name": "infra"},
        "spec": {"machineConfigSelector": {"matchExpressions": [
            {"key": ROLE_LABEL, "operator": "In", "values": ["worker", "infra"]}]}}})
    from machineconfig.api import ControllerConfig
    cc = ControllerConfig.model_validate({"kind": "ControllerConfig",
                                          "metadata": {"name": "machine-config-controller"},
                                          "spec": {}})
    base = [mc("00-worker", {ROLE_LABEL: "worker"}, files={"/etc/motd": "worker"}),
            mc("99-infra", {ROLE_LABEL: "infra"}, files={"/etc/motd": "infra"})]
    own = generate_rendered_machine_config(infra, base, cc, [
        mc("00-n1", {OVERLAY_NODE_LABEL: "n1"}, files={"/etc/motd": "n1"})])
    files = own.spec["config"]["storage"]["files"]
    assert [f["contents"]["source"] for f in files] == ["data:,n1"]


# --- the controller on the local store ----------------------------------------------------

def target(store: Store) -> str:
    return str(store.get_object("MachineConfigPool", "worker")["spec"]["configuration"]["name"])


def annotations(store: Store, key: str) -> dict[str, str | None]:
    return {n.name: n.annotations.get(key) for n in store.list_nodes()}


def pool_with_nodes(tmp_path: Path, *names: str) -> tuple[Store, Path, Controller]:
    """The store, its input directory and a controller that rendered the pool, with `names`
    joined and Done on the pool's config."""
    store, inputs = make_store(tmp_path)
    controller = Controller(store)
    store.revision()
    controller.run_pass()
    for name in names:
        join(store, name, target(store))
    return store, inputs, controller


def settle(store: Store, controller: Controller, rounds: int = 30) -> int:
    worst = 0
    for _ in range(rounds):
        store.revision()
        report = controller.run_pass()
        worst = max(worst, sum(1 for n in store.list_nodes()
                               if n.annotations.get(DES) != n.annotations.get(CUR)))
        if not daemon_step(store) and not report.targeted:
            break
    return worst


def pool_condition(store: Store, kind: str) -> dict[str, Any]:
    found = find_condition(store.get_object("MachineConfigPool", "worker")["status"], kind)
    assert found is not None
    return found


def test_one_node_gets_its_own_config_the_others_keep_the_pools(tmp_path: Path) -> None:
    store, inputs = make_store(tmp_path)
    controller = Controller(store)
    store.revision()
    controller.run_pass()
    pool_config = target(store)
    pool_bytes = json.dumps(store.get_rendered(pool_config).to_dict(), sort_keys=True)
    for name in ("n1", "n2", "n3"):
        join(store, name, pool_config)
    settle(store, controller)

    write(inputs / "50-n2.yaml", overlay_yaml("50-n2-hostname", "/etc/hostname", "n2\n",
                                              node="n2"))
    assert settle(store, controller) == 1
    assert target(store) == pool_config  # the pool's config did not move
    assert json.dumps(store.get_rendered(pool_config).to_dict(), sort_keys=True) == pool_bytes
    own = annotations(store, NODE_CONFIG)["n2"]
    assert own is not None and own.startswith("rendered-worker-") and own != pool_config
    assert annotations(store, DES) == {"n1": pool_config, "n2": own, "n3": pool_config}
    assert annotations(store, CUR) == {"n1": pool_config, "n2": own, "n3": pool_config}
    assert annotations(store, NODE_CONFIG) == {"n1": None, "n2": own, "n3": None}
    stored = store.get_rendered(own)
    assert stored.annotations[OVERLAYS_ANNOTATION] == "50-n2-hostname"
    paths = [f["path"] for f in stored.ignition["storage"]["files"]]
    assert paths == ["/etc/motd", "/etc/hostname"]
    assert pool_condition(store, "Updated")["status"] == "True"  # each node at its own target
    assert pool_condition(store, "RenderDegraded")["status"] == "False"
    reasons = [e.reason for e in store.list_events("Node", "n2")]
    assert "RenderedConfigGenerated" in reasons and "SetDesiredConfig" in reasons

    # A pool change reaches every node, n2 with its overlay on top, one at a time.
    write(inputs / "10-worker.yaml", machine_config("10-worker", "/etc/issue", "x\n"))
    assert settle(store, controller) == 1
    second = target(store)
    own2 = annotations(store, NODE_CONFIG)["n2"]
    assert second != pool_config and own2 not in (own, second, None)
    assert annotations(store, CUR) == {"n1": second, "n2": own2, "n3": second}
    assert own not in store.list_rendered() and pool_config not in store.list_rendered()

    # Changing the overlay is an update for n2 only.
    write(inputs / "50-n2.yaml", overlay_yaml("50-n2-hostname", "/etc/hostname", "node2\n",
                                              node="n2"))
    store.revision()
    report = controller.run_pass()
    own3 = annotations(store, NODE_CONFIG)["n2"]
    assert report.targeted == {"n2": own3} and own3 != own2
    settle(store, controller)
    assert annotations(store, CUR) == {"n1": second, "n2": own3, "n3": second}

    # Removing it: n2 goes back to the pool's config, byte for byte the others'.
    (inputs / "50-n2.yaml").unlink()
    settle(store, controller)
    assert annotations(store, NODE_CONFIG) == {"n1": None, "n2": None, "n3": None}
    assert set(annotations(store, CUR).values()) == {second}
    assert store.list_rendered() == [second]


def test_broken_overlay_keeps_the_nodes_last_good_config(tmp_path: Path) -> None:
    store, inputs, controller = pool_with_nodes(tmp_path, "n1", "n2")
    write(inputs / "50-n1.yaml", overlay_yaml("50-n1", "/etc/hostname", "n1\n", node="n1"))
    settle(store, controller)
    own = annotations(store, NODE_CONFIG)["n1"]
    write(inputs / "50-n1.yaml", overlay_yaml("50-n1", "etc/hostname", "n1\n", node="n1"))
    write(inputs / "10-worker.yaml", machine_config("10-worker", "/etc/issue", "x\n"))
    settle(store, controller)
    cond = pool_condition(store, "RenderDegraded")
    assert cond["status"] == "True"
    assert cond["message"].startswith(
        "Failed to render configuration for node n1 in pool worker: ")
    assert "path not absolute" in cond["message"] or "absolute" in cond["message"]
    assert annotations(store, NODE_CONFIG)["n1"] == own  # its last good config
    assert annotations(store, CUR) == {"n1": own, "n2": target(store)}  # the pool moved on
    # fixed: n1 catches up and the pool is healthy again
    write(inputs / "50-n1.yaml", overlay_yaml("50-n1", "/etc/hostname", "n1\n", node="n1"))
    settle(store, controller)
    assert pool_condition(store, "RenderDegraded")["status"] == "False"
    assert annotations(store, CUR)["n1"] == annotations(store, NODE_CONFIG)["n1"] != own


def test_label_selected_overlay_follows_node_labels(tmp_path: Path) -> None:
    store, inputs, controller = pool_with_nodes(tmp_path, "n1", "n2")
    write(inputs / "50-nvme.yaml", overlay_yaml("50-nvme", "/etc/nvme", "yes\n",
                                                selector='{"matchLabels": {"disk": "nvme"}}'))
    settle(store, controller)
    assert annotations(store, NODE_CONFIG) == {"n1": None, "n2": None}
    store.set_node_labels("n1", {"disk": "nvme"})
    store.set_node_labels("n2", {"disk": "nvme"})
    settle(store, controller)
    own = annotations(store, NODE_CONFIG)
    assert own["n1"] is not None and own["n1"] == own["n2"]  # same content, same name
    assert annotations(store, CUR) == own


# --- pure node controller, status, GC -------------------------------------------------------

def node(name: str, current: str, desired: str, own: str | None = None) -> NodeRecord:
    a = {CUR: current, DES: desired, STATE: "Done"}
    if own is not None:
        a[NODE_CONFIG] = own
    return NodeRecord(name, labels={"node-role.kubernetes.io/worker": ""}, annotations=a)


POOL_DICT = {"metadata": {"name": "worker"},
             "spec": {"configuration": {"name": "rendered-worker-p"}, "maxUnavailable": 1,
                      "nodeSelector": {"matchLabels": {"node-role.kubernetes.io/worker": ""}}}}


def test_reconcile_targets_each_node_at_its_own_config() -> None:
    nodes = [node("a", "rendered-worker-p", "rendered-worker-p"),
             node("b", "rendered-worker-p", "rendered-worker-p", "rendered-worker-b")]
    result = reconcile_pool(POOL_DICT, nodes)
    assert result.targeted == ["b"]
    assert result.patches["b"][DES] == "rendered-worker-b"
    assert result.events == [("SetDesiredConfig",
                              "Targeted node b to MachineConfig: rendered-worker-b")]
    assert result.taints == {"b": True}
    # b at its own config: nothing to do, no taint
    nodes[1] = node("b", "rendered-worker-b", "rendered-worker-b", "rendered-worker-b")
    done = reconcile_pool(POOL_DICT, nodes)
    assert done.targeted == [] and done.taints == {}
    status = calculate_status(POOL_DICT, nodes, "2026-01-01T00:00:00Z")
    assert status["updatedMachineCount"] == 2
    # a node at the pool's config while its own is another is not updated
    status = calculate_status(POOL_DICT, [node("b", "rendered-worker-p", "rendered-worker-p",
                                               "rendered-worker-b")], "2026-01-01T00:00:00Z")
    assert status["updatedMachineCount"] == 0


def test_max_unavailable_counts_overlay_nodes_as_any_other() -> None:
    nodes = [node("a", "rendered-worker-o", "rendered-worker-o"),
             node("b", "rendered-worker-o", "rendered-worker-o", "rendered-worker-b"),
             node("c", "rendered-worker-o", "rendered-worker-o", "rendered-worker-c")]
    result = reconcile_pool(POOL_DICT, nodes)
    assert len(result.targeted) == 1  # maxUnavailable 1, whatever each node's target
    assert result.patches[result.targeted[0]][DES] == \
        {"a": "rendered-worker-p", "b": "rendered-worker-b",
         "c": "rendered-worker-c"}[result.targeted[0]]


def test_gc_keeps_a_targeted_node_config() -> None:
    nodes = [node("b", "rendered-worker-p", "rendered-worker-p", "rendered-worker-b")]
    assert gc.unreferenced(["rendered-worker-p", "rendered-worker-b", "rendered-worker-x"],
                           [POOL_DICT], nodes) == ["rendered-worker-x"]


# --- plan -----------------------------------------------------------------------------------

def test_mcc_plan_shows_each_nodes_own_target(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    store, inputs, controller = pool_with_nodes(tmp_path, "n1", "n2")
    first = target(store)
    settle(store, controller)
    write(inputs / "50-n2.yaml", overlay_yaml("50-n2-hostname", "/etc/hostname", "n2\n",
                                              node="n2"))
    store.revision()
    args = ["plan", "--store", f"local:{inputs}", "--state", str(tmp_path / "state")]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert f"pool worker: {first} (no new rendered config); 2 nodes" in text
    assert f"  n1: none ({first})" in text
    n2 = next(line for line in text.splitlines() if line.startswith("  n2: "))
    assert n2.startswith("  n2: drain, reboot (") and f"{first} -> rendered-worker-" in n2
    assert "    own config (overlays 50-n2-hostname), differs from the pool's:" in text
    assert "      file /etc/hostname added" in text
    assert main([*args, "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    plans = {n["node"]: n for n in doc["pools"][0]["nodes"]}
    assert plans["n2"]["overlays"] == ["50-n2-hostname"]
    assert plans["n2"]["target"] != first and plans["n1"]["target"] == first
    # the plan wrote nothing
    assert annotations(store, NODE_CONFIG) == {"n1": None, "n2": None}


def test_pool_config_equal_to_a_nodes_own_is_stored_as_the_pools(tmp_path: Path) -> None:
    """An overlay's content later given by the pool's own configs: the same name; the stored
    object becomes the pool's (no overlays mark, so every node of the pool may read it)."""
    store, inputs, controller = pool_with_nodes(tmp_path, "n1", "n2")
    write(inputs / "50-n1.yaml", overlay_yaml("50-n1", "/etc/x", "x\n", node="n1"))
    settle(store, controller)
    own = annotations(store, NODE_CONFIG)["n1"]
    assert own is not None
    assert OVERLAYS_ANNOTATION in store.get_rendered(own).annotations
    write(inputs / "10-worker.yaml", machine_config("10-worker", "/etc/x", "x\n"))
    settle(store, controller)
    assert target(store) == own == annotations(store, NODE_CONFIG)["n1"]
    assert OVERLAYS_ANNOTATION not in store.get_rendered(own).annotations
    assert annotations(store, CUR) == {"n1": own, "n2": own}
    assert store.list_rendered() == [own]


def test_damaged_node_config_is_rendered_again(tmp_path: Path) -> None:
    store, inputs, controller = pool_with_nodes(tmp_path, "n1")
    write(inputs / "50-n1.yaml", overlay_yaml("50-n1", "/etc/x", "x\n", node="n1"))
    settle(store, controller)
    own = annotations(store, NODE_CONFIG)["n1"]
    assert own is not None
    store.delete_rendered(own)
    store.revision()
    assert controller.render.sync() is not None  # not skipped: a node's config is missing
    assert own in store.list_rendered()


def test_unchanged_nodes_are_not_rendered_again(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import mcc.render_controller as rc_module
    store, inputs = make_store(tmp_path)
    controller = Controller(store)
    for name in ("n1", "n2", "n3"):
        store.register_node(name, {"node-role.kubernetes.io/worker": ""})
    for name in ("n1", "n2", "n3"):
        write(inputs / f"50-{name}.yaml", overlay_yaml(f"50-{name}", "/etc/hostname",
                                                       f"{name}\n", node=name))
    calls: list[list[str]] = []
    real = rc_module.generate_rendered_machine_config

    def counting(*args: Any, **kw: Any) -> Any:
        calls.append([mc.name for mc in args[3]])
        return real(*args, **kw)

    monkeypatch.setattr(rc_module, "generate_rendered_machine_config", counting)
    store.revision()
    controller.run_pass()
    assert sorted(calls) == [["50-n1"], ["50-n2"], ["50-n3"]]
    calls.clear()
    write(inputs / "50-n2.yaml", overlay_yaml("50-n2", "/etc/hostname", "two\n", node="n2"))
    store.revision()
    controller.run_pass()
    assert calls == [["50-n2"]]
    # a pool change renders every node's config again
    calls.clear()
    write(inputs / "10-worker.yaml", machine_config("10-worker", "/etc/issue", "x\n"))
    store.revision()
    controller.run_pass()
    assert len(calls) == 3


def test_unreadable_selector_freezes_every_nodes_own_config(tmp_path: Path) -> None:
    store, inputs, controller = pool_with_nodes(tmp_path, "n1", "n2")
    write(inputs / "50-n1.yaml", overlay_yaml("50-n1", "/etc/x", "x\n", node="n1"))
    settle(store, controller)
    own = annotations(store, NODE_CONFIG)["n1"]
    write(inputs / "60-bad.yaml", overlay_yaml("60-bad", "/etc/y", "y\n", selector="[disk]"))
    write(inputs / "10-worker.yaml", machine_config("10-worker", "/etc/issue", "x\n"))
    settle(store, controller)
    cond = pool_condition(store, "RenderDegraded")
    assert cond["status"] == "True"
    assert cond["message"] == (
        "Failed to render configuration for the nodes of pool worker: MachineConfig 60-bad: "
        "annotation machine-config.io/node-selector: must be a label selector (matchLabels "
        "and/or matchExpressions)")
    assert annotations(store, NODE_CONFIG) == {"n1": own, "n2": None}
    assert annotations(store, CUR) == {"n1": own, "n2": target(store)}
