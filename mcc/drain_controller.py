"""MCO's drain controller on the local store: the desiredDrain/lastAppliedDrain handshake.

There is no scheduler, so a drain is a cordon mark; an uncordon clears only a cordon this
controller made (recorded in the cordonedByMCC annotation), never an administrator's.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from machineconfig.constants import (
    CORDONED_BY_MCC_ANNOTATION, DESIRED_DRAIN_ANNOTATION, LAST_APPLIED_DRAIN_ANNOTATION,
)
from machineconfig.errors import MachineConfigError
from machineconfig.store.base import NodeRecord, Store

log = logging.getLogger(__name__)

DRAIN, UNCORDON = "drain", "uncordon"


class DrainVerbError(MachineConfigError):
    """desiredDrain names neither a drain nor an uncordon."""


@dataclass(frozen=True)
class DrainRequest:
    node: str
    verb: str
    desired: str  # the full desiredDrain value, echoed into lastAppliedDrain when done


def pending_requests(nodes: Iterable[NodeRecord]) -> list[DrainRequest]:
    """Nodes whose desiredDrain has not been acknowledged yet."""
    out = []
    for node in nodes:
        desired = node.annotations.get(DESIRED_DRAIN_ANNOTATION, "")
        if desired and desired != node.annotations.get(LAST_APPLIED_DRAIN_ANNOTATION, ""):
            out.append(DrainRequest(node.name, desired.split("-", 1)[0], desired))
    return out


def verb_error(request: DrainRequest) -> str:
    return f"node {request.node}: non-recognized drain verb detected {request.verb}"


def apply(store: Store, request: DrainRequest) -> None:
    """Carry out one request on the store. Raises DrainVerbError, StoreError."""
    if request.verb == DRAIN:
        node = store.get_node(request.node)
        if not node.unschedulable:
            # Mark first: a crash between the two writes then leaves a mark without a cordon
            # (harmless) rather than a cordon nobody will lift.
            store.patch_node_annotations(request.node, {CORDONED_BY_MCC_ANNOTATION: "true"})
            node = store.set_unschedulable(request.node, True)
            log.info("node %s: cordoned for %s (no pods to evict on the local store)",
                     request.node, request.desired)
        else:
            log.info("node %s: already unschedulable, drain %s acknowledged", request.node,
                     request.desired)
        if node.unschedulable:
            store.patch_node_annotations(request.node,
                                         {LAST_APPLIED_DRAIN_ANNOTATION: request.desired})
        return
    if request.verb == UNCORDON:
        node = store.get_node(request.node)
        if CORDONED_BY_MCC_ANNOTATION in node.annotations:
            if node.unschedulable:
                store.set_unschedulable(request.node, False)
            log.info("node %s: uncordoned (%s)", request.node, request.desired)
        elif node.unschedulable:
            log.info("node %s: left cordoned, the cordon is not ours (%s)", request.node,
                     request.desired)
        store.patch_node_annotations(request.node, {CORDONED_BY_MCC_ANNOTATION: None,
                                                    LAST_APPLIED_DRAIN_ANNOTATION: request.desired})
        return
    raise DrainVerbError(verb_error(request))


def sync(store: Store, nodes: Iterable[NodeRecord]) -> dict[str, str]:
    """Handle every pending request; returns the errors by node name."""
    errors = {}
    for request in pending_requests(nodes):
        try:
            apply(store, request)
        except MachineConfigError as e:
            log.warning("node %s: drain request %s failed: %s", request.node, request.desired, e)
            errors[request.node] = str(e)
    return errors
