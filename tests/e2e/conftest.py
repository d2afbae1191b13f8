"""Fixtures for the end-to-end tests: the embedded cluster (controller + server on the host over
one local store) and three nspawn nodes that join it from a pointer config.

The steps of test_cluster.py build on each other: once one fails, the later ones fail at once
(saying which step broke) instead of each waiting out its timeouts. As root a missing
prerequisite fails; as another user the tests skip (like tests/node).
"""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import (CURRENT, DESIRED, STATE, REPO_ROOT, Cluster, node_summary,
                               open_local_store, pointer_config, pool_summary,
                               reap_stale_clusters, wait_until)
from tests.e2e.nodes import RUNS_DIR, RebootSupervisor, add_pointer_nodes
from tests.node.harness import Node, NodeFactory, reap_stale
from tests.node.rootfs import ensure_rootfs, require_prerequisites

log = logging.getLogger(__name__)

WORKERS = ("e2e-worker-1", "e2e-worker-2", "e2e-worker-3")
JOIN_TIMEOUT = 240


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@dataclass
class E2E:
    """Everything a step needs: the host programs, the store, the nodes and their reboots."""

    cluster: Cluster
    store: Any
    nodes: list[Node]
    supervisor: RebootSupervisor

    @property
    def input_dir(self) -> Path:
        return self.cluster.input_dir

    def reopen(self) -> Any:
        """Another handle on the store (for a thread: SQLite connections are per thread)."""
        return open_local_store(self.cluster.input_dir, self.cluster.state_dir)

    def pool(self, name: str = "worker") -> dict[str, Any]:
        return dict(self.store.get_object("MachineConfigPool", name))

    def annotations(self) -> dict[str, dict[str, str]]:
        return {n.name: dict(n.annotations) for n in self.store.list_nodes()}

    def describe(self) -> str:
        """The cluster's state for a failure message."""
        parts = []
        try:
            parts.append(pool_summary(self.pool()))
            parts.append(node_summary(self.store.list_nodes()))
        except Exception as err:  # noqa: BLE001 - a description must not hide the failure
            parts.append(f"(store unreadable: {err!r})")
        parts.extend(self.supervisor.failures)
        return "\n".join(parts)

    def check_health(self) -> None:
        """The host programs are alive and no node crashed."""
        self.cluster.check_alive()
        assert not self.supervisor.failures, "\n".join(self.supervisor.failures)

    def wait_pool_updated(self, timeout: float, target: str | None = None) -> str:
        """Until the worker pool is Updated on `target` (any new config when None) and every
        node is Done on it; returns the config name."""
        def updated() -> str | None:
            self.check_health()
            pool = self.pool()
            spec = ((pool.get("spec") or {}).get("configuration") or {}).get("name")
            status = ((pool.get("status") or {}).get("configuration") or {}).get("name")
            cond = {c.get("type"): c.get("status")
                    for c in (pool.get("status") or {}).get("conditions") or []}
            if not spec or spec != status or cond.get("Updated") != "True":
                return None
            if target is not None and spec != target:
                return None
            nodes = self.annotations()
            if sorted(nodes) != sorted(WORKERS) or any(
                    a.get(CURRENT) != spec or a.get(DESIRED) != spec or a.get(STATE) != "Done"
                    for a in nodes.values()):
                return None
            return str(spec)
        return wait_until(updated, timeout, f"pool worker Updated on {target or 'its config'}",
                          self.describe)


def set_max_unavailable(path: Path, pool: str, value: int) -> None:
    """The rollout checks hold the pool to an explicit `maxUnavailable` (MCO's default is 1)."""
    docs = list(yaml.safe_load_all(path.read_text()))
    for doc in docs:
        if doc and doc.get("kind") == "MachineConfigPool" and doc["metadata"]["name"] == pool:
            doc["spec"]["maxUnavailable"] = value
            break
    else:
        raise AssertionError(f"no pool {pool} in {path}")
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_prerequisites("e2e")
    base = tmp_path_factory.mktemp("e2e")
    input_dir = base / "input"
    # a copy: the steps add, change and remove input files
    shutil.copytree(REPO_ROOT / "examples/cluster", input_dir)
    set_max_unavailable(input_dir / "pools.yaml", "worker", 1)
    reap_stale_clusters(RUNS_DIR)
    running = Cluster(input_dir, base / "state", base / "work",
                      pid_file=RUNS_DIR / f"cluster-{os.getpid()}.pids")
    try:
        running.start()
        running.wait_serving("worker")
        yield running
    finally:
        running.stop()
        for name in ("mcc", "mcs"):
            log.info("%s log tail:\n%s", name, running.log_tail(name, 60))


@pytest.fixture(scope="module")
def e2e(cluster: Cluster) -> Iterator[E2E]:
    """Three nodes booted with only the worker pointer config, joined and Done."""
    base = ensure_rootfs()
    reap_stale(RUNS_DIR)
    # not run-<pid>: that is the node tests' session factory, alive in the same pytest run
    factory = NodeFactory(base, RUNS_DIR / f"e2e-{os.getpid()}")
    supervisor = RebootSupervisor([])
    try:
        assert cluster.ca is not None
        pointer = pointer_config(cluster.url, cluster.ca, cluster.token("worker"))
        supervisor.nodes.extend(add_pointer_nodes(factory, WORKERS, pointer))
        supervisor.start()
        env = E2E(cluster, open_local_store(cluster.input_dir, cluster.state_dir),
                  supervisor.nodes, supervisor)
        yield env
    finally:
        supervisor.stop()
        for node in supervisor.nodes:
            log.info("node %s console tail:\n%s", node.name, node.console_tail(40))
        factory.close()


_FAILED: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _steps_in_order(request: pytest.FixtureRequest) -> Iterator[None]:
    """A step after a failed one fails at once: it would only wait out its timeouts."""
    module = request.node.module.__name__
    if module in _FAILED:
        pytest.fail(f"an earlier step failed: {_FAILED[module]}")
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        _FAILED[module] = request.node.name

