"""`mcc render PATH... [--out DIR] [-o yaml|json]`: MCO's bootstrap render, offline.

Reads every MachineConfig, MachineConfigPool and ControllerConfig under PATH, renders each pool,
and writes MCO's bootstrap layout atomically or prints the rendered MachineConfigs.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from machineconfig import yamlv2
from machineconfig.api import (
    ControllerConfig, Loaded, MachineConfig, MachineConfigPool, load_paths,
)
from machineconfig.constants import API_VERSION
from machineconfig.errors import InputError, MachineConfigError
from mcc.render import RenderedConfig, RenderError, render_pool

log = logging.getLogger(__name__)

CONTROLLER_CONFIG_NAME = "machine-config-controller"


class PoolRenderError(MachineConfigError):
    """One pool failed to render; the message is MCO's RenderDegraded text."""


@dataclass
class Inputs:
    pools: list[MachineConfigPool]
    configs: list[MachineConfig]
    controller_config: ControllerConfig
    files: dict[str, str]  # "<kind>/<name>" -> the file it came from


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "render", help="render every pool's MachineConfigs (MCO bootstrap mode, offline)",
        description=__doc__)
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="YAML/JSON files or directories (any mix, multi-document)")
    parser.add_argument("--out", metavar="DIR",
                        help="write MCO's bootstrap layout into DIR (replaced atomically)")
    parser.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml",
                        help="format of the rendered MachineConfigs printed without --out")
    parser.set_defaults(func=run)


def collect(loaded: Sequence[Loaded]) -> Inputs:
    """Split loaded objects by kind; refuse duplicate names and a second ControllerConfig."""
    pools: dict[str, Loaded] = {}
    configs: dict[str, Loaded] = {}
    controller: Loaded | None = None
    for item in loaded:
        obj = item.obj
        where = f"{item.base_path}.metadata.name"
        if isinstance(obj, (MachineConfig, MachineConfigPool)) and not obj.name:
            raise InputError(f"{obj.kind} without a name", file=item.file, path=where,
                             line=item.document.line_of(item.base_path))
        if isinstance(obj, MachineConfigPool):
            seen = pools
        elif isinstance(obj, MachineConfig):
            seen = configs
        elif isinstance(obj, ControllerConfig):
            if controller is not None:
                raise InputError(f"a second ControllerConfig (the first is in {controller.file})",
                                 file=item.file, path=item.base_path,
                                 line=item.document.line_of(item.base_path))
            controller = item
            continue
        else:
            continue  # KubeletConfig/ContainerRuntimeConfig: their generated MCs come as input
        if obj.name in seen:
            raise InputError(f"duplicate {obj.kind} {obj.name!r} (also in {seen[obj.name].file})",
                             file=item.file, path=where, line=item.document.line_of(where))
        seen[obj.name] = item
    if not pools:
        raise InputError("no MachineConfigPool found in the input")
    if controller is None:
        log.warning("no ControllerConfig in the input: default OS images are empty")
        cconfig = ControllerConfig.model_validate(
            {"apiVersion": API_VERSION, "kind": "ControllerConfig",
             "metadata": {"name": CONTROLLER_CONFIG_NAME}})
    else:
        assert isinstance(controller.obj, ControllerConfig)
        cconfig = controller.obj
    pool_objs = [p.obj for _, p in sorted(pools.items()) if isinstance(p.obj, MachineConfigPool)]
    mc_objs = [c.obj for _, c in sorted(configs.items()) if isinstance(c.obj, MachineConfig)]
    files = {f"{item.obj.kind}/{name}": item.file
             for seen in (pools, configs) for name, item in seen.items()}
    return Inputs(pool_objs, mc_objs, cconfig, files)


def render_all(inputs: Inputs) -> list[RenderedConfig]:
    """Render every pool (sorted by name); the first failure stops everything."""
    rendered = []
    for pool in inputs.pools:
        try:
            rendered.append(render_pool(pool, inputs.configs, inputs.controller_config))
        except RenderError as e:
            # Name the file to fix first; MCO's own text follows unchanged.
            culprit = e.machine_config and inputs.files.get(f"MachineConfig/{e.machine_config}")
            where = f"{culprit}: " if culprit else ""
            raise PoolRenderError(
                f"{where}Failed to render configuration for pool {pool.name}: {e}") from e
        log.info("pool %s: %s from %d MachineConfigs", pool.name, rendered[-1].name,
                 len(rendered[-1].sources))
    return rendered


def to_yaml(obj: Any) -> str:
    """Go-style YAML (what `oc get -o yaml` prints); plain PyYAML for what yaml.v2 refuses."""
    try:
        return yamlv2.dump(obj)
    except yamlv2.YAMLError:
        return yaml.safe_dump(obj, sort_keys=True, allow_unicode=True, default_flow_style=False)


def pool_object(pool: MachineConfigPool, rendered: RenderedConfig) -> dict[str, Any]:
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


def write_layout(out_dir: str, inputs: Inputs, rendered: Sequence[RenderedConfig]) -> None:
    """Build the bootstrap layout next to `out_dir`, then swap it in with renames."""
    out_dir = os.path.abspath(out_dir)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    for name in [mc.name for mc in inputs.configs] + [p.name for p in inputs.pools]:
        # Kubernetes names never hold these; refuse them rather than write outside DIR.
        if name.startswith(".") or "/" in name or "\0" in name:
            raise InputError(f"{name!r} cannot be used as a file name in {out_dir}")
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.", dir=parent)
    try:
        files: dict[str, Any] = {}
        for mc in inputs.configs:
            files[os.path.join("machine-configs", f"{mc.name}.yaml")] = mc.to_dict()
        for r in rendered:
            files[os.path.join("machine-configs", f"{r.name}.yaml")] = r.to_object()
        for pool, r in zip(inputs.pools, rendered):
            files[os.path.join("machine-pools", f"{pool.name}.yaml")] = pool_object(pool, r)
        files[os.path.join("controller-config", f"{CONTROLLER_CONFIG_NAME}.yaml")] = \
            inputs.controller_config.to_dict()
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


def print_rendered(rendered: Sequence[RenderedConfig], output: str) -> None:
    objects = [r.to_object() for r in rendered]
    if output == "json":
        doc = {"apiVersion": "v1", "kind": "List", "items": objects}
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return
    sys.stdout.write("".join("---\n" + to_yaml(obj) for obj in objects))


def run(args: argparse.Namespace) -> int:
    try:
        inputs = collect(load_paths(args.paths))
        rendered = render_all(inputs)
        if args.out:
            write_layout(args.out, inputs, rendered)
        else:
            print_rendered(rendered, args.output)
    except (InputError, PoolRenderError) as e:
        print(f"mcc render: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"mcc render: {e.filename or ''}: {e.strerror}", file=sys.stderr)
        return 1
    return 0
