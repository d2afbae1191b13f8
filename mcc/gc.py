"""Garbage collection of rendered MachineConfigs nobody refers to any more.

MCO keeps them forever; we delete those referenced by no pool (spec or status configuration) and
no node (currentConfig, desiredConfig, or its own target where overlays select it: node-config)
- never one in use or targeted (DESIGN.md, deliberate differences).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from machineconfig.api import pool_configuration
from machineconfig.constants import (
    CURRENT_CONFIG_ANNOTATION, DESIRED_CONFIG_ANNOTATION, NODE_CONFIG_ANNOTATION,
)
from machineconfig.store.base import NodeRecord, Store

log = logging.getLogger(__name__)


def referenced(pools: Iterable[Mapping[str, Any]], nodes: Iterable[NodeRecord]) -> set[str]:
    """Every rendered config name a pool or a node still points at."""
    names: set[str] = set()
    for pool in pools:
        for part in ("spec", "status"):
            name = pool_configuration(pool, part).get("name")
            if name:
                names.add(str(name))
    for node in nodes:
        for key in (CURRENT_CONFIG_ANNOTATION, DESIRED_CONFIG_ANNOTATION,
                    NODE_CONFIG_ANNOTATION):
            name = node.annotations.get(key)
            if name:
                names.add(name)
    return names


def unreferenced(rendered: Iterable[str], pools: Iterable[Mapping[str, Any]],
                 nodes: Iterable[NodeRecord]) -> list[str]:
    keep = referenced(pools, nodes)
    return sorted(name for name in rendered if name not in keep)


def collect(store: Store) -> list[str]:
    """Delete unreferenced rendered configs; returns their names.

    Pools and nodes are read after the rendered list, so a config created meanwhile is either
    missing from the list or already referenced: never deleted while in use.
    """
    rendered = store.list_rendered()
    pools = store.list_objects("MachineConfigPool")
    nodes = store.list_nodes()
    deleted = []
    for name in unreferenced(rendered, pools, nodes):
        store.delete_rendered(name)
        log.info("rendered config %s: deleted, no pool or node refers to it", name)
        deleted.append(name)
    return deleted
