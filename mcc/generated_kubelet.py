"""The kubelet-config controller's cluster-wide MachineConfigs: the FeatureGate `cluster` becomes
98-<pool>-generated-kubelet (the role's kubelet.conf with the cluster's feature gates) and the
Node config `cluster` (nodes.config.openshift.io) 97-<pool>-generated-kubelet (the same kubelet.conf
with the worker latency profile, and the cgroup v2 kernel arguments), as MCO names and fills them.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from machineconfig.constants import INTERNAL_IGNITION_VERSION, RELEASE_IMAGE_VERSION_ANNOTATION
from machineconfig.errors import InputError, MachineConfigError
from machineconfig.yamlload import safe_load
from mcc.cluster_objects import ClusterObject, instance
from mcc.generated_common import (
    BUILTIN_ROLES, KUBELET_CONF_PATH, file_overwriting, role_template_file, template_renderer,
)
from mcc.template import generated_machine_config

log = logging.getLogger(__name__)

FEATURE_GATE = "FeatureGate"
NODE_CONFIG = "Node"
WORKER = "worker"
# openshift/api config/v1: the kubelet's node status update frequency per worker latency profile
LATENCY_PROFILES = {"Default": "10s", "MediumUpdateAverageReaction": "20s",
                    "LowUpdateSlowReaction": "1m0s"}
CGROUP_V1_KARGS = ("systemd.unified_cgroup_hierarchy=0", "systemd.legacy_systemd_cgroup_controller=1")
CGROUP_V2_KARGS = ("systemd.unified_cgroup_hierarchy=1", 'cgroup_no_v1="all"')


@dataclass(frozen=True)
class KubeletInputs:
    """The FeatureGate and Node config named `cluster`, when given."""

    feature_gate: ClusterObject | None = None
    node_config: ClusterObject | None = None

    @classmethod
    def from_objects(cls, objects: Mapping[str, Sequence[ClusterObject]]) -> KubeletInputs:
        return cls(instance(objects.get(FEATURE_GATE, []), FEATURE_GATE),
                   instance(objects.get(NODE_CONFIG, []), NODE_CONFIG))


def feature_gates(fg: ClusterObject, controller_config: Mapping[str, Any] | None) -> dict[str, bool]:
    """The gates the FeatureGate's status lists for the cluster's release version (the
    ControllerConfig's release-image-version annotation), enabled true and disabled false."""
    meta = (controller_config or {}).get("metadata") or {}
    version = str((meta.get("annotations") or {}).get(RELEASE_IMAGE_VERSION_ANNOTATION) or "")
    status = fg.obj.get("status") or {}
    entries = status.get("featureGates") if isinstance(status, dict) else None
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        if not isinstance(entry, dict) or entry.get("version") != version:
            continue
        gates: dict[str, bool] = {}
        for key, value in (("enabled", True), ("disabled", False)):
            items = entry.get(key) or []
            if not isinstance(items, list):
                raise fg.error("must be a list", f"status.featureGates.{i}.{key}")
            for j, item in enumerate(items):
                name = item.get("name") if isinstance(item, dict) else None
                if not isinstance(name, str) or not name:
                    raise fg.error("a feature gate needs a name",
                                   f"status.featureGates.{i}.{key}.{j}.name")
                gates[name] = value
        return dict(sorted(gates.items()))
    raise fg.error("unable to determine features: missing desired version "
                   f'"{version}" in featuregates.config.openshift.io/cluster', "status.featureGates")


def _node_spec(node: ClusterObject | None) -> dict[str, Any]:
    spec = node.obj.get("spec") if node is not None else None
    return spec if isinstance(spec, dict) else {}


def apply_worker_latency(conf: dict[str, Any], node: ClusterObject | None) -> None:
    """updateOriginalKubeConfigwithNodeConfig: the profile's nodeStatusUpdateFrequency."""
    profile = _node_spec(node).get("workerLatencyProfile") or ""
    if not profile:
        return
    if not isinstance(profile, str) or profile not in LATENCY_PROFILES:
        assert node is not None
        raise node.error(f"unknown worker latency profile type found {profile}, failed to update "
                         "the original kubelet configuration", "spec.workerLatencyProfile")
    conf["nodeStatusUpdateFrequency"] = LATENCY_PROFILES[profile]


def cgroup_kernel_arguments(node: ClusterObject | None, current: Sequence[str]) -> list[str]:
    """updateMachineConfigwithCgroup: cgroup v2 (the only mode left) replaces the v1 arguments."""
    mode = _node_spec(node).get("cgroupMode") or ""
    if not isinstance(mode, str) or mode not in ("", "v2"):
        assert node is not None
        raise node.error(f"unknown cgroup mode found {mode}, failed to update the machine config "
                         "resource", "spec.cgroupMode")
    kept = [a for a in current if a not in CGROUP_V1_KARGS]
    return kept + [a for a in CGROUP_V2_KARGS if a not in kept]


def kubelet_base(base_conf: bytes, pool: str, inputs: KubeletInputs,
                 gates: Mapping[str, bool] | None) -> dict[str, Any]:
    """generateOriginalKubeletConfigWithFeatureGates (+ the latency profile on `worker`): the
    role's template kubelet.conf with the cluster's feature gates merged over its own."""
    conf = safe_load(base_conf.decode("utf-8"), KUBELET_CONF_PATH) or {}
    if not isinstance(conf, dict):
        raise MachineConfigError(f"{KUBELET_CONF_PATH} in the templates is not a mapping")
    adjust_kubelet_base(conf, pool, inputs, gates)
    return conf


def adjust_kubelet_base(conf: dict[str, Any], pool: str, inputs: KubeletInputs,
                        gates: Mapping[str, bool] | None) -> None:
    """In place: what every generated kubelet.conf of `pool` starts from (KubeletConfigs too)."""
    if gates:
        merged = dict(conf.get("featureGates") or {})
        merged.update(gates)
        conf["featureGates"] = dict(sorted(merged.items()))
    if pool == WORKER:
        apply_worker_latency(conf, inputs.node_config)


def _kubelet_file(conf: Mapping[str, Any]) -> dict[str, Any]:
    return file_overwriting(KUBELET_CONF_PATH, (json.dumps(conf, indent=2) + "\n").encode())


def generate_cluster_kubelet_machine_configs(
        inputs: KubeletInputs, pools: Sequence[Mapping[str, Any]],
        existing_mcs: Sequence[Mapping[str, Any]], *,
        controller_config: Mapping[str, Any] | None = None, templates_dir: Path | None = None,
        values: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """97-<pool>-generated-kubelet (with a Node config) and 98-<pool>-generated-kubelet (with a
    FeatureGate) for every pool, sorted by name. Without either object, none: outside OpenShift
    the cgroup kernel arguments would make every non-rpm-ostree node Unreconcilable."""
    if inputs.feature_gate is None and inputs.node_config is None:
        return []
    gates = (feature_gates(inputs.feature_gate, controller_config)
             if inputs.feature_gate is not None else None)
    render: Callable[[str], list[dict[str, Any]]] | None = template_renderer(
        controller_config, templates_dir, values)
    out = []
    for pool in sorted(pools, key=lambda p: str((p.get("metadata") or {}).get("name"))):
        name = str((pool.get("metadata") or {}).get("name"))
        owner = inputs.feature_gate or inputs.node_config
        assert owner is not None
        try:
            base = role_template_file(name, "kubelet", KUBELET_CONF_PATH, existing_mcs, render)
            conf = kubelet_base(base, name, inputs, gates)
        except InputError:
            raise
        except MachineConfigError as e:
            raise InputError(f"could not generate the original Kubelet config: {e}",
                             file=owner.file) from e
        config = {"ignition": {"version": INTERNAL_IGNITION_VERSION},
                  "storage": {"files": [_kubelet_file(conf)]}}
        if inputs.node_config is not None:
            mc = generated_machine_config(f"97-{name}-generated-kubelet", name, config)
            if name in BUILTIN_ROLES:
                mc["spec"]["kernelArguments"] = cgroup_kernel_arguments(inputs.node_config, [])
            out.append(mc)
        if inputs.feature_gate is not None:
            out.append(generated_machine_config(f"98-{name}-generated-kubelet", name,
                                                json.loads(json.dumps(config))))
    return sorted(out, key=lambda mc: str(mc["metadata"]["name"]))
