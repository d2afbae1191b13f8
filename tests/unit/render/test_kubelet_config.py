"""KubeletConfig -> 99-<pool>-generated-kubelet: the merge over the role's kubelet.conf, the files
MCO writes, MC name suffixes, rejected fields with MCO's messages, and status conditions."""
from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from machineconfig.constants import CONTROLLER_VERSION, GENERATED_BY_CONTROLLER_VERSION_ANNOTATION
from mcc.generated_common import MC_NAME_SUFFIX_ANNOTATION
from mcc.kubelet_config import generate_kubelet_machine_configs
from mcc.template import render_templates

from tests.support.templatekit import TEMPLATES, assert_valid_ignition, by_name, controller_config, file_text, files, pool, selector

NOW = "2026-11-27T14:00:00Z"
POOLS = [pool("master"), pool("worker"), pool("infra")]
TEMPLATE_MCS = render_templates(controller_config("AWS"), TEMPLATES)


def kubelet_config(name: str, pool_name: str = "worker", created: str = "", **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}", "generation": 2}
    if created:
        meta["creationTimestamp"] = created
    return {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "KubeletConfig",
            "metadata": meta, "spec": {"machineConfigPoolSelector": selector(pool_name), **spec}}


def generate(*kcs: dict[str, Any], mcs: list[dict[str, Any]] | None = None,
             **kw: Any) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    out, updated = generate_kubelet_machine_configs(list(kcs), POOLS, TEMPLATE_MCS if mcs is None else mcs,
                                                    now=NOW, **kw)
    for mc in out:
        assert_valid_ignition(mc["spec"]["config"])
    return by_name(out), updated


def kubelet_conf(mc: dict[str, Any]) -> dict[str, Any]:
    return json.loads(file_text(mc, "/etc/kubernetes/kubelet.conf"))


def test_user_fields_are_merged_over_the_role_kubelet_conf() -> None:
    kc = kubelet_config("max-pods", kubeletConfig={
        "maxPods": 500, "podPidsLimit": 8192, "kubeAPIQPS": 100, "serializeImagePulls": True,
        "evictionHard": {"memory.available": "500Mi"}, "systemReserved": {"memory": "3Gi", "cpu": "1"}})
    mcs, updated = generate(kc)
    mc = mcs["99-worker-generated-kubelet"]
    conf = kubelet_conf(mc)
    assert conf["maxPods"] == 500 and conf["podPidsLimit"] == 8192 and conf["kubeAPIQPS"] == 100
    assert conf["serializeImagePulls"] is True
    assert conf["evictionHard"] == {"memory.available": "500Mi"}
    # untouched base fields survive, including the template's clusterDNSIP
    assert conf["clusterDNS"] == ["172.30.0.10"] and conf["cgroupDriver"] == "systemd"
    # systemReserved memory/cpu move to the sizing env file; the base ephemeral-storage stays
    assert conf["systemReserved"] == {"ephemeral-storage": "1Gi"}
    assert file_text(mc, "/etc/node-sizing-enabled.env") == (
        "NODE_SIZING_ENABLED=false\nSYSTEM_RESERVED_MEMORY=3Gi\nSYSTEM_RESERVED_CPU=1\nSYSTEM_RESERVED_ES=1Gi\n")
    f = files(mc)["/etc/kubernetes/kubelet.conf"]
    assert f["mode"] == 0o644 and f["overwrite"] is True and f["contents"]["compression"] == ""
    payload = f["contents"]["source"].split(",", 1)[1]
    assert f["contents"]["source"].startswith("data:text/plain;charset=utf-8;base64,")
    assert json.loads(base64.b64decode(payload)) == conf
    meta = mc["metadata"]
    assert meta["labels"] == {"machineconfiguration.openshift.io/role": "worker"}
    assert meta["annotations"] == {GENERATED_BY_CONTROLLER_VERSION_ANNOTATION: CONTROLLER_VERSION}
    assert meta["ownerReferences"][0]["kind"] == "KubeletConfig" and meta["ownerReferences"][0]["uid"] == "uid-max-pods"
    assert mc["spec"]["osImageURL"] == ""
    kc_out = updated[0]
    assert kc_out["metadata"]["annotations"][MC_NAME_SUFFIX_ANNOTATION] == ""
    assert kc_out["metadata"]["finalizers"] == ["99-worker-generated-kubelet"]
    assert kc_out["status"] == {"observedGeneration": 2, "conditions": [
        {"type": "Accepted", "status": "True", "lastTransitionTime": NOW, "reason": "", "message": "Success"}]}
    assert "status" not in kc  # inputs are not modified


