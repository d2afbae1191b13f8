"""mcc.plan and `mcc plan`: each node's next move and its cost from the daemon's own rules."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from machineconfig.constants import CURRENT_CONFIG_ANNOTATION as CUR
from machineconfig.errors import MachineConfigError
from machineconfig.rendered_config import RenderedConfig
from machineconfig.store.base import NodeRecord
from mcc.cli import main
from mcc.controller import Controller
from mcc.plan import cost, format_text, plan_pool
from machineconfig.disruption import DEFAULT_POLICY
from machineconfig.store import open_store
from mcc.bootstrap import load_values
from tests.support.clusterkit import daemon_step, join, machine_config, make_store, write


def rendered(name: str, files: dict[str, str], kargs: list[str] | None = None
             ) -> RenderedConfig:
    entries = [{"path": p, "contents": {"source": "data:," + c}} for p, c in files.items()]
    return RenderedConfig({
        "metadata": {"name": name},
        "spec": {"config": {"ignition": {"version": "3.5.0"}, "storage": {"files": entries}},
                 "kernelArguments": kargs or []}})


BASE = rendered("r0", {"/etc/containers/policy.json": "a", "/etc/motd": "a"})
CONFIGS = {
    "r0": BASE,
    "r-policy": rendered("r-policy", {"/etc/containers/policy.json": "b", "/etc/motd": "a"}),
    "r-motd": rendered("r-motd", {"/etc/containers/policy.json": "a", "/etc/motd": "b"}),
    "r-kargs": rendered("r-kargs", {"/etc/containers/policy.json": "a", "/etc/motd": "a"},
                        ["nosmt"]),
}


@pytest.mark.parametrize(("new", "expected"), [
    ("r0", "none"), ("r-policy", "reload crio.service"), ("r-motd", "drain, reboot"),
    ("r-kargs", "drain, reboot"),
])
def test_cost(new: str, expected: str) -> None:
    assert cost(BASE, CONFIGS[new], DEFAULT_POLICY)[0] == expected


def test_cost_lists_changes() -> None:
    assert cost(BASE, CONFIGS["r-policy"], DEFAULT_POLICY)[1] == [
        "file /etc/containers/policy.json changed"]


def lookup(name: str) -> RenderedConfig:
    if name not in CONFIGS:
        raise MachineConfigError(f"rendered config {name} not found")
    return CONFIGS[name]


def test_plan_pool() -> None:
    pool = {"metadata": {"name": "worker"},
            "spec": {"configuration": {"name": "r0"}, "maxUnavailable": "50%"}}
    nodes = [NodeRecord("a", annotations={CUR: "r0"}), NodeRecord("b"),
             NodeRecord("c", annotations={CUR: "r-gone"}), NodeRecord("d", annotations={CUR: "r-motd"})]
    plan = plan_pool(pool, "r-policy", "", nodes, lookup)
    assert plan.max_unavailable == "2"
    assert [(n.node, n.cost) for n in plan.nodes] == [
        ("a", "reload crio.service"), ("b", "first boot"),
        ("c", "unknown: rendered config r-gone not found"), ("d", "drain, reboot")]
    text = format_text([plan])
    assert text.startswith("pool worker: r0 -> r-policy; 4 nodes, maxUnavailable 2\n")
    assert "  a: reload crio.service (r0 -> r-policy)\n" in text


def test_plan_pool_render_failure_stays() -> None:
    pool = {"metadata": {"name": "worker"}, "spec": {"configuration": {"name": "r0"}}}
    plan = plan_pool(pool, "", "Failed to render configuration for pool worker: x",
                     [NodeRecord("a", annotations={CUR: "r0"})], lookup)
    assert [(n.node, n.cost) for n in plan.nodes] == [("a", "none")]
    assert "render fails" in format_text([plan])


def test_mcc_plan_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store, inputs = make_store(tmp_path)
    controller = Controller(store)
    controller.run_pass()
    current = str(store.get_object("MachineConfigPool", "worker")["spec"]["configuration"]["name"])
    join(store, "n1", current)
    controller.run_pass()
    daemon_step(store)
    write(inputs / "50-policy.yaml",
          machine_config("50-policy", "/etc/containers/policy.json", "{}\n"))
    store.revision()
    args = ["plan", "--store", f"local:{inputs}", "--state", str(tmp_path / "state")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"pool worker: {current} -> rendered-worker-" in out
    assert "  n1: reload crio.service (" in out
    assert "    file /etc/containers/policy.json added" in out
    assert main(args + ["-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["pools"][0]["nodes"][0]["cost"] == "reload crio.service"
    # plan writes nothing: the pool still targets the old config
    assert store.get_object("MachineConfigPool", "worker")["spec"]["configuration"]["name"] \
        == current



def test_mcc_plan_renders_with_the_controllers_values(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The templates read values (examples/cluster-values.yaml sets the registries.conf search
    # list): the plan must render exactly as the controller does, or every node shows a change
    # that will never roll out.
    repo = Path(__file__).resolve().parents[3]
    inputs = tmp_path / "inputs"
    shutil.copytree(repo / "examples" / "cluster", inputs)
    values = tmp_path / "values.yaml"
    shutil.copy(repo / "examples" / "cluster-values.yaml", values)
    store = open_store(f"local:{inputs}", str(tmp_path / "state"))
    controller = Controller(store, values=load_values(str(values)))
    controller.run_pass()
    current = str(store.get_object("MachineConfigPool", "worker")["spec"]["configuration"]["name"])
    join(store, "n1", current)
    controller.run_pass()
    daemon_step(store)
    args = ["plan", "--store", f"local:{inputs}", "--state", str(tmp_path / "state"),
            "-o", "json"]

    def worker_cost(extra: list[str]) -> str:
        assert main(args + extra) == 0
        doc = json.loads(capsys.readouterr().out)
        pool = next(p for p in doc["pools"] if p["pool"] == "worker")
        return str(pool["nodes"][0]["cost"])

    assert worker_cost(["--values", str(values)]) == "none"
    assert worker_cost([]) != "none"
