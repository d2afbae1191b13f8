"""The kubelet-config controller: each KubeletConfig becomes 99-<pool>-generated-kubelet[-N] for the
pools it selects, its kubeletConfig merged over the role's template kubelet.conf, plus the node
sizing and log-level files; the KubeletConfig gets its suffix annotation and an Accepted condition.
"""
from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from machineconfig.clock import now_rfc3339
from machineconfig.constants import INTERNAL_IGNITION_VERSION
from machineconfig import labels
from machineconfig.errors import MachineConfigError
from mcc.generated_common import (
    KUBELET_CONF_PATH, MC_NAME_SUFFIX_ANNOTATION, creation_order, file_overwriting,
    keep_generated, managed_name, owner_reference, role_template_file,
    set_condition, template_renderer,
)
from mcc.template import generated_machine_config
from machineconfig.yamlload import safe_load

log = logging.getLogger(__name__)

NODE_SIZING_PATH = "/etc/node-sizing-enabled.env"
LOG_LEVEL_DROPIN_PATH = "/etc/systemd/system/kubelet.service.d/20-logging.conf"
CONTROL_PLANE_POOLS = ("master", "arbiter")
# KubeletConfiguration fields that are pointers in Go: an explicit false/0 from the user is a
# value and overrides the base (mergo skips only nil). Every other false/0/"" counts as unset.
POINTER_FIELDS = frozenset({
    "serializeImagePulls", "cpuCFSQuota", "enableServer", "enableControllerAttachDetach",
    "makeIPTablesUtilChains", "registerNode", "seccompDefault", "localStorageCapacityIsolation",
    "enableDebuggingHandlers", "enableProfilingHandler", "enableDebugFlagsHandler",
    "enableSystemLogHandler", "enableSystemLogQuery", "podPidsLimit", "kubeAPIQPS",
    "registryPullQPS", "eventRecordQPS", "imageGCHighThresholdPercent", "imageGCLowThresholdPercent",
    "containerLogMaxFiles", "containerLogMaxWorkers", "maxParallelImagePulls", "singleProcessOOMKill",
    "failCgroupV1", "enabled",
})


# --- KubeletConfig ----------------------------------------------------------------------------

def _go_value(v: Any) -> str:
    """Go's %v/%s for the values the rejection messages print."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + " ".join(_go_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{_go_value(v[k])}" for k in sorted(v)) + "]"
    return str(v)


def user_kubelet_config(kc: Mapping[str, Any]) -> dict[str, Any] | None:
    raw = (kc.get("spec") or {}).get("kubeletConfig")
    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            raw = safe_load(raw, "spec.kubeletConfig")
        except yaml.YAMLError as e:
            raise MachineConfigError(f"KubeletConfig could not be unmarshalled, err: {e}") from e
    if not isinstance(raw, dict):
        raise MachineConfigError("KubeletConfig could not be unmarshalled, err: not an object")
    return raw


def validate_kubelet_config(kc: Mapping[str, Any], pool: str) -> None:
    """The fields a user may not set; each message is MCO's text."""
    spec = kc.get("spec") or {}
    level = spec.get("logLevel")
    if level is not None and (not isinstance(level, int) or not 0 <= level <= 10):
        raise MachineConfigError(f"KubeletConfig's LogLevel is not valid [0,10]: {level}")
    user = user_kubelet_config(kc)
    if user is None:
        return
    for field in ("cgroupDriver", "clusterDNS", "clusterDomain", "featureGates"):
        if user.get(field):
            raise MachineConfigError(f"KubeletConfiguration: {field} is not allowed to be set, "
                                     f"but contains: {_go_value(user[field])}")
    if user.get("staticPodPath") and pool in CONTROL_PLANE_POOLS:
        raise MachineConfigError("KubeletConfiguration: staticPodPath is not allowed to be set, "
                                 f"but contains: {user['staticPodPath']}")
    if user.get("failSwapOn") is not None:
        raise MachineConfigError("KubeletConfiguration: failSwapOn is not allowed to be set, "
                                 f"but contains: {_go_value(user['failSwapOn'])}")
    swap = (user.get("memorySwap") or {}).get("swapBehavior")
    if swap:
        raise MachineConfigError("KubeletConfiguration: swapBehavior is not allowed to be set, "
                                 f"but contains: {swap}")
    if user.get("systemReserved") and spec.get("autoSizingReserved") is True:
        raise MachineConfigError("KubeletConfiguration: autoSizingReserved and systemdReserved "
                                 "cannot be set together")
    reserved_cg, system_cg = user.get("systemReservedCgroup"), user.get("systemCgroups")
    if reserved_cg and system_cg and reserved_cg != system_cg:
        raise MachineConfigError(f"KubeletConfiguration: systemReservedCgroup ({reserved_cg}) "
                                 f"must match systemCgroups ({system_cg})")


def _is_zero(key: str, value: Any) -> bool:
    if value is None:
        return True
    if key in POINTER_FIELDS:
        return False
    return value is False or value == 0 or value == "" or value == [] or value == {}