def test_log_level_and_auto_sizing_files() -> None:
    mcs, _ = generate(kubelet_config("lvl", logLevel=4, autoSizingReserved=True))
    mc = mcs["99-worker-generated-kubelet"]
    assert [f["path"] for f in mc["spec"]["config"]["storage"]["files"]] == [
        "/etc/kubernetes/kubelet.conf", "/etc/systemd/system/kubelet.service.d/20-logging.conf",
        "/etc/node-sizing-enabled.env"]
    assert file_text(mc, "/etc/systemd/system/kubelet.service.d/20-logging.conf") == (
        '[Service]\nEnvironment="KUBELET_LOG_LEVEL=4"\n')
    assert file_text(mc, "/etc/node-sizing-enabled.env").startswith("NODE_SIZING_ENABLED=true\n")
    # no kubeletConfig: kubelet.conf is the template's, re-encoded
    assert kubelet_conf(mc)["maxPods"] == 250


def test_further_kubelet_configs_get_numbered_names_and_the_suffix_annotation() -> None:
    kcs = [kubelet_config(f"kc{i}", created=f"2026-01-0{i + 1}T00:00:00Z", kubeletConfig={"maxPods": 100 + i})
           for i in range(3)]
    mcs, updated = generate(*reversed(kcs))
    assert sorted(mcs) == ["99-worker-generated-kubelet", "99-worker-generated-kubelet-1",
                           "99-worker-generated-kubelet-2"]
    assert [k["metadata"]["annotations"][MC_NAME_SUFFIX_ANNOTATION] for k in updated] == ["", "1", "2"]
    assert kubelet_conf(mcs["99-worker-generated-kubelet-2"])["maxPods"] == 102
    # an existing annotation keeps its MC name
    again = kubelet_config("kc9")
    again["metadata"]["annotations"] = {MC_NAME_SUFFIX_ANNOTATION: "7"}
    mcs, _ = generate(again)
    assert list(mcs) == ["99-worker-generated-kubelet-7"]


def test_at_most_ten_kubelet_configs_per_pool() -> None:
    kcs = [kubelet_config(f"kc{i:02}", created=f"2026-01-{i + 1:02}T00:00:00Z") for i in range(11)]
    mcs, updated = generate(*kcs)
    assert len(mcs) == 10
    assert updated[-1]["status"]["conditions"][-1]["message"] == (
        "Error: max number of supported kubelet config (10) has been reached. "
        "Please delete old kubelet configs before retrying")


REJECTED = [
    ({"cgroupDriver": "cgroupfs"}, "KubeletConfiguration: cgroupDriver is not allowed to be set, but contains: cgroupfs"),
    ({"clusterDNS": ["10.0.0.1", "10.0.0.2"]},
     "KubeletConfiguration: clusterDNS is not allowed to be set, but contains: [10.0.0.1 10.0.0.2]"),
    ({"clusterDomain": "corp.local"},
     "KubeletConfiguration: clusterDomain is not allowed to be set, but contains: corp.local"),
    ({"featureGates": {"B": False, "A": True}},
     "KubeletConfiguration: featureGates is not allowed to be set, but contains: map[A:true B:false]"),
    ({"failSwapOn": False}, "KubeletConfiguration: failSwapOn is not allowed to be set, but contains: false"),
    ({"memorySwap": {"swapBehavior": "LimitedSwap"}},
     "KubeletConfiguration: swapBehavior is not allowed to be set, but contains: LimitedSwap"),
    ({"systemReservedCgroup": "/system.slice", "systemCgroups": "/other.slice"},
     "KubeletConfiguration: systemReservedCgroup (/system.slice) must match systemCgroups (/other.slice)"),
]


