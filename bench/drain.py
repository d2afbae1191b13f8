"""Benchmark of a kube drain's eviction step: one `KubeDrainer.evict_pods` over a node with N
pods (default 100, kubelet's usual ceiling is 110) against a real kube-apiserver (the tests'
control plane, tests/kube/controlplane.py: etcd, kube-apiserver, kube-controller-manager on
loopback). The same-run baseline is the same step with one request in flight at a time
(concurrency 1, a plain loop); the figure is how much faster the parallel step (8 in flight, as
kubectl evicts in parallel) empties the node. Best wall time of --repeat runs each.

Usage: .venv/bin/python bench/drain.py [--pods 100] [--repeat 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machineconfig.store.kube_drain import KubeApi, KubeDrainer  # noqa: E402
from tests.kube.controlplane import ControlPlane, running  # noqa: E402
from tests.kube.kit import add_owner, add_pod, node_pods  # noqa: E402


def one_run(cp: ControlPlane, pods: int, concurrency: int) -> float:
    ns = cp.create_namespace("bench")
    owner = add_owner(cp, ns, "ReplicaSet", "app", pods)
    for i in range(pods):
        add_pod(cp, ns, f"app-{i}", "n1", owner, {"owner": "app"})
    client = cp.client()
    try:
        drainer = KubeDrainer(KubeApi(client), concurrency=concurrency)
        start = time.perf_counter()
        progress = drainer.evict_pods("n1")
        elapsed = time.perf_counter() - start
    finally:
        client.close()
    assert len(progress.evicted) == pods and node_pods(cp, "n1") == []
    cp.delete_namespace(ns)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    serial, parallel = [], []
    with running() as cp:
        for _ in range(args.repeat):  # alternate, so load changes hit both alike
            serial.append(one_run(cp, args.pods, 1))
            parallel.append(one_run(cp, args.pods, 8))
    base, best = min(serial), min(parallel)
    print(f"evict {args.pods} pods on a real kube-apiserver (loopback)")
    print(f"  one at a time (baseline): {base * 1000:8.1f} ms")
    print(f"  8 in flight:              {best * 1000:8.1f} ms   {base / best:.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
