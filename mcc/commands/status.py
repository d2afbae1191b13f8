"""`mcc status --store local:DIR --state SDIR | --store kube[:KUBECONFIG] [-o text|json]`: status
at a glance. Pools (machine counts, updated/updating/degraded, current and target rendered config,
maintenance window), nodes (phase, daemon state, configs, reason), and drift alerts; `-o json`
adds the recent events. The same model as mcs's status page (machineconfig.status).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from machineconfig import status
from machineconfig.store import close_store, open_store, store_url


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status", help="pools, nodes and drift alerts at a glance", description=__doc__)
    parser.add_argument("--store", required=True, metavar="URL",
                        help="local:DIR, or kube / kube:KUBECONFIG")
    parser.add_argument("--state", metavar="SDIR", help="state directory of the local store")
    parser.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig of --store kube")
    parser.add_argument("--events", type=int, default=status.RECENT_EVENTS, metavar="N",
                        help=f"recent events in the JSON output (default {status.RECENT_EVENTS})")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    store = open_store(store_url(args.store, args.kubeconfig), args.state)
    try:
        model = status.read(store, recent=max(args.events, 0))
    finally:
        close_store(store)  # the store's threads (watches) end with it
    if args.output == "json":
        sys.stdout.write(json.dumps(model.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(status.format_text(model))
    return 0