@pytest.mark.parametrize(("user", "message"), REJECTED)
def test_rejected_fields(user: dict[str, Any], message: str) -> None:
    mcs, updated = generate(kubelet_config("bad", kubeletConfig=user))
    assert mcs == {}
    assert updated[0]["status"]["conditions"] == [
        {"type": "Accepted", "status": "False", "lastTransitionTime": NOW, "reason": "", "message": "Error: " + message}]
    assert MC_NAME_SUFFIX_ANNOTATION not in updated[0]["metadata"].get("annotations", {})


@pytest.mark.parametrize(("spec", "message"), [
    ({"autoSizingReserved": True, "kubeletConfig": {"systemReserved": {"memory": "1Gi"}}},
     "KubeletConfiguration: autoSizingReserved and systemdReserved cannot be set together"),
    ({"logLevel": 11}, "KubeletConfig's LogLevel is not valid [0,10]: 11"),
    ({"logLevel": -1}, "KubeletConfig's LogLevel is not valid [0,10]: -1"),
])
def test_rejected_spec_combinations(spec: dict[str, Any], message: str) -> None:
    _, updated = generate(kubelet_config("bad", **spec))
    assert updated[0]["status"]["conditions"][-1]["message"] == "Error: " + message


def test_static_pod_path_is_rejected_only_on_control_plane_pools() -> None:
    mcs, _ = generate(kubelet_config("w", kubeletConfig={"staticPodPath": "/etc/pods"}))
    assert kubelet_conf(mcs["99-worker-generated-kubelet"])["staticPodPath"] == "/etc/pods"
    _, updated = generate(kubelet_config("m", "master", kubeletConfig={"staticPodPath": "/etc/pods"}))
    assert updated[0]["status"]["conditions"][-1]["message"] == (
        "Error: KubeletConfiguration: staticPodPath is not allowed to be set, but contains: /etc/pods")


def test_no_matching_pool_is_a_failure() -> None:
    _, updated = generate(kubelet_config("nowhere", "nosuchpool"))
    assert updated[0]["status"]["conditions"][-1]["message"] == (
        "Error: could not find any MachineConfigPool set for KubeletConfig")
    empty = kubelet_config("empty")
    empty["spec"]["machineConfigPoolSelector"] = {}
    assert generate(empty)[0] == {}


def test_protect_kernel_defaults_false_and_reserved_system_cpus() -> None:
    mcs, _ = generate(kubelet_config("pkd", kubeletConfig={
        "protectKernelDefaults": False, "rotateCertificates": False, "reservedSystemCPUs": "0-1",
        "systemReservedCgroup": "/system.slice", "systemCgroups": "/system.slice"}))
    conf = kubelet_conf(mcs["99-worker-generated-kubelet"])
    assert conf["protectKernelDefaults"] is False
    assert conf["rotateCertificates"] is True  # a plain Go bool: false means "unset" to mergo
    assert "systemReservedCgroup" not in conf and conf["enforceNodeAllocatable"] == ["pods"]


def test_custom_pool_and_rendering_from_the_templates_directly() -> None:
    mcs, _ = generate(kubelet_config("infra", "infra", kubeletConfig={"maxPods": 42}), mcs=[],
                      controller_config=controller_config("None"), templates_dir=TEMPLATES)
    mc = mcs["99-infra-generated-kubelet"]
    assert mc["metadata"]["labels"]["machineconfiguration.openshift.io/role"] == "infra"
    assert kubelet_conf(mc)["maxPods"] == 42
    _, updated = generate(kubelet_config("x", kubeletConfig={"maxPods": 1}), mcs=[])
    assert "could not find /etc/kubernetes/kubelet.conf in MachineConfig 01-worker-kubelet" in (
        updated[0]["status"]["conditions"][-1]["message"])


def test_conditions_keep_a_window_of_three() -> None:
    kc = kubelet_config("w")
    kc["status"] = {"conditions": [{"type": "Accepted", "status": "False", "message": str(i)} for i in range(3)]}
    _, updated = generate(kc)
    assert [c["message"] for c in updated[0]["status"]["conditions"]] == ["1", "2", "Success"]