def merge_over(base: dict[str, Any], user: Mapping[str, Any]) -> dict[str, Any]:
    """mergo.Merge(base, user, WithOverride) on a typed struct: set user fields win, maps merge."""
    out = copy.deepcopy(base)
    for key, value in user.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge_over(out[key], value)
        elif not _is_zero(key, value):
            out[key] = copy.deepcopy(value)
    return out


BaseAdjuster = Callable[[dict[str, Any]], None]  # in place, before the user's fields


def merged_kubelet_conf(kc: Mapping[str, Any], base_conf: bytes, adjust_base: BaseAdjuster | None = None,
                        ) -> tuple[dict[str, Any], dict[str, str]]:
    """The merged KubeletConfiguration and the systemReserved values moved to the sizing file.
    `adjust_base` adds the cluster's feature gates and worker latency to the template's copy."""
    base = safe_load(base_conf.decode("utf-8"), KUBELET_CONF_PATH) or {}
    if not isinstance(base, dict):
        raise MachineConfigError(f"{KUBELET_CONF_PATH} in the templates is not a mapping")
    if adjust_base is not None:
        adjust_base(base)
    user = copy.deepcopy(user_kubelet_config(kc))
    reserved: dict[str, str] = {}
    merged = base
    if user is not None:
        sys_reserved = user.get("systemReserved") or {}
        for res in ("memory", "cpu", "ephemeral-storage"):
            if res in sys_reserved:
                reserved[res] = str(sys_reserved.pop(res))
        user.pop("featureGates", None)  # feature gates come from the cluster FeatureGate only
        if user.get("protectKernelDefaults") is False:
            base["protectKernelDefaults"] = False
        merged = merge_over(base, user)
        if not user.get("systemReservedCgroup"):
            # mergo cannot copy an empty string over a set one; MCO clears it explicitly.
            merged.pop("systemReservedCgroup", None)
    apply_tls_profile(merged, (kc.get("spec") or {}).get("tlsSecurityProfile"))
    if merged.get("reservedSystemCPUs"):
        merged.pop("systemReservedCgroup", None)
        merged["enforceNodeAllocatable"] = ["pods"]
    return merged, reserved


# OpenShift's TLS profiles (config/v1) in OpenSSL names, and the IANA names the kubelet takes;
# suites Go cannot do (DHE) are dropped, as library-go's OpenSSLToIANACipherSuites does.
_TLS13 = ["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]
_ECDHE_AEAD = ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
               "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305"]
TLS_PROFILES: dict[str, tuple[str, list[str]]] = {
    "Modern": ("VersionTLS13", _TLS13),
    "Intermediate": ("VersionTLS12", _TLS13 + _ECDHE_AEAD + ["DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384"]),
    "Old": ("VersionTLS10", _TLS13 + _ECDHE_AEAD + [
        "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-SHA256", "ECDHE-RSA-AES128-SHA256", "ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA",
        "ECDHE-ECDSA-AES256-SHA384", "ECDHE-RSA-AES256-SHA384", "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES256-SHA",
        "DHE-RSA-AES128-SHA256", "DHE-RSA-AES256-SHA256", "AES128-GCM-SHA256", "AES256-GCM-SHA384",
        "AES128-SHA256", "AES256-SHA256", "AES128-SHA", "AES256-SHA", "DES-CBC3-SHA"]),
}
OPENSSL_TO_IANA = {
    **{n: n for n in _TLS13},
    "ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "ECDHE-RSA-CHACHA20-POLY1305": "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "ECDHE-ECDSA-AES128-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "ECDHE-RSA-AES128-SHA256": "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "ECDHE-ECDSA-AES128-SHA": "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "ECDHE-RSA-AES128-SHA": "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "ECDHE-ECDSA-AES256-SHA": "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "ECDHE-RSA-AES256-SHA": "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "AES128-GCM-SHA256": "TLS_RSA_WITH_AES_128_GCM_SHA256", "AES256-GCM-SHA384": "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "AES128-SHA256": "TLS_RSA_WITH_AES_128_CBC_SHA256", "AES128-SHA": "TLS_RSA_WITH_AES_128_CBC_SHA",
    "AES256-SHA": "TLS_RSA_WITH_AES_256_CBC_SHA", "DES-CBC3-SHA": "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
}


def apply_tls_profile(conf: dict[str, Any], profile: Mapping[str, Any] | None) -> None:
    """spec.tlsSecurityProfile sets the kubelet's tlsMinVersion and tlsCipherSuites."""
    if not profile:
        return
    ptype = profile.get("type") or "Intermediate"
    if ptype == "Custom":
        custom = profile.get("custom") or {}
        min_version, ciphers = str(custom.get("minTLSVersion") or "VersionTLS12"), list(custom.get("ciphers") or [])
    elif ptype in TLS_PROFILES:
        min_version, ciphers = TLS_PROFILES[ptype]
    else:
        raise MachineConfigError(f"unknown tlsSecurityProfile type {ptype!r}")
    conf["tlsMinVersion"] = min_version
    conf["tlsCipherSuites"] = [OPENSSL_TO_IANA[c] for c in ciphers if c in OPENSSL_TO_IANA]


