"""`mcc render PATH... [--out DIR] [-o yaml|json]`: MCO's bootstrap render, offline.

Reads every MachineConfig, MachineConfigPool, ControllerConfig, KubeletConfig,
ContainerRuntimeConfig and pull secret under PATH (user MachineConfigs may be *.yaml.j2 templates);
with a ControllerConfig that has spec.infra, adds the template and generated MachineConfigs
(mcc.bootstrap); one without only supplies the default OS images. Renders each pool and writes
MCO's bootstrap layout atomically or prints the rendered MachineConfigs.

Those controllers own their MachineConfigs' names (00-<role>, 01-<role>-*, 99-<pool>-generated-*):
a user MachineConfig of such a name is an error; a controller-made copy (with the
generated-by-controller-version annotation, e.g. from an earlier --out) is replaced.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from machineconfig.errors import one_line
from mcc import bootstrap
from mcc.layout import to_yaml, write_layout
from mcc.render import PoolRender
from mcc.template import DEFAULT_TEMPLATES_DIR


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
    parser.add_argument("--templates", metavar="DIR", type=Path, default=DEFAULT_TEMPLATES_DIR,
                        help="the ignition-templates tree used with a ControllerConfig "
                             "(default: the one shipped with mcc)")
    parser.add_argument("--values", metavar="FILE",
                        help="YAML mapping of extra variables for the templates and *.yaml.j2 "
                             "MachineConfigs")
    parser.set_defaults(func=run)


def print_rendered(rendered: Sequence[PoolRender], output: str) -> None:
    objects = [r.config.to_dict() for r in rendered]
    if output == "json":
        doc = {"apiVersion": "v1", "kind": "List", "items": objects}
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return
    sys.stdout.write("".join("---\n" + to_yaml(obj) for obj in objects))


def run(args: argparse.Namespace) -> int:
    values = bootstrap.load_values(args.values) if args.values else {}
    inputs = bootstrap.load_inputs(args.paths, values)
    try:
        bootstrap.run_controllers(inputs, args.templates, values, values_file=args.values)
    finally:
        # A rejected KubeletConfig does not stop the render (as in MCO): say so, one line each.
        for warning in inputs.warnings:
            print(f"mcc render: warning: {one_line(warning)}", file=sys.stderr)
    rendered = bootstrap.render_all(inputs)
    if args.out:
        write_layout(args.out, inputs, rendered)
    else:
        print_rendered(rendered, args.output)
    return 0
