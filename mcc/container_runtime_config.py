"""The container-runtime-config controller: each ContainerRuntimeConfig becomes
99-<pool>-generated-containerruntime[-N] with CRI-O drop-ins (log level, pids limit, log size,
default runtime, artifact stores) and the role's storage.conf with overlaySize and extra stores.
"""
from __future__ import annotations

import copy
import json
import logging
import re
import tomllib
from collections.abc import Callable, Mapping
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from machineconfig.constants import INTERNAL_IGNITION_VERSION
from machineconfig.clock import now_rfc3339
from machineconfig import labels
from machineconfig.errors import MachineConfigError
from mcc.generated_common import (
    MC_NAME_SUFFIX_ANNOTATION, creation_order, file_overwriting, keep_generated, managed_name,
    owner_reference, role_template_file, set_condition, template_renderer,
)
from mcc.template import generated_machine_config

log = logging.getLogger(__name__)

STORAGE_CONF_PATH = "/etc/containers/storage.conf"
CRIO_DROPIN_DIR = "/etc/crio/crio.conf.d"
MIN_LOG_SIZE = 8192
MIN_PIDS_LIMIT = 20
LOG_LEVELS = ("error", "fatal", "panic", "warn", "info", "debug", "trace")
DEFAULT_RUNTIMES = ("", "crun", "runc")
# CRD limits on the store lists, and the path rule they share.
STORE_LIMITS = {"additionalLayerStores": 5, "additionalImageStores": 10, "additionalArtifactStores": 10}
STORE_PATH = re.compile(r"^/[a-zA-Z0-9/._-]*$")

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
            "P": Decimal("1e15"), "E": Decimal("1e18")}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?)$")


def quantity_value(q: Any, field: str) -> int:
    """A Kubernetes resource.Quantity as an integer (Value() rounds up), e.g. "8Ki" -> 8192."""
    if isinstance(q, bool):
        raise MachineConfigError(f"invalid {field} {q!r}: not a quantity")
    if isinstance(q, int):
        return q
    m = _QUANTITY.match(str(q).strip())
    if not m:
        raise MachineConfigError(f"invalid {field} {str(q)!r}: quantities must match the regular "
                                 "expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
    try:
        number = Decimal(m.group(1))
    except InvalidOperation as e:
        raise MachineConfigError(f"invalid {field} {str(q)!r}: {e}") from e
    suffix = m.group(2)
    if suffix in _BINARY:
        scaled = number * _BINARY[suffix]
    elif suffix[:1] in ("e", "E"):
        scaled = number * (Decimal(10) ** int(suffix[1:]))
    else:
        scaled = number * _DECIMAL[suffix]
    return int(scaled.to_integral_value(rounding=ROUND_CEILING))


def _store_paths(value: Any) -> list[str]:
    """Store lists are objects with a `path` in the CRD; plain strings are accepted too."""
    return [str(v.get("path", "")) if isinstance(v, Mapping) else str(v) for v in value or []]


def validate_container_runtime_config(cfg: Mapping[str, Any]) -> None:
    """MCO's checks (and the CRD's store rules); each message is MCO's text where MCO has one."""
    ctr = (cfg.get("spec") or {}).get("containerRuntimeConfig")
    if ctr is None:
        return
    if not isinstance(ctr, Mapping):
        raise MachineConfigError("containerRuntimeConfig is not valid")
    pids = ctr.get("pidsLimit")
    if pids is not None and (isinstance(pids, bool) or not isinstance(pids, int)):
        raise MachineConfigError(f"invalid PidsLimit {pids}: not an integer")
    if pids is not None and pids != 0 and pids < MIN_PIDS_LIMIT:
        raise MachineConfigError(f"invalid PidsLimit {pids}")
    if ctr.get("logSizeMax") is not None:
        size = quantity_value(ctr["logSizeMax"], "LogSizeMax")
        if 0 < size <= MIN_LOG_SIZE:
            raise MachineConfigError(f'invalid LogSizeMax "{ctr["logSizeMax"]}", cannot be less than 8kB')
    if ctr.get("overlaySize") is not None and quantity_value(ctr["overlaySize"], "overlaySize") < 0:
        raise MachineConfigError(f'invalid overlaySize "{ctr["overlaySize"]}", cannot be less than 0')
    level = ctr.get("logLevel") or ""
    if level and level not in LOG_LEVELS:
        raise MachineConfigError(f'invalid LogLevel "{level}", must be one of error, fatal, panic, '
                                 "warn, info, debug, or trace")
    runtime = ctr.get("defaultRuntime") or ""
    if runtime not in DEFAULT_RUNTIMES:
        raise MachineConfigError(f'invalid DefaultRuntime "{runtime}", must be one of crun, runc')
    for field, limit in STORE_LIMITS.items():
        paths = _store_paths(ctr.get(field))
        if len(paths) > limit:
            raise MachineConfigError(f"{field}: must have at most {limit} items")
        for path in paths:
            if not STORE_PATH.match(path) or "//" in path:
                raise MachineConfigError(f'{field}: invalid path "{path}": must be absolute, use only '
                                         "[a-zA-Z0-9/._-] and contain no '//'")


# --- TOML -------------------------------------------------------------------------------------

def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))  # a TOML basic string uses JSON's escapes for what we write