def node_sizing_env(auto: bool | None, reserved: Mapping[str, str]) -> bytes:
    return (f"NODE_SIZING_ENABLED={'true' if auto else 'false'}\n"
            f"SYSTEM_RESERVED_MEMORY={reserved.get('memory') or '1Gi'}\n"
            f"SYSTEM_RESERVED_CPU={reserved.get('cpu') or '500m'}\n"
            f"SYSTEM_RESERVED_ES={reserved.get('ephemeral-storage') or '1Gi'}\n").encode()


def kubelet_ignition(kc: Mapping[str, Any], base_conf: bytes,
                     adjust_base: BaseAdjuster | None = None) -> dict[str, Any]:
    """kubelet.conf, then the log-level drop-in, then the sizing file (MCO's order)."""
    spec = kc.get("spec") or {}
    merged, reserved = merged_kubelet_conf(kc, base_conf, adjust_base)
    files = [file_overwriting(KUBELET_CONF_PATH, (json.dumps(merged, indent=2) + "\n").encode())]
    if spec.get("logLevel") is not None:
        files.append(file_overwriting(
            LOG_LEVEL_DROPIN_PATH, f'[Service]\nEnvironment="KUBELET_LOG_LEVEL={spec["logLevel"]}"\n'.encode()))
    if reserved:
        files.append(file_overwriting(NODE_SIZING_PATH, node_sizing_env(None, reserved)))
    elif spec.get("autoSizingReserved") is not None:
        files.append(file_overwriting(NODE_SIZING_PATH, node_sizing_env(bool(spec["autoSizingReserved"]), {})))
    return {"ignition": {"version": INTERNAL_IGNITION_VERSION}, "storage": {"files": files}}


def generate_kubelet_machine_configs(
        kubelet_configs: list[dict[str, Any]], pools: list[dict[str, Any]],
        existing_mcs: list[dict[str, Any]], *, controller_config: Mapping[str, Any] | None = None,
        templates_dir: Path | None = None, values: Mapping[str, Any] | None = None,
        now: str | None = None, adjust_base: Callable[[dict[str, Any], str], None] | None = None,
        ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Generated MCs (sorted by name) and copies of the KubeletConfigs with annotation and status.
    `adjust_base(conf, pool)` completes a pool's base kubelet.conf as the cluster objects say.

    The base kubelet.conf comes from the `01-<role>-kubelet` MC in `existing_mcs` (what
    render_templates produced) or, failing that, from rendering `templates_dir` with
    `controller_config`. A rejected KubeletConfig gets Accepted=False and no MachineConfig.
    """
    now = now or now_rfc3339()
    render = template_renderer(controller_config, templates_dir, values)
    generated: dict[str, dict[str, Any]] = {}
    updated: list[dict[str, Any]] = []
    seen: dict[str, list[dict[str, Any]]] = {}  # pool -> KubeletConfigs already given an MC
    for original in creation_order(kubelet_configs):
        kc = copy.deepcopy(original)
        updated.append(kc)
        selector = (kc.get("spec") or {}).get("machineConfigPoolSelector")
        try:
            compiled = labels.compile_raw(selector)  # nil or empty selects no pool
            matched = [p for p in pools if compiled is not None
                       and compiled.matches((p.get("metadata") or {}).get("labels") or {})]
            if not matched:
                raise MachineConfigError("could not find any MachineConfigPool set for KubeletConfig")
            mine: list[tuple[str, dict[str, Any]]] = []
            for pool in matched:
                pool_name = str(pool["metadata"]["name"])
                validate_kubelet_config(kc, pool_name)
                name, suffix = managed_name(
                    "kubelet", pool_name, seen.get(pool_name, []), kc,
                    "max number of supported kubelet config (10) has been reached. "
                    "Please delete old kubelet configs before retrying")
                base = role_template_file(pool_name, "kubelet", KUBELET_CONF_PATH, existing_mcs, render)
                def adjust(conf: dict[str, Any], pool_name: str = pool_name) -> None:
                    if adjust_base is not None:
                        adjust_base(conf, pool_name)
                mc = generated_machine_config(name, pool_name, kubelet_ignition(kc, base, adjust))
                mc["metadata"]["ownerReferences"] = [owner_reference(kc, "KubeletConfig")]
                mine.append((pool_name, mc))
                kc.setdefault("metadata", {}).setdefault("annotations", {})[MC_NAME_SUFFIX_ANNOTATION] = suffix
        except (MachineConfigError, yaml.YAMLError) as e:
            log.info("KubeletConfig %s rejected: %s", (kc.get("metadata") or {}).get("name"), e)
            set_condition(kc, "Accepted", False, f"Error: {e}", now)
            continue
        keep_generated(kc, mine, generated, seen)
        set_condition(kc, "Accepted", True, "Success", now)
    return [generated[n] for n in sorted(generated)], updated
