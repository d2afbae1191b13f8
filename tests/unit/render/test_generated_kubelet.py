"""97-<pool>-generated-kubelet (Node config) and 98-<pool>-generated-kubelet (FeatureGate).

Expectations come from MCO: pkg/controller/kubelet-config/helpers.go (updateMachineConfigwithCgroup:
cgroup v2 arguments, "unknown cgroup mode found v1, ..."; updateOriginalKubeConfigwithNodeConfig:
nodeStatusUpdateFrequency per profile, with openshift/api's 10s/20s/1m durations),
kubelet_config_nodes_test.go TestBootstrapNodeConfigDefault (the v2 arguments for master and
worker, v1 refused) and library-go's featuresFromFeatureGate ("missing desired version %q in
featuregates.config.openshift.io/cluster").
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from machineconfig.errors import InputError
from mcc.cli import main
from mcc.cluster_objects import ClusterObject
from mcc.generated_kubelet import KubeletInputs, generate_cluster_kubelet_machine_configs
from mcc.kubelet_config import generate_kubelet_machine_configs
from mcc.template import render_templates

from tests.support.templatekit import (
    TEMPLATES, assert_valid_ignition, controller_config, file_text, pool, selector,
)

ROOT = Path(__file__).resolve().parents[3]
CC = controller_config("None")
CC["metadata"]["annotations"] = {"machineconfiguration.openshift.io/release-image-version": "4.19.0"}
TEMPLATE_MCS = render_templates(CC, TEMPLATES)
POOLS = [pool("master"), pool("worker"), pool("infra")]


def feature_gate(version: str = "4.19.0") -> ClusterObject:
    return ClusterObject({"apiVersion": "config.openshift.io/v1", "kind": "FeatureGate",
                          "metadata": {"name": "cluster"}, "spec": {},
                          "status": {"featureGates": [
                              {"version": "4.18.0", "enabled": [{"name": "Old"}]},
                              {"version": version, "enabled": [{"name": "NodeSwap"}],
                               "disabled": [{"name": "KMSv1"}]}]}}, "fg.yaml")


def node_config(**spec: str) -> ClusterObject:
    return ClusterObject({"apiVersion": "config.openshift.io/v1", "kind": "Node",
                          "metadata": {"name": "cluster"}, "spec": spec}, "node.yaml")


def generate(inputs: KubeletInputs) -> dict[str, dict[str, Any]]:
    mcs = generate_cluster_kubelet_machine_configs(inputs, POOLS, TEMPLATE_MCS, controller_config=CC)
    for mc in mcs:
        assert_valid_ignition(mc["spec"]["config"])
    return {mc["metadata"]["name"]: mc for mc in mcs}


def kubelet_conf(mc: dict[str, Any]) -> dict[str, Any]:
    conf: dict[str, Any] = json.loads(file_text(mc, "/etc/kubernetes/kubelet.conf"))
    return conf


def test_the_node_config_gives_97_with_cgroup_v2_arguments_and_the_worker_latency() -> None:
    mcs = generate(KubeletInputs(node_config=node_config(
        cgroupMode="v2", workerLatencyProfile="MediumUpdateAverageReaction")))
    assert list(mcs) == ["97-infra-generated-kubelet", "97-master-generated-kubelet",
                         "97-worker-generated-kubelet"]
    v2 = ["systemd.unified_cgroup_hierarchy=1", 'cgroup_no_v1="all"']
    assert mcs["97-master-generated-kubelet"]["spec"]["kernelArguments"] == v2
    assert mcs["97-worker-generated-kubelet"]["spec"]["kernelArguments"] == v2
    assert mcs["97-infra-generated-kubelet"]["spec"]["kernelArguments"] == []  # custom pool
    assert kubelet_conf(mcs["97-worker-generated-kubelet"])["nodeStatusUpdateFrequency"] == "20s"
    master_default = kubelet_conf(mcs["97-master-generated-kubelet"]).get("nodeStatusUpdateFrequency")
    assert master_default != "20s"  # the profile is for workers only
    mc = mcs["97-worker-generated-kubelet"]
    assert mc["metadata"]["labels"] == {"machineconfiguration.openshift.io/role": "worker"}
    assert "ownerReferences" not in mc["metadata"]  # MCO sets none on 97/98


@pytest.mark.parametrize("spec,message,path", [
    ({"cgroupMode": "v1"}, "unknown cgroup mode found v1, failed to update the machine config "
                           "resource", "$.spec.cgroupMode"),
    ({"workerLatencyProfile": "Fast"}, "unknown worker latency profile type found Fast, failed to "
                                       "update the original kubelet configuration",
     "$.spec.workerLatencyProfile"),
])
def test_unknown_node_settings_are_mcos_errors(spec: dict[str, str], message: str, path: str) -> None:
    with pytest.raises(InputError) as err:
        generate(KubeletInputs(node_config=node_config(**spec)))
    assert (err.value.file, err.value.path, err.value.message) == ("node.yaml", path, message)


def test_the_feature_gate_gives_98_with_the_gates_of_the_cluster_version() -> None:
    mcs = generate(KubeletInputs(feature_gate=feature_gate()))
    assert list(mcs) == ["98-infra-generated-kubelet", "98-master-generated-kubelet",
                         "98-worker-generated-kubelet"]
    gates = kubelet_conf(mcs["98-master-generated-kubelet"])["featureGates"]
    assert gates["NodeSwap"] is True and gates["KMSv1"] is False and "Old" not in gates
    assert mcs["98-worker-generated-kubelet"]["spec"]["kernelArguments"] == []


def test_a_feature_gate_without_the_cluster_version_is_refused() -> None:
    with pytest.raises(InputError) as err:
        generate(KubeletInputs(feature_gate=feature_gate("4.20.0")))
    assert err.value.message == ('unable to determine features: missing desired version "4.19.0" '
                                 "in featuregates.config.openshift.io/cluster")


def test_without_either_object_nothing_is_generated() -> None:
    # Deliberately not MCO's bootstrap (which always writes 97 with cgroup kernel arguments):
    # outside OpenShift those arguments would leave every non-rpm-ostree node Unreconcilable.
    assert generate(KubeletInputs()) == {}


def test_kubelet_configs_start_from_the_same_base() -> None:
    """A KubeletConfig's 99- kubelet.conf replaces the whole file, so it carries the cluster's
    gates and worker latency too (MCO: generateOriginalKubeletConfigWithFeatureGates and
    updateOriginalKubeConfigwithNodeConfig before the user's fields)."""
    from mcc.generated_kubelet import adjust_kubelet_base, feature_gates

    inputs = KubeletInputs(feature_gate=feature_gate(),
                           node_config=node_config(workerLatencyProfile="LowUpdateSlowReaction"))
    gates = feature_gates(feature_gate(), CC)
    kc = {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "KubeletConfig",
          "metadata": {"name": "pods"},
          "spec": {"machineConfigPoolSelector": selector("worker"), "kubeletConfig": {"maxPods": 100}}}
    mcs, _ = generate_kubelet_machine_configs(
        [kc], POOLS, TEMPLATE_MCS, controller_config=CC,
        adjust_base=lambda conf, p: adjust_kubelet_base(conf, p, inputs, gates))
    conf = kubelet_conf(mcs[0])
    assert conf["maxPods"] == 100 and conf["featureGates"]["NodeSwap"] is True
    assert conf["nodeStatusUpdateFrequency"] == "1m0s"


def test_mcc_render_orders_97_98_99(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = tmp_path / "cluster"
    shutil.copytree(ROOT / "examples" / "cluster", cluster)
    (cluster / "cluster-config.yaml").write_text("""\
apiVersion: config.openshift.io/v1
kind: FeatureGate
metadata: {name: cluster}
status:
  featureGates:
  - version: 4.19.0
    enabled: [{name: NodeSwap}]
---
apiVersion: config.openshift.io/v1
kind: Node
metadata: {name: cluster}
spec: {cgroupMode: v2}
""")
    out = tmp_path / "out"
    assert main(["render", str(cluster), "--out", str(out)]) == 0, capsys.readouterr().err
    pool_obj = yaml.safe_load((out / "machine-pools" / "worker.yaml").read_text())
    names = [s["name"] for s in pool_obj["spec"]["configuration"]["source"]]
    assert names.index("97-worker-generated-kubelet") < names.index("98-worker-generated-kubelet") \
        < names.index("99-worker-generated-kubelet")
    rendered = yaml.safe_load((out / "machine-configs" /
                               f"{pool_obj['status']['configuration']['name']}.yaml").read_text())
    assert rendered["spec"]["kernelArguments"] == ["systemd.unified_cgroup_hierarchy=1",
                                                   'cgroup_no_v1="all"']
    conf = json.loads(file_text(rendered, "/etc/kubernetes/kubelet.conf"))
    assert conf["featureGates"]["NodeSwap"] is True and conf["maxPods"] == 500


def test_the_running_controller_follows_the_feature_gate_and_node_config(tmp_path: Path) -> None:
    """Before: `mcc start` loaded these objects and ignored them."""
    from machineconfig.store import open_store
    from mcc.render_controller import RenderController

    inputs = tmp_path / "inputs"
    shutil.copytree(ROOT / "examples" / "cluster", inputs)
    (inputs / "node.yaml").write_text(
        "apiVersion: config.openshift.io/v1\nkind: Node\nmetadata: {name: cluster}\n"
        "spec: {workerLatencyProfile: LowUpdateSlowReaction}\n")
    store = open_store(f"local:{inputs}", str(tmp_path / "state"))
    controller = RenderController(store)
    result = controller.sync()
    assert result is not None and not result.errors, result.errors
    names = {mc["metadata"]["name"] for mc in store.list_objects("MachineConfig")}
    assert {"97-master-generated-kubelet", "97-worker-generated-kubelet"} <= names
    assert not any(n.startswith("98-") for n in names)
    worker = store.get_object("MachineConfig", "97-worker-generated-kubelet")
    assert kubelet_conf(worker)["nodeStatusUpdateFrequency"] == "1m0s"
    (inputs / "node.yaml").unlink()
    store.revision()
    controller.sync()
    names = {mc["metadata"]["name"] for mc in store.list_objects("MachineConfig")}
    assert not any(n.startswith("97-") for n in names)
