"""The controller's half of the MachineConfigNodes (machineconfig.machine_config_node): one per
node of a pool, created with the node's pool and desiredConfig in its spec and the Node as its
owner (as MCO's node controller does), the spec kept in step with the rollout, and deleted when
the node is gone. The status is each node's daemon's (mcd.node_progress).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from machineconfig import machine_config_node as mcn
from machineconfig.constants import DESIRED_CONFIG_ANNOTATION
from machineconfig.store.base import (ForbiddenError, MachineConfigNodes, NodeRecord,
                                       NotFoundError, Store)

log = logging.getLogger(__name__)
_unavailable_logged: list[str] = []  # warned once per process


def wanted(members: Mapping[str, Sequence[NodeRecord]],
           patches: Mapping[str, Mapping[str, str | None]]) -> dict[str, dict[str, Any]]:
    """Node name -> the MachineConfigNode it should have: one per node of a pool, with the
    desiredConfig the node has once this pass's patches are written."""
    out = {}
    for pool, nodes in members.items():
        for node in nodes:
            patched = patches.get(node.name, {})
            desired = patched.get(DESIRED_CONFIG_ANNOTATION) if \
                DESIRED_CONFIG_ANNOTATION in patched else \
                node.annotations.get(DESIRED_CONFIG_ANNOTATION)
            out[node.name] = mcn.new_object(node.name, pool, desired or "", node.uid)
    return out


def _differs(have: Mapping[str, Any], want: Mapping[str, Any]) -> bool:
    if have.get("spec") != want.get("spec"):
        return True
    owners = want["metadata"].get("ownerReferences")
    return owners is not None and (have.get("metadata") or {}).get("ownerReferences") != owners


def sync(store: Store, members: Mapping[str, Sequence[NodeRecord]],
         patches: Mapping[str, Mapping[str, str | None]], nodes: Iterable[NodeRecord]
         ) -> list[str]:
    """Create or update each pool member's MachineConfigNode and delete those of nodes that no
    longer exist; returns what it wrote ("created NAME", "updated NAME", "deleted NAME")."""
    if not isinstance(store, MachineConfigNodes):
        return []
    try:
        listed = store.list_machine_config_nodes()
    except (NotFoundError, ForbiddenError) as e:
        # a cluster without the CRD (or an older role): the rollout goes on without them
        if not _unavailable_logged:
            log.warning("no MachineConfigNodes written: %s", e)
            _unavailable_logged.append(str(e))
        return []
    existing = {str(o["metadata"]["name"]): o for o in listed
                if isinstance(o.get("metadata"), dict)}
    done = []
    for name, want in wanted(members, patches).items():
        have = existing.get(name)
        if have is not None and not _differs(have, want):
            continue
        store.put_machine_config_node(want)
        verb = "created" if have is None else "updated"
        log.info("MachineConfigNode %s %s: pool %s, desired %s", name, verb,
                 want["spec"]["pool"]["name"], want["spec"]["configVersion"]["desired"])
        done.append(f"{verb} {name}")
    live = {node.name for node in nodes}
    for name in sorted(set(existing) - live):
        store.delete_machine_config_node(name)
        log.info("MachineConfigNode %s deleted: its node is gone", name)
        done.append(f"deleted {name}")
    return done