def test_a_repeated_verdict_replaces_the_last_condition() -> None:
    # Every render pass (each input change, each restart) judges the KubeletConfig again: the
    # same verdict refreshes the last condition's time instead of adding one (MCO's rule).
    _, updated = generate(kubelet_config("w"))
    out, again = generate_kubelet_machine_configs(updated, POOLS, TEMPLATE_MCS, now="2026-11-27T15:00:00Z")
    assert again[0]["status"]["conditions"] == [
        {"type": "Accepted", "status": "True", "lastTransitionTime": "2026-11-27T15:00:00Z", "reason": "",
         "message": "Success"}]
    # A different verdict is appended after it.
    _, third = generate(dict(again[0], spec={**again[0]["spec"], "logLevel": 11}))
    assert [c["message"] for c in third[0]["status"]["conditions"]] == [
        "Success", "Error: KubeletConfig's LogLevel is not valid [0,10]: 11"]


def test_pool_selector_selects_pools_by_their_labels() -> None:
    """machineConfigPoolSelector over pool labels; nil or empty selects no pool (as MCO)."""
    infra = {"matchExpressions": [{"key": "pools.operator.machineconfiguration.openshift.io/infra",
                                   "operator": "Exists"}]}
    mcs, updated = generate(kubelet_config("infra-only", machineConfigPoolSelector=infra))
    assert sorted(mcs) == ["99-infra-generated-kubelet"]
    for empty in ({}, None):
        mcs, updated = generate(kubelet_config("none", machineConfigPoolSelector=empty))
        assert mcs == {}
        assert updated[0]["status"]["conditions"][-1]["message"] == \
            "Error: could not find any MachineConfigPool set for KubeletConfig"


def test_tls_security_profile() -> None:
    mcs, _ = generate(kubelet_config("modern", tlsSecurityProfile={"type": "Modern", "modern": {}}))
    conf = kubelet_conf(mcs["99-worker-generated-kubelet"])
    assert conf["tlsMinVersion"] == "VersionTLS13"
    assert conf["tlsCipherSuites"] == ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]
    mcs, _ = generate(kubelet_config("custom", tlsSecurityProfile={"type": "Custom", "custom": {
        "minTLSVersion": "VersionTLS11", "ciphers": ["ECDHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES128-GCM-SHA256"]}}))
    conf = kubelet_conf(mcs["99-worker-generated-kubelet"])
    assert conf["tlsMinVersion"] == "VersionTLS11"
    assert conf["tlsCipherSuites"] == ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]  # DHE: Go has none
    mcs, _ = generate(kubelet_config("old", tlsSecurityProfile={"type": "Old"}))
    conf = kubelet_conf(mcs["99-worker-generated-kubelet"])
    assert conf["tlsMinVersion"] == "VersionTLS10" and "TLS_RSA_WITH_3DES_EDE_CBC_SHA" in conf["tlsCipherSuites"]


def test_invalid_selector_operator_is_a_failure_condition() -> None:
    kc = kubelet_config("odd")
    kc["spec"]["machineConfigPoolSelector"] = {"matchExpressions": [{"key": "a", "operator": "Like"}]}
    _, updated = generate(kc)
    assert updated[0]["status"]["conditions"][-1]["message"].startswith(
        "Error: invalid label selector: matchExpressions.0.operator: ")


@pytest.mark.parametrize("bad", [
    ["node-role"],  # not a mapping: once an AttributeError out of the controller
    {"matchLabels": "a=b"},
    # a string of values: once matched as a substring ("worker" in "worker-ish")
    {"matchExpressions": [{"key": "pools.operator.machineconfiguration.openshift.io/worker",
                           "operator": "In", "values": "x"}]},
])
def test_malformed_selector_is_a_failure_condition_not_a_crash(bad: Any) -> None:
    mcs, updated = generate(kubelet_config("bad", machineConfigPoolSelector=bad))
    assert mcs == {}
    message = updated[0]["status"]["conditions"][-1]["message"]
    assert message.startswith("Error: invalid label selector: ") and "\n" not in message
