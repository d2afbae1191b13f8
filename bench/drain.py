"""Benchmark of a kube drain's eviction step: one `KubeDrainer.evict_pods` over a node with N
pods (default 100, kubelet's usual ceiling is 110) against the fake API server, whose Eviction
API answers after --latency seconds (default 0.02: a remote kube-apiserver with admission and
etcd behind it). The same-run baseline is the same step with one request in flight at a time
(concurrency 1, a plain loop); the figure is how much faster the parallel step (8 in flight, as
kubectl evicts in parallel) empties the node. Best wall time of --repeat runs each.

Usage: .venv/bin/python bench/drain.py [--pods 100] [--latency 0.02] [--repeat 3]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lightkube import Client, KubeConfig  # noqa: E402

from machineconfig.store.kube_drain import KubeApi, KubeDrainer  # noqa: E402
from tests.kube.fakeapi import FakeAPIServer  # noqa: E402
from tests.kube.fakeapi.eviction import add_pod, install, node_pods  # noqa: E402


def one_run(pods: int, latency: float, concurrency: int) -> float:
    server = FakeAPIServer().start()
    try:
        eviction = install(server.state)
        eviction.latency = latency
        for i in range(pods):
            add_pod(server.state, f"app-{i}", "n1", owner=("ReplicaSet", "app"))
        with tempfile.TemporaryDirectory() as tmp:
            config = KubeConfig.from_file(server.write_kubeconfig(Path(tmp) / "kubeconfig"))
        with Client(config=config) as client:
            drainer = KubeDrainer(KubeApi(client), concurrency=concurrency)
            start = time.perf_counter()
            progress = drainer.evict_pods("n1")
            elapsed = time.perf_counter() - start
        assert len(progress.evicted) == pods and node_pods(server.state, "n1") == []
        return elapsed
    finally:
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    serial, parallel = [], []
    for _ in range(args.repeat):  # alternate, so load changes hit both alike
        serial.append(one_run(args.pods, args.latency, 1))
        parallel.append(one_run(args.pods, args.latency, 8))
    base, best = min(serial), min(parallel)
    print(f"evict {args.pods} pods, {args.latency * 1000:.0f} ms per eviction request")
    print(f"  one at a time (baseline): {base * 1000:8.1f} ms")
    print(f"  8 in flight:              {best * 1000:8.1f} ms   {base / best:.1f}x faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())
