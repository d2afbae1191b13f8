"""Benchmark of the controller's node loop (issue 7): one reconcile pass over N simulated nodes
(default 10,000) in one pool whose target just changed: pool membership, maxUnavailable,
candidates, zone-then-age ordering, the desiredConfig patches, and the pool status.

Nodes are spread over 3 zones, all Done on the old config; maxUnavailable is 10%, so the pass
picks 1,000 nodes after sorting the candidates. Each figure is the best of --repeat runs, in
CPU time of this process (the machine is shared: wall time counts other processes' turns too;
the best wall time is printed beside it). The same-run baseline is one pass that only reads every node's currentConfig,
desiredConfig and state annotations; the ratio says how many such reads one pass costs.
Target: under 50 ms for 10,000 nodes.

Usage: .venv/bin/python bench/rollout.py [--nodes 10000] [--repeat 15]
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machineconfig.constants import (  # noqa: E402
    CURRENT_CONFIG_ANNOTATION, DESIRED_CONFIG_ANNOTATION, MACHINE_CONFIG_DAEMON_STATE_ANNOTATION,
)
from machineconfig.store.base import NodeRecord  # noqa: E402
from mcc.node_controller import assign_nodes, reconcile_pool  # noqa: E402
from mcc.pool_status import calculate_status  # noqa: E402

OLD, NEW = "rendered-worker-old", "rendered-worker-new"
TARGET_MS = 50.0


def make_cluster(count: int) -> tuple[list[dict[str, Any]], list[NodeRecord]]:
    pools = [{"metadata": {"name": name},
              "spec": {"nodeSelector": {"matchLabels": {f"node-role.kubernetes.io/{name}": ""}},
                       "configuration": {"name": NEW if name == "worker" else f"rendered-{name}"},
                       "maxUnavailable": "10%"}}
             for name in ("master", "worker")]
    nodes = []
    for i in range(count):
        labels = {"node-role.kubernetes.io/worker": "", "kubernetes.io/os": "linux",
                  "topology.kubernetes.io/zone": f"zone-{i % 3}"}
        annotations = {CURRENT_CONFIG_ANNOTATION: OLD, DESIRED_CONFIG_ANNOTATION: OLD,
                       MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: "Done"}
        created = f"2026-01-01T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}Z"
        nodes.append(NodeRecord(f"worker-{i:05d}", labels, annotations, creation_timestamp=created))
    return pools, nodes


def baseline(pools: Sequence[dict[str, Any]], nodes: Sequence[NodeRecord]) -> int:
    seen = 0
    for node in nodes:
        a = node.annotations
        if a.get(CURRENT_CONFIG_ANNOTATION) == a.get(DESIRED_CONFIG_ANNOTATION) and \
                a.get(MACHINE_CONFIG_DAEMON_STATE_ANNOTATION) == "Done":
            seen += 1
    return seen


def one_pass(pools: Sequence[dict[str, Any]], nodes: Sequence[NodeRecord]) -> int:
    members, _ = assign_nodes(pools, nodes)
    patched = 0
    for pool in pools:
        name = pool["metadata"]["name"]
        result = reconcile_pool(pool, members[name])
        patched += len(result.patches)
        calculate_status(pool, members[name], "2026-01-01T00:00:00Z")
    return patched


def best(fn: Callable[[], int], repeat: int) -> tuple[float, float, int]:
    """Best CPU time, best wall time, and the result."""
    cpu, wall, out = [], [], 0
    for _ in range(repeat):
        gc.collect()
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        out = fn()
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start_wall)
    return min(cpu), min(wall), out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    pools, nodes = make_cluster(args.nodes)
    base, base_wall, _ = best(lambda: baseline(pools, nodes), args.repeat)
    took, took_wall, patched = best(lambda: one_pass(pools, nodes), args.repeat)
    ms = took * 1000
    print(f"nodes: {args.nodes} in one pool, maxUnavailable 10%: {patched} nodes targeted")
    print(f"baseline (read every node's annotations): {base * 1000:.2f} ms CPU "
          f"({base_wall * 1000:.2f} ms wall)")
    print(f"reconcile pass (membership, rollout, status): {ms:.2f} ms CPU "
          f"({took_wall * 1000:.2f} ms wall), {took / base:.1f}x baseline")
    print(f"target: under {TARGET_MS:.0f} ms: {'met' if ms < TARGET_MS else 'MISSED'}")
    return 0 if ms < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
