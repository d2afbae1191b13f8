"""Fixtures for the node tests: a session-wide rootfs and node factory, a fresh node per test.

As root a missing prerequisite fails the run (CI must run these); as another user they skip.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.node.harness import Node, NodeFactory, reap_stale
from tests.node.rootfs import ensure_rootfs, require_prerequisites

log = logging.getLogger(__name__)

RUNS_DIR = Path("/var/tmp/machine-config-tests")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.node)


@pytest.fixture(scope="session")
def node_factory() -> Iterator[NodeFactory]:
    require_prerequisites("node")
    base = ensure_rootfs()
    reap_stale(RUNS_DIR)
    factory = NodeFactory(base, RUNS_DIR / f"run-{os.getpid()}")
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def node(node_factory: NodeFactory, request: pytest.FixtureRequest) -> Iterator[Node]:
    """A freshly booted node of its own (tests change and reboot it)."""
    # a machine name must not end in "-" (nspawn refuses it): cut, then strip
    name = "node-" + request.node.name.removeprefix("test_").replace("_", "-")[:40].rstrip("-")
    created = node_factory.create(name)
    try:
        yield created
    finally:
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            log.error("node %s console:\n%s", created.name, created.console_tail(60))
        node_factory.destroy(created)

