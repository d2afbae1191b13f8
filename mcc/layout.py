"""MCO's bootstrap layout, written by `mcc render --out DIR`: machine-configs/, machine-pools/,
controller-config/, and kubelet-configs/ and container-runtime-configs/ with their status.
Built in a temporary directory and swapped in, so nothing partial is ever left.
"""
from __future__ import annotations

import copy
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

import yaml

from machineconfig import yamlv2
from machineconfig.api import MachineConfigPool
from machineconfig.bootstrap_layout import CONTROLLER_CONFIG_DIR, MACHINE_CONFIGS_DIR, MACHINE_POOLS_DIR
from machineconfig.constants import API_VERSION
from machineconfig.errors import InputError
from machineconfig.constants import CONTROLLER_CONFIG_NAME
from mcc.bootstrap import STATUS_DIRS, Inputs
from mcc.render import PoolRender


def to_yaml(obj: Any) -> str:
    """Go-style YAML (what `oc get -o yaml` prints); plain PyYAML for what yaml.v2 refuses."""
    try:
        return yamlv2.dump(obj)
    except yamlv2.YAMLError:
        return yaml.safe_dump(obj, sort_keys=True, allow_unicode=True, default_flow_style=False)


def pool_object(pool: MachineConfigPool, rendered: PoolRender) -> dict[str, Any]:
    """The pool as the bootstrap render leaves it: spec and status point at the rendered MC."""
    obj = pool.to_dict()
    configuration = {
        "name": rendered.name,
        "source": [{"apiVersion": API_VERSION, "kind": "MachineConfig", "name": name}
                   for name in rendered.sources],
    }
    obj.setdefault("spec", {})["configuration"] = configuration
    obj.setdefault("status", {})["configuration"] = copy.deepcopy(configuration)
    return obj


def _file(directory: str, name: str) -> str:
    # Kubernetes names never hold these; refuse them rather than write outside the directory.
    if not name or name.startswith(".") or "/" in name or "\0" in name or os.sep in name:
        raise InputError(f"{name!r} cannot be used as a file name in {directory}/")
    return os.path.join(directory, f"{name}.yaml")


def layout_files(inputs: Inputs, rendered: Sequence[PoolRender]) -> dict[str, Any]:
    """Relative path -> object, for every file of the layout."""
    files: dict[str, Any] = {}
    for mc in inputs.configs:
        files[_file(MACHINE_CONFIGS_DIR, mc.name)] = mc.to_dict()
    for r in rendered:
        files[_file(MACHINE_CONFIGS_DIR, r.name)] = r.config.to_dict()
    for pool, r in zip(inputs.pools, rendered):
        files[_file(MACHINE_POOLS_DIR, pool.name)] = pool_object(pool, r)
    files[_file(CONTROLLER_CONFIG_DIR, CONTROLLER_CONFIG_NAME)] = inputs.controller_config.to_dict()
    for obj in inputs.status_objects:
        files[_file(STATUS_DIRS[obj["kind"]], str(obj["metadata"]["name"]))] = obj
    return files


def write_layout(out_dir: str, inputs: Inputs, rendered: Sequence[PoolRender]) -> None:
    """Build the bootstrap layout next to `out_dir`, then swap it in with renames.

    The directory is created 0700 (mkdtemp): template MachineConfigs hold the pull secret.
    """
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    files = layout_files(inputs, rendered)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.", dir=parent)
    try:
        for rel, obj in files.items():
            path = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(to_yaml(obj))
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(new: str, target: str) -> None:
    # rename() cannot replace a non-empty directory: move the old one aside first.
    old = None
    if os.path.lexists(target):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old.",
                               dir=os.path.dirname(target))
        os.rmdir(old)
        os.rename(target, old)
    try:
        os.rename(new, target)
    except OSError:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