def toml_dumps(doc: Mapping[str, Any], prefix: str = "") -> str:
    """A TOML document of nested tables with scalar and list values (all CRI-O/storage need)."""
    scalars = {k: v for k, v in doc.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in doc.items() if isinstance(v, Mapping)}
    out = []
    if prefix and (scalars or not tables):
        out.append(f"[{prefix}]\n")
    out += [f"{k} = {_toml_value(v)}\n" for k, v in scalars.items()]
    for key, table in tables.items():
        sub = toml_dumps(table, f"{prefix}.{key}" if prefix else key)
        out.append(("\n" if out else "") + sub)
    return "".join(out)


def go_toml_dumps(doc: Mapping[str, Any]) -> str:
    """TOML in the layout of Go's BurntSushi/toml encoder, which MCO uses for its CRI-O drop-ins:
    each table's plain keys before its sub-tables, two spaces of indentation per table level
    (headers included), a blank line before a top-level table once something was written."""
    out: list[str] = []

    def table(node: Mapping[str, Any], key: tuple[str, ...]) -> None:
        indent = "  " * len(key)
        for k, v in node.items():
            if not isinstance(v, Mapping):
                out.append(f"{indent}{k} = {_toml_value(v)}\n")
        for k, v in node.items():
            if isinstance(v, Mapping):
                sub = (*key, k)
                if len(sub) == 1 and out:
                    out.append("\n")
                out.append(f"{'  ' * (len(sub) - 1)}[{'.'.join(sub)}]\n")
                table(v, sub)

    table(doc, ())
    return "".join(out)


