"""`mcc plan --store local:DIR --state SDIR [--values F] [--policy FILE] [-o text|json]`: before a rollout,
for each pool and node, what changes and what it costs (none, reload X, restart X, drain, reboot).

Renders the inputs as `mcc start` would (without writing anything) and compares each node's
currentConfig with the result, using the daemon's own node-disruption rules.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from machineconfig.api import object_name
from machineconfig import constants as C, disruption
from machineconfig.errors import one_line
from machineconfig.rendered_config import RenderedConfig
from machineconfig.store import open_store
from machineconfig.store.base import MACHINE_CONFIG_POOL, MACHINE_CONFIGURATION, NotFoundError
from mcc import bootstrap, node_controller, render_controller
from mcc.controller import MACHINE_CONFIGURATION_NAME
from mcc.plan import PoolPlan, format_text, plan_pool
from mcc.template import DEFAULT_TEMPLATES_DIR


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plan", help="what the next rollout changes on each node and what it costs",
        description=__doc__)
    parser.add_argument("--store", required=True, metavar="URL", help="local:DIR")
    parser.add_argument("--state", metavar="SDIR", help="state directory of the local store")
    parser.add_argument("--policy", metavar="FILE", type=Path,
                        help="a MachineConfiguration with spec.nodeDisruptionPolicy (default: "
                             "the MachineConfiguration `cluster` among the inputs, else MCO's "
                             "default policies)")
    parser.add_argument("--templates", metavar="DIR", type=Path, default=DEFAULT_TEMPLATES_DIR,
                        help="the ignition-templates tree (default: the one shipped with mcc)")
    parser.add_argument("--values", metavar="FILE",
                        help="YAML mapping of extra template variables (give the controller's)")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        store = open_store(args.store, args.state)
        if args.policy:
            policy = disruption.load_policy(args.policy)
        else:
            # the cluster's MachineConfiguration among the inputs, as the controller uses it
            found = [o for o in store.list_objects(MACHINE_CONFIGURATION)
                     if isinstance(o.get("metadata"), dict)
                     and o["metadata"].get("name") == MACHINE_CONFIGURATION_NAME]
            policy = disruption.merge_policies(disruption.DEFAULT_POLICY,
                                               disruption.parse_policy(found[0])) \
                if found else disruption.DEFAULT_POLICY
        objects = render_controller.read_inputs(store)
        # The same variables as the controller, or the plan describes a render it never makes.
        values = bootstrap.load_values(args.values) if args.values else {}
        nodes = store.list_nodes()
        result = render_controller.render(objects, args.templates, values, nodes=nodes)
        rendered = {r.name: r.config for r in result.rendered.values()}
        # a node's own config (overlays) that equals a pool's keeps the pool's object
        for own in result.node_rendered.values():
            rendered.setdefault(own.name, own.config)
        node_targets = {n: r.name for n, r in result.node_rendered.items()}
        node_errors = dict(result.node_errors)
        if result.overlay_error:  # nodes with a config of their own keep it
            node_errors.update({n.name: result.overlay_error for n in nodes
                                if C.NODE_CONFIG_ANNOTATION in n.annotations})

        def lookup(name: str) -> RenderedConfig:
            if name in rendered:
                return rendered[name]
            try:
                return store.get_rendered(name)
            except NotFoundError:
                raise NotFoundError(f"rendered config {name} not found") from None

        now = datetime.now(timezone.utc)
        pools = store.list_objects(MACHINE_CONFIG_POOL)
        members, errors = node_controller.assign_nodes(pools, nodes)
        plans: list[PoolPlan] = []
        for pool in pools:
            name = object_name(pool)
            target = result.rendered[name].name if name in result.rendered else ""
            plans.append(plan_pool(pool, target, result.errors.get(name, ""),
                                   members.get(name, []), lookup, policy, now, node_targets,
                                   node_errors))
    except disruption.PolicyError as e:
        print(f"mcc plan: {one_line(e)}", file=sys.stderr)
        return 1
    if args.output == "json":
        doc = {"pools": [p.to_dict() for p in plans], "unplacedNodes": errors}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write(format_text(plans))
        for node, error in sorted(errors.items()):
            sys.stdout.write(f"node {node}: not in any pool: {error}\n")
    return 0
