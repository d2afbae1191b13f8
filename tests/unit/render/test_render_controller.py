"""mcc.render_controller on the local store: generated MachineConfigs, RenderDegraded texts,
SelectingAll, and no re-render when only our own writes changed."""
from __future__ import annotations

import shutil
from pathlib import Path

from machineconfig.store import open_store
from machineconfig.status import find_condition
from mcc.render_controller import RenderController
from tests.support.clusterkit import POOL, make_store, write

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "cluster"


def test_renders_once_per_input_change(tmp_path: Path) -> None:
    store, inputs = make_store(tmp_path)
    rc = RenderController(store)
    result = rc.sync()
    assert result is not None and list(result.rendered) == ["worker"]
    store.revision()
    assert rc.sync() is None  # only our writes (status, spec.configuration) changed


def test_no_machine_configs_message(tmp_path: Path) -> None:
    store, inputs = make_store(tmp_path)
    (inputs / "00-worker.yaml").unlink()
    store.revision()
    RenderController(store).sync()
    pool = store.get_object("MachineConfigPool", "worker")
    cond = find_condition(pool["status"], "RenderDegraded")
    assert cond is not None and cond["status"] == "True"
    assert cond["message"] == ("Failed to render configuration for pool worker: no "
                               "MachineConfigs found matching selector "
                               "machineconfiguration.openshift.io/role=worker")


def test_selecting_all_is_refused(tmp_path: Path) -> None:
    store, inputs = make_store(tmp_path)
    write(inputs / "pool.yaml", POOL.replace(
        "  machineConfigSelector:\n    matchLabels:\n      machineconfiguration.openshift.io/role: "
        "worker\n", "  machineConfigSelector: {}\n"))
    store.revision()
    RenderController(store).sync()
    pool = store.get_object("MachineConfigPool", "worker")
    assert not (pool["spec"].get("configuration") or {}).get("name")
    assert [e.reason for e in store.list_events("MachineConfigPool", "worker")] == \
        ["SelectingAll"]


def test_generated_machine_configs_follow_their_sources(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    shutil.copytree(EXAMPLES, inputs)
    store = open_store(f"local:{inputs}", str(tmp_path / "state"))
    rc = RenderController(store)
    result = rc.sync()
    assert result is not None and not result.errors
    names = {mc["metadata"]["name"] for mc in store.list_objects("MachineConfig")}
    assert {"00-worker", "01-worker-kubelet", "99-worker-generated-kubelet"} <= names
    kc = store.get_object("KubeletConfig", "worker-max-pods")
    assert kc["status"]["conditions"][-1]["type"] == "Accepted"
    assert kc["status"]["conditions"][-1]["status"] == "True"
    before = store.get_object("MachineConfigPool", "worker")["spec"]["configuration"]["name"]
    (inputs / "kubeletconfig.yaml").unlink()
    store.revision()
    rc.sync()
    names = {mc["metadata"]["name"] for mc in store.list_objects("MachineConfig")}
    assert "99-worker-generated-kubelet" not in names
    after = store.get_object("MachineConfigPool", "worker")["spec"]["configuration"]["name"]
    assert after != before


def test_controller_renders_user_templates_like_mcc_render(tmp_path: Path) -> None:
    # examples/cluster has a *.yaml.j2 MachineConfig: the running controller must render it with
    # its values exactly as `mcc render --values` does, so both name the same rendered configs.
    import shutil

    from machineconfig.store import open_store
    from mcc.bootstrap import load_values
    from mcc.cli import main
    from mcc.controller import Controller

    repo = Path(__file__).resolve().parents[3]
    inputs = tmp_path / "inputs"
    shutil.copytree(repo / "examples" / "cluster", inputs)
    values = str(repo / "examples" / "cluster-values.yaml")
    assert any(p.name.endswith(".yaml.j2") for p in inputs.iterdir())
    out = tmp_path / "out"
    assert main(["render", str(inputs), "--values", values, "--out", str(out)]) == 0
    offline = sorted(p.stem for p in (out / "machine-configs").glob("rendered-*.yaml"))
    store = open_store(f"local:{inputs}", str(tmp_path / "state"))
    Controller(store, values=load_values(values)).run_pass()
    online = sorted(str(p["spec"]["configuration"]["name"])
                    for p in store.list_objects("MachineConfigPool"))
    assert online == offline
    # An edit of the template is an input change: the worker pool moves to a new config.
    chrony = next(p for p in inputs.iterdir() if p.name.endswith(".yaml.j2"))
    chrony.write_text(chrony.read_text().replace("{{", "{{ 'x' ~ ", 1))
    store.revision()
    Controller(store, values=load_values(values)).run_pass()
    after = sorted(str(p["spec"]["configuration"]["name"])
                   for p in store.list_objects("MachineConfigPool"))
    assert after != online
