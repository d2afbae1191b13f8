"""What the controllers that turn cluster objects into generated MachineConfigs share (the
kubelet-config, container-runtime-config and registries controllers, and the cluster-wide kubelet
configs of mcc.generated_kubelet): pool selection, generated names and owners, the status
condition, and the role template files they start from.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from machineconfig.constants import API_VERSION, GROUP
from machineconfig.errors import InputError, MachineConfigError
from machineconfig.ignition.dataurl import decode, encode_base64
from mcc.template import render_role

MC_NAME_SUFFIX_ANNOTATION = f"{GROUP}/mc-name-suffix"
MAX_MC_NAME_SUFFIX = 9
MAX_CONDITIONS = 3
KUBELET_CONF_PATH = "/etc/kubernetes/kubelet.conf"
BUILTIN_ROLES = ("master", "worker", "arbiter")


def keep_generated(obj: dict[str, Any], mine: list[tuple[str, dict[str, Any]]],
                   generated: dict[str, dict[str, Any]], seen: dict[str, list[dict[str, Any]]]) -> None:
    """Record the MachineConfigs `obj` (a KubeletConfig or ContainerRuntimeConfig) generated, per
    pool, and make them its finalizers: as in MCO, deleting it deletes what it produced."""
    for pool_name, mc in mine:
        generated[mc["metadata"]["name"]] = mc
        seen.setdefault(pool_name, []).append(obj)
    obj["metadata"]["finalizers"] = sorted({*obj["metadata"].get("finalizers", []),
                                            *(mc["metadata"]["name"] for _, mc in mine)})


def set_condition(obj: dict[str, Any], ctype: str, ok: bool, message: str, now: str) -> None:
    """Record the verdict, keep the last MAX_CONDITIONS, and mark the generation as observed.

    As MCO does, a verdict repeating the last one (same message) replaces it with the new time
    instead of being appended, so passes that conclude the same thing do not fill the list."""
    status = obj.setdefault("status", {})
    conditions = list(status.get("conditions") or [])
    if conditions and isinstance(conditions[-1], dict) and conditions[-1].get("message") == message:
        conditions.pop()
    conditions.append({"type": ctype, "status": "True" if ok else "False",
                       "lastTransitionTime": now, "reason": "", "message": message})
    status["conditions"] = conditions[-MAX_CONDITIONS:]
    status["observedGeneration"] = (obj.get("metadata") or {}).get("generation", 0)


def file_overwriting(path: str, data: bytes) -> dict[str, Any]:
    """MCO's NewIgnFileBytesOverwriting: base64 data URL, explicit empty compression, 0644."""
    return {"path": path, "contents": {"compression": "", "source": encode_base64(data)},
            "mode": 0o644, "overwrite": True}


def managed_name(kind_suffix: str, pool: str, configs_before: Sequence[Mapping[str, Any]],
                 cfg: Mapping[str, Any], limit_message: str) -> tuple[str, str]:
    """The generated MC name and suffix for `cfg` in `pool`: the unsuffixed name for the first
    object of its kind selecting the pool, then -1 ... -9, remembered in the suffix annotation."""
    base = f"99-{pool}-generated-{kind_suffix}"
    annotations = (cfg.get("metadata") or {}).get("annotations") or {}
    if MC_NAME_SUFFIX_ANNOTATION in annotations:
        val = str(annotations[MC_NAME_SUFFIX_ANNOTATION])
        return (f"{base}-{val}" if val else base), val
    if not configs_before:
        return base, ""
    highest = 0
    for other in configs_before:
        val = str(((other.get("metadata") or {}).get("annotations") or {}).get(MC_NAME_SUFFIX_ANNOTATION) or "")
        if val:
            try:
                highest = max(highest, int(val))
            except ValueError as e:
                raise InputError(f"error converting {val} to int: {e}") from e
    if highest + 1 > MAX_MC_NAME_SUFFIX:
        raise MachineConfigError(limit_message)
    return f"{base}-{highest + 1}", str(highest + 1)


def creation_order(objs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Offline we see all objects at once; treat them as created oldest first, then by name."""
    def key(o: Mapping[str, Any]) -> tuple[str, str]:
        meta = o.get("metadata") or {}
        return (str(meta.get("creationTimestamp") or ""), str(meta.get("name") or ""))
    return sorted(objs, key=key)


def owner_reference(obj: Mapping[str, Any], kind: str) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    ref: dict[str, Any] = {"apiVersion": API_VERSION, "kind": kind, "name": meta.get("name", ""),
                           "controller": True, "blockOwnerDeletion": True}
    if meta.get("uid"):
        ref["uid"] = meta["uid"]
    return ref


def find_template_file(existing_mcs: Sequence[Mapping[str, Any]], mc_name: str, path: str) -> bytes | None:
    """The contents of `path` in the template MC `mc_name`, if that MC is among the inputs."""
    for mc in existing_mcs:
        if (mc.get("metadata") or {}).get("name") != mc_name:
            continue
        config = (mc.get("spec") or {}).get("config") or {}
        for f in (config.get("storage") or {}).get("files") or []:
            if f.get("path") == path:
                return decode(str((f.get("contents") or {}).get("source") or "data:,"))
    return None


def role_template_file(pool: str, mc_kind: str, path: str, existing_mcs: Sequence[Mapping[str, Any]],
                       render: Callable[[str], list[dict[str, Any]]] | None) -> bytes:
    """A base file for `pool` from 01-<role>-<mc_kind> (custom pools use the worker templates)."""
    role = pool if pool in BUILTIN_ROLES else "worker"
    mc_name = f"01-{role}-{mc_kind}"
    found = find_template_file(existing_mcs, mc_name, path)
    if found is None and render is not None:
        found = find_template_file(render(role), mc_name, path)
    if found is None:
        raise MachineConfigError(f"could not find {path} in MachineConfig {mc_name}")
    return found


def template_renderer(controller_config: Mapping[str, Any] | None, templates_dir: Path | None,
                      values: Mapping[str, Any] | None) -> Callable[[str], list[dict[str, Any]]] | None:
    if controller_config is None or templates_dir is None:
        return None
    return lambda role: render_role(controller_config, templates_dir, role, values=values)
