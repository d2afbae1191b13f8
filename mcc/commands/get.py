"""`mcc get machineconfignodes [NAME] --store URL [--state SDIR] [-o wide|yaml|json]`: each
node's MachineConfigNode (its pool, desired and current config and update phases), as
`kubectl get machineconfignodes` shows them on a cluster: the same columns, the same objects,
for an admin of the embedded store (or of a cluster, with --store kube).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from machineconfig import machine_config_node as mcn
from machineconfig.errors import MachineConfigError, one_line
from machineconfig.store import close_store, open_store, store_url
from machineconfig.store.base import MachineConfigNodes, NotFoundError

# the resource names kubectl accepts for the kind
RESOURCES = ("machineconfignodes", "machineconfignode")
COLUMNS = ("NAME", "POOLNAME", "DESIREDCONFIG", "CURRENTCONFIG", "UPDATED")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "get", help="show the MachineConfigNodes (each node's update phases)",
        description=__doc__)
    parser.add_argument("resource", choices=RESOURCES, help="machineconfignodes")
    parser.add_argument("name", nargs="?", help="one node's object")
    parser.add_argument("--store", required=True, metavar="URL", help="local:DIR or kube[:FILE]")
    parser.add_argument("--state", metavar="SDIR", help="state directory of the local store")
    parser.add_argument("--kubeconfig", metavar="FILE", help="with --store kube")
    parser.add_argument("-o", "--output", choices=("table", "wide", "yaml", "json"),
                        default="table")
    parser.set_defaults(func=run)


def format_table(objects: list[dict[str, Any]], wide: bool = False) -> str:
    columns = list(COLUMNS) + ([c for c, _ in mcn.WIDE_COLUMNS] if wide else [])
    rows = [[mcn.summary_row(o)[c] or "<none>" for c in columns] for o in objects]
    widths = [max(len(r[i]) for r in [columns, *rows]) for i in range(len(columns))]
    return "".join("   ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n"
                   for row in [columns, *rows])


def _read(args: argparse.Namespace) -> list[dict[str, Any]]:
    store = open_store(store_url(args.store, args.kubeconfig), args.state)
    try:
        if not isinstance(store, MachineConfigNodes):
            raise MachineConfigError(f"{args.store}: this store keeps no MachineConfigNodes")
        if args.name:
            return [store.get_machine_config_node(args.name)]
        return store.list_machine_config_nodes()
    finally:
        close_store(store)


def run(args: argparse.Namespace) -> int:
    try:
        objects = _read(args)
    except NotFoundError as e:
        print(f"Error from store (NotFound): {one_line(e)}", file=sys.stderr)
        return 1
    if args.output in ("json", "yaml"):
        value: Any = objects[0] if args.name else {
            "apiVersion": "v1", "kind": "List", "items": objects}
        sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n"
                         if args.output == "json" else yaml.safe_dump(value, sort_keys=False))
    elif not objects:
        print("No resources found", file=sys.stderr)
    else:
        sys.stdout.write(format_table(objects, wide=args.output == "wide"))
    return 0