def crio_dropins(ctr: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """One drop-in per changed CRI-O setting, so unrelated defaults are never restated."""
    def dropin(name: str, table: str, key: str, value: Any) -> tuple[str, bytes]:
        return (f"{CRIO_DROPIN_DIR}/01-ctrcfg-{name}",
                go_toml_dumps({"crio": {table: {key: value}}}).encode())
    files = []
    if ctr.get("logLevel"):
        files.append(dropin("logLevel", "runtime", "log_level", str(ctr["logLevel"])))
    if ctr.get("pidsLimit") is not None:
        files.append(dropin("pidsLimit", "runtime", "pids_limit", int(ctr["pidsLimit"])))
    if ctr.get("logSizeMax") is not None and quantity_value(ctr["logSizeMax"], "LogSizeMax") != 0:
        files.append(dropin("logSizeMax", "runtime", "log_size_max",
                            quantity_value(ctr["logSizeMax"], "LogSizeMax")))
    if ctr.get("defaultRuntime"):
        files.append(dropin("defaultRuntime", "runtime", "default_runtime", str(ctr["defaultRuntime"])))
    artifact = _store_paths(ctr.get("additionalArtifactStores"))
    if artifact:
        files.append(dropin("additionalArtifactStores", "runtime", "additional_artifact_stores", artifact))
    return files


def storage_conf(ctr: Mapping[str, Any], load_template: Callable[[], bytes]) -> bytes | None:
    """The template's storage.conf with overlaySize and extra stores, or None if nothing changes
    (then the template is not even looked up)."""
    overlay = ctr.get("overlaySize")
    size = quantity_value(overlay, "overlaySize") if overlay is not None else 0
    images = _store_paths(ctr.get("additionalImageStores"))
    layers = _store_paths(ctr.get("additionalLayerStores"))
    if not size and not images and not layers:
        return None
    try:
        doc = tomllib.loads(load_template().decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise MachineConfigError(f"error decoding crio config: {e}") from e
    options = doc.setdefault("storage", {}).setdefault("options", {})
    if size:
        options.setdefault("overlay", {})["size"] = str(overlay)
    if images:
        options["additionalimagestores"] = images
    if layers:
        # ":ref" asks the store to receive the image reference, as additional layer stores need.
        options["additionallayerstores"] = [f"{p}:ref" for p in layers]
    return toml_dumps(doc).encode()


def container_runtime_ignition(cfg: Mapping[str, Any],
                               load_storage_template: Callable[[], bytes]) -> dict[str, Any]:
    ctr = (cfg.get("spec") or {}).get("containerRuntimeConfig") or {}
    files = []
    storage = storage_conf(ctr, load_storage_template)
    if storage is not None:
        files.append(file_overwriting(STORAGE_CONF_PATH, storage))
    files += [file_overwriting(path, data) for path, data in crio_dropins(ctr)]
    config: dict[str, Any] = {"ignition": {"version": INTERNAL_IGNITION_VERSION}}
    if files:
        config["storage"] = {"files": files}
    return config


def generate_container_runtime_machine_configs(
        container_runtime_configs: list[dict[str, Any]], pools: list[dict[str, Any]],
        existing_mcs: list[dict[str, Any]], *, controller_config: Mapping[str, Any] | None = None,
        templates_dir: Path | None = None, values: Mapping[str, Any] | None = None,
        now: str | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Generated MCs (sorted by name) and copies of the ContainerRuntimeConfigs with the suffix
    annotation, finalizers and a Success or Failure condition. storage.conf comes from the
    `01-<role>-container-runtime` MC in `existing_mcs`, else from rendering `templates_dir`."""
    now = now or now_rfc3339()
    render = template_renderer(controller_config, templates_dir, values)
    generated: dict[str, dict[str, Any]] = {}
    updated: list[dict[str, Any]] = []
    seen: dict[str, list[dict[str, Any]]] = {}
    for original in creation_order(container_runtime_configs):
        cfg = copy.deepcopy(original)
        updated.append(cfg)
        name = (cfg.get("metadata") or {}).get("name", "")
        selector = (cfg.get("spec") or {}).get("machineConfigPoolSelector")
        try:
            compiled = labels.compile_raw(selector)  # nil or empty selects no pool
            matched = [p for p in pools if compiled is not None
                       and compiled.matches((p.get("metadata") or {}).get("labels") or {})]
            if not matched:
                raise MachineConfigError(f"could not find any MachineConfigPool set for ContainerRuntimeConfig {name}")
            validate_container_runtime_config(cfg)
            mine: list[tuple[str, dict[str, Any]]] = []
            for pool in matched:
                pool_name = str(pool["metadata"]["name"])
                mc_name, suffix = managed_name(
                    "containerruntime", pool_name, seen.get(pool_name, []), cfg,
                    "max number of supported ctrcfgs (10) has been reached. Please delete old ctrcfgs before retrying")
                def load(pool_name: str = pool_name) -> bytes:
                    return role_template_file(pool_name, "container-runtime", STORAGE_CONF_PATH,
                                              existing_mcs, render)
                mc = generated_machine_config(mc_name, pool_name, container_runtime_ignition(cfg, load))
                mc["metadata"]["ownerReferences"] = [owner_reference(cfg, "ContainerRuntimeConfig")]
                mine.append((pool_name, mc))
                cfg.setdefault("metadata", {}).setdefault("annotations", {})[MC_NAME_SUFFIX_ANNOTATION] = suffix
        except MachineConfigError as e:
            log.info("ContainerRuntimeConfig %s rejected: %s", name, e)
            set_condition(cfg, "Failure", False, f"Error: {e}", now)
            continue
        keep_generated(cfg, mine, generated, seen)
        set_condition(cfg, "Success", True, "Success", now)
    return [generated[n] for n in sorted(generated)], updated
