"""`mcc start --store local:DIR --state SDIR | --store kube [--kubeconfig F] [--interval S] [--once]`:
run the controller.

On every change of the store (input files, node annotations) and at least every --interval
seconds: render the pools, roll nodes forward within maxUnavailable, answer drain requests, write
pool status and delete rendered configs nothing refers to. SIGTERM or SIGINT stops it cleanly.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from machineconfig.errors import one_line
from machineconfig.store import close_store, open_store, store_url
from mcc import bootstrap
from mcc.controller import Controller
from mcc.template import DEFAULT_TEMPLATES_DIR

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("start", help="run the controller over a store",
                                   description=__doc__)
    parser.add_argument("--store", required=True, metavar="URL",
                        help="local:DIR, or kube (the Kubernetes API: in-cluster config, else "
                             "$KUBECONFIG, else ~/.kube/config) or kube:KUBECONFIG")
    parser.add_argument("--state", metavar="SDIR",
                        help="state directory of the local store (shared with `mcs start`)")
    parser.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig of --store kube")
    parser.add_argument("--interval", type=float, default=30.0, metavar="S",
                        help="longest wait between passes when nothing changes (default 30)")
    parser.add_argument("--once", action="store_true", help="run one pass and exit")
    parser.add_argument("--node-name", default=os.environ.get("NODE_NAME", ""), metavar="NODE",
                        help="the node this controller runs on, updated last in the master "
                             "pool (default: $NODE_NAME, set by the Deployment)")
    parser.add_argument("--templates", metavar="DIR", type=Path, default=DEFAULT_TEMPLATES_DIR,
                        help="the ignition-templates tree (default: the one shipped with mcc)")
    parser.add_argument("--values", metavar="FILE",
                        help="YAML mapping of extra variables for the templates")
    parser.add_argument("--no-gc", action="store_true",
                        help="keep rendered configs nothing refers to (MCO's behaviour)")
    parser.add_argument("--metrics-listen", default="", metavar="HOST:PORT",
                        help="serve /metrics (mcc_drain_err, mcc_pool_alert, mco_*) there; off by default")
    parser.set_defaults(func=run)


def serve_metrics(listen: str) -> WSGIServer | None:
    """The controller's /metrics in a thread; returns its server (`server_port`; `shutdown()`
    stops the thread), None when it could not start."""
    from prometheus_client import start_http_server

    from mcc.metrics import METRICS
    host, _, port = listen.rpartition(":")
    try:
        server, _thread = start_http_server(int(port), addr=host or "127.0.0.1", registry=METRICS)
    except (OSError, ValueError) as err:
        log.warning("metrics listener on %s not started: %s", listen, err)
        return None
    log.info("metrics on http://%s:%d/metrics", host or "127.0.0.1", server.server_port)
    return server


def run(args: argparse.Namespace) -> int:
    if not args.verbose:
        # One line per decision is this program's log (the controller's and the store's, e.g.
        # "evicted pod"); the CLI default is warnings only.
        for name in ("mcc", "machineconfig"):
            logging.getLogger(name).setLevel(logging.INFO)
    if args.interval <= 0:
        print("mcc start: --interval must be positive", file=sys.stderr)
        return 2
    values = bootstrap.load_values(args.values) if args.values else {}
    store = open_store(store_url(args.store, args.kubeconfig), args.state)
    controller = Controller(store, args.templates, values, gc_enabled=not args.no_gc,
                            node_name=args.node_name)
    if args.metrics_listen and not args.once:
        serve_metrics(args.metrics_listen)
    if args.once:
        report = controller.run_pass()
        for error in [*report.render_errors.values(), *report.errors,
                      *report.drain_errors.values()]:
            print(f"mcc start: {one_line(error)}", file=sys.stderr)
        return 1 if report.errors else 0
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: stopping after the current step", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("controller started on %s (state %s), interval %.0fs", args.store, args.state,
             args.interval)
    try:
        controller.run(stop, args.interval)
    finally:
        close_store(store)  # the kube store's watches
    return 0
