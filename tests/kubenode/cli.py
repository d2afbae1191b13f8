"""`scripts/nodes --kube N`: a real control plane in a network namespace of its own, mcc and mcs
on the kube store, and N worker nodes running kubelet and CRI-O from the served config; prints
kubectl commands and runs until Ctrl-C, then tears everything down.

    python -m tests.kubenode.cli N [--prefix NAME] [--timeout SECONDS]
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

from tests.kubenode.harness import KubeCluster, reap_stale_cgroups
from tests.node.harness import reap_stale
from tests.node.rootfs import HarnessError, missing_prerequisites

RUNS_DIR = Path("/var/tmp/machine-config-tests")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/nodes --kube", description=__doc__.split("\n\n")[0])
    parser.add_argument("count", type=int, help="number of worker nodes")
    parser.add_argument("--prefix", default="kn-worker", help="node names: PREFIX-1 ... PREFIX-N")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for Ready")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    missing = missing_prerequisites()
    if missing:
        print(f"scripts/nodes --kube: missing {', '.join(missing)}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    reap_stale(RUNS_DIR)
    reap_stale_cgroups()
    cluster = KubeCluster(RUNS_DIR / f"kubenode-{os.getpid()}")
    try:
        started = time.monotonic()
        cluster.start()
        names = [f"{args.prefix}-{i}" for i in range(1, args.count + 1)]
        cluster.add_nodes(names)
        cluster.wait_joined(names, args.timeout)
        kc = cluster.kubeconfig
        print(f"\n{args.count} node(s) Ready and Done in {time.monotonic() - started:.0f}s:")
        print(f"  export KUBECONFIG={kc}")
        print("  kubectl get nodes -o wide; kubectl get mcp; kubectl get mc")
        print("  kubectl create deployment web --image=localhost/busybox:latest -- sleep 1d")
        print("     (images: localhost/busybox:latest, localhost/pause:3.10; "
              "imagePullPolicy Never or IfNotPresent)")
        print(f"  kubectl get --raw /api/v1/nodes/{names[0]}/proxy/configz")
        for node in cluster.nodes:
            print(f"  ssh -F {node.ssh_config} {node.name}      (console: {node.console_log})")
        print(f"  logs: {cluster.workdir}/mcc.log {cluster.workdir}/mcs.log")
        print("Ctrl-C (or kill -TERM %d) stops the nodes, mcc, mcs and the control plane." %
              os.getpid())
        sys.stdout.flush()
        while not stop.wait(1):
            cluster.check_alive()
        return 0
    except (HarnessError, AssertionError) as err:
        print(f"scripts/nodes --kube: {err}", file=sys.stderr)
        return 1
    finally:
        cluster.close()


if __name__ == "__main__":
    sys.exit(main())
