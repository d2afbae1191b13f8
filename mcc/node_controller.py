"""MCO's node controller, pure: pool membership, maxUnavailable, rollout candidates.

`reconcile_pool` maps one pool and its nodes to the desiredConfig patches of the next rollout
step (spec/mco.md 6.1-6.2); the store-facing loop in mcc.controller applies them.
"""
from __future__ import annotations

import heapq
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from machineconfig.api import object_name, pool_node_selector, pool_target
from machineconfig.constants import (
    CONTROL_PLANE_TOPOLOGY_ANNOTATION, CURRENT_CONFIG_ANNOTATION, DESIRED_CONFIG_ANNOTATION, DESIRED_IMAGE_ANNOTATION,
    MACHINE_CONFIG_DAEMON_STATE_ANNOTATION, NODE_CONFIG_ANNOTATION, STATE_DEGRADED, STATE_DONE,
    STATE_UNRECONCILABLE,
)
from machineconfig import labels, localdrain
from machineconfig.errors import MachineConfigError
from machineconfig.rollout import max_unavailable, target_of
from machineconfig.store.base import NodeRecord

log = logging.getLogger(__name__)

JSON = dict[str, Any]
MASTER_POOL = "master"
WORKER_POOL = "worker"
ZONE_LABEL = "topology.kubernetes.io/zone"
OS_LABEL = "kubernetes.io/os"
SELECTING_ALL_NODES = ("This machineconfigpool is selecting all nodes. "
                       "A non-empty selector is required.")
FAILING_STATES = frozenset({STATE_DEGRADED, STATE_UNRECONCILABLE})
# MCO's NodeUpdateInProgressTaint: on every node whose desiredConfig is not yet the pool's
# target, so that the scheduler prefers nodes that are already updated
UPDATE_IN_PROGRESS_TAINT = ("UpdateInProgress", "PreferNoSchedule")


class PoolMembershipError(MachineConfigError):
    """A node matches more than one custom pool."""


Patch = dict[str, str | None]  # annotation changes, None deletes


@dataclass
class PoolReconcile:
    """What one pass decided for one pool: annotation patches per node, events, why not more."""

    pool: str
    target: str
    max_unavailable: int = 0
    patches: dict[str, Patch] = field(default_factory=dict)
    targeted: list[str] = field(default_factory=list)  # nodes given the new desiredConfig
    # a targeted node's own config where overlays select it (mcc.overlay); else `target`
    node_targets: dict[str, str] = field(default_factory=dict)
    adopted: list[str] = field(default_factory=list)  # new nodes: desiredConfig = currentConfig
    events: list[tuple[str, str]] = field(default_factory=list)  # (reason, message)
    taints: dict[str, bool] = field(default_factory=dict)  # UpdateInProgress: add / remove
    skipped: str = ""  # why the pool was left alone ("" when the rollout ran)


# --- Node predicates: machineconfig.rollout (shared with the server's FleetLock) ---

def is_degraded(node: NodeRecord) -> bool:
    return node.annotations.get(MACHINE_CONFIG_DAEMON_STATE_ANNOTATION) in (
        STATE_DEGRADED, STATE_UNRECONCILABLE)


def targets(node: NodeRecord, target: str) -> bool:
    """The node's desiredConfig is already its target (the pool's `target`, or its own with
    overlays) and no layered image is pending."""
    a = node.annotations
    return a.get(DESIRED_CONFIG_ANNOTATION) == target_of(node, target) and \
        DESIRED_IMAGE_ANNOTATION not in a


# --- Pool membership (6.1) --------------------------------------------------------------------

def node_selector_is_everything(pool: Mapping[str, Any]) -> bool:
    selector = pool_node_selector(pool)
    return isinstance(selector, Mapping) and not selector.get("matchLabels") \
        and not selector.get("matchExpressions")


def pools_for_node(node: NodeRecord, selectors: Sequence[tuple[str, labels.Selector | None]]
                   ) -> list[str]:
    """GetPoolsForNode: the node's pools, primary first. Raises PoolMembershipError."""
    if node.labels.get(OS_LABEL) == "windows":
        return []
    master = worker = False
    custom: list[str] = []
    for name, selector in selectors:
        if selector is None or not selector.matches(node.labels):
            continue
        if name == MASTER_POOL:
            master = True
        elif name == WORKER_POOL:
            worker = True
        else:
            custom.append(name)
    if len(custom) > 1:
        raise PoolMembershipError(f"node {node.name} belongs to {len(custom)} custom roles, "
                                  "cannot proceed with this Node")
    if custom:
        # A node in master and a custom pool stays a master (MCO raises mcc_pool_alert).
        primary = [MASTER_POOL] if master else custom
        return primary + ([WORKER_POOL] if worker else [])
    if master:
        return [MASTER_POOL]
    return [WORKER_POOL] if worker else []


def assign_nodes(pools: Iterable[Mapping[str, Any]], nodes: Iterable[NodeRecord]
                 ) -> tuple[dict[str, list[NodeRecord]], dict[str, str]]:
    """Each pool's nodes (those whose primary pool it is) and the nodes that could not be placed
    (name -> error text)."""
    selectors = [(object_name(p), labels.pool_selector(p))
                 for p in pools]
    members: dict[str, list[NodeRecord]] = {name: [] for name, _ in selectors}
    errors: dict[str, str] = {}
    nodes = list(nodes)
    all_labels = [node.labels for node in nodes]
    # Column-wise: one comprehension per pool, then per node only the count of pools matched.
    hits = {name: sel.match_all(all_labels) for name, sel in selectors if sel is not None}
    counts = [sum(row) for row in zip(*hits.values())] if hits else [0] * len(nodes)
    for name, flags in hits.items():
        # The common case: a node in one pool has it as its primary pool.
        members[name] = [node for node, hit, count in zip(nodes, flags, counts)
                         if hit and count == 1 and node.labels.get(OS_LABEL) != "windows"]
    live = [(name, sel) for name, sel in selectors if sel is not None]
    for node, count in zip(nodes, counts):
        if count < 2:
            continue
        try:
            found = pools_for_node(node, live)
        except PoolMembershipError as e:
            errors[node.name] = str(e)
            continue
        if found:
            members[found[0]].append(node)
    return members, errors


def pool_alerts(pools: Iterable[Mapping[str, Any]], nodes: Iterable[NodeRecord]
                ) -> dict[str, int]:
    """mcc_pool_alert per node in exactly one custom pool: 1 when it also matches master (and
    so stays a master), else 0; nodes in no or several custom pools have no value (MCO's
    GetPoolsForNode)."""
    selectors = [(object_name(p), labels.pool_selector(p))
                 for p in pools]
    nodes = [n for n in nodes if n.labels.get(OS_LABEL) != "windows"]
    label_sets = [n.labels for n in nodes]
    hits = {name: sel.match_all(label_sets) for name, sel in selectors if sel is not None}
    masters = hits.get(MASTER_POOL) or [False] * len(nodes)
    custom = [flags for name, flags in hits.items() if name not in (MASTER_POOL, WORKER_POOL)]
    alerts: dict[str, int] = {}
    for i, node in enumerate(nodes):
        if sum(flags[i] for flags in custom) == 1:
            alerts[node.name] = 1 if masters[i] else 0
    return alerts


# --- Candidates (6.2.9) and the pass (6.2.10) --------------------------------------------------

def candidates(nodes: Sequence[NodeRecord], target: str, limit: int,
               hold: Collection[str] = (), also_unavailable: int = 0
               ) -> tuple[list[NodeRecord], int]:
    """getAllCandidateMachines: the nodes that may move to `target` (or to their own config,
    where overlays select them) and the capacity left.
    Nodes named in `hold` (waiting for a maintenance window) are never chosen;
    `also_unavailable` machines outside `nodes` take capacity (FleetLock slot holders).

    One loop with the predicates above inlined: this is the controller's hot path (10,000
    nodes per pass in bench/rollout.py).
    """
    unavailable, failing_this_config = also_unavailable, 0
    chosen: list[NodeRecord] = []
    for node in nodes:
        a = node.annotations
        current = a.get(CURRENT_CONFIG_ANNOTATION, "")
        desired = a.get(DESIRED_CONFIG_ANNOTATION, "")
        state = a.get(MACHINE_CONFIG_DAEMON_STATE_ANNOTATION)
        image = DESIRED_IMAGE_ANNOTATION in a
        ready = node.ready and not node.unschedulable
        failing = current != desired and state in FAILING_STATES
        if not ready or not (failing or (current and current == desired and state == STATE_DONE
                                         and not image)):
            unavailable += 1
        if desired == (a.get(NODE_CONFIG_ANNOTATION) or target) and not image:
            if failing:
                failing_this_config += 1
        elif ready and node.name not in hold:
            chosen.append(node)
    if unavailable >= limit:
        return [], 0
    capacity = limit - unavailable
    # A node failing on this very config may be a transient problem: if it clears we do not want
    # several nodes updating at once, so it keeps its slot.
    if failing_this_config >= capacity:
        return [], 0
    return chosen, capacity - failing_this_config


def rollout_order(nodes: Sequence[NodeRecord], count: int) -> list[NodeRecord]:
    """The first `count` nodes by zone ascending (nodes without a zone last), oldest first
    within a zone; the name breaks ties so that a pass is deterministic."""
    decorated = [(zone is None, zone or "", node.creation_timestamp, node.name, i)
                 for i, node in enumerate(nodes)
                 for zone in (node.labels.get(ZONE_LABEL),)]
    # A rollout step is usually a small slice of the pool: a bounded heap beats a full sort.
    first = heapq.nsmallest(count, decorated) if count * 4 < len(decorated) else \
        sorted(decorated)[:count]
    return [nodes[d[-1]] for d in first]


def belongs_to_pool(config: str, pool: str) -> bool:
    """Whether a rendered config name is one of `pool`'s: `rendered-<pool>-<digest>`, the digest
    without a dash (so `rendered-worker-gpu-<digest>` is pool worker-gpu's, not worker's)."""
    prefix = f"rendered-{pool}-"
    digest = config[len(prefix):]
    return config.startswith(prefix) and digest != "" and "-" not in digest and "/" not in digest


def _adopt(nodes: Sequence[NodeRecord], result: PoolReconcile) -> Sequence[NodeRecord]:
    """A node that joined with a currentConfig but no desiredConfig (the node API lets the daemon
    write only its own keys) gets desiredConfig = currentConfig: what MCO's node-annotations file
    gives a new node. Without it the node would count as unavailable forever.

    The node wrote its currentConfig itself: it is adopted only when it is a config of the pool
    the controller put the node in; otherwise (another pool's config, anything else) the node
    gets the pool's current config, so a node can never make another pool's config its desired
    one (what it may then read)."""
    view: list[NodeRecord] | None = None
    for i, node in enumerate(nodes):
        a = node.annotations
        if DESIRED_CONFIG_ANNOTATION in a or not a.get(CURRENT_CONFIG_ANNOTATION):
            continue
        if view is None:
            view = list(nodes)
        current = a[CURRENT_CONFIG_ANNOTATION]
        if not belongs_to_pool(current, result.pool):
            log.warning("node %s: currentConfig %r is not a config of pool %s: desiredConfig set "
                        "to %s", node.name, current[:300], result.pool, result.target)
            result.events.append(("ForeignConfig", f"Node {node.name} reported currentConfig "
                                  f"{current[:300]!r}, not a config of pool {result.pool}: "
                                  f"targeted to {result.target}"))
            current = result.target
        view[i] = replace(node, annotations={**a, DESIRED_CONFIG_ANNOTATION: current})
        result.patches.setdefault(node.name, {})[DESIRED_CONFIG_ANNOTATION] = current
        result.adopted.append(node.name)
    return nodes if view is None else view


def _publish_local_drain(pool: Mapping[str, Any], nodes: Sequence[NodeRecord],
                         result: PoolReconcile) -> None:
    """Each node's local drain (machineconfig.localdrain), copied from the pool's annotation
    to the node, where its daemon reads it; paused or not, as the policy is no rollout."""
    published = localdrain.publisher(pool)  # the annotation parsed once per pass
    for node in nodes:
        wanted = published(node.name)
        if node.annotations.get(localdrain.NODE_ANNOTATION) != wanted:
            result.patches.setdefault(node.name, {})[localdrain.NODE_ANNOTATION] = wanted


def reconcile_pool(pool: Mapping[str, Any], nodes: Sequence[NodeRecord], topology: str = "",
                   controller_node: str = "", hold: Collection[str] = (),
                   lock_holders: int = 0) -> PoolReconcile:
    """One pass of the node controller over one pool and its member nodes; `topology` is the
    ControllerConfig's controlPlaneTopology, copied onto every node ("" leaves them alone).
    `controller_node` runs the controller: in the master pool it is updated last (MCO defers
    the node running its operator while any other candidate is left). Nodes in `hold` wait
    for the pool's maintenance window (mcc.windows): they are not targeted. `lock_holders`
    machines hold the pool's FleetLock reboot slots without being its updating nodes: they count
    against maxUnavailable (mcs.fleetlock)."""
    name = object_name(pool)
    spec = pool.get("spec") or {}
    target = pool_target(pool)
    result = PoolReconcile(name, target)
    if not target:
        result.skipped = "no rendered configuration yet"
        return result
    if node_selector_is_everything(pool):
        result.events.append(("SelectingAll", SELECTING_ALL_NODES))
        result.skipped = "nodeSelector selects every node"
        return result
    nodes = _adopt(nodes, result)
    _publish_local_drain(pool, nodes, result)
    if spec.get("paused"):
        result.skipped = "paused"
        return result
    result.max_unavailable = max_unavailable(spec.get("maxUnavailable"), len(nodes))
    if topology:
        for node in nodes:
            if node.annotations.get(CONTROL_PLANE_TOPOLOGY_ANNOTATION) != topology:
                # added to the node's patch: an adoption above must not be dropped
                result.patches.setdefault(node.name, {})[CONTROL_PLANE_TOPOLOGY_ANNOTATION] = topology
    key, effect = UPDATE_IN_PROGRESS_TAINT
    for node in nodes:
        # decided on the annotations read, before this pass targets anyone: a node targeted now
        # loses the taint on the next pass (MCO's order)
        a = node.annotations  # `targets`, inlined: every node of the pool, every pass
        waiting = a.get(DESIRED_CONFIG_ANNOTATION) != (a.get(NODE_CONFIG_ANNOTATION) or target) \
            or DESIRED_IMAGE_ANNOTATION in a
        if waiting != node.has_taint(key, effect):
            result.taints[node.name] = waiting
    chosen, capacity = candidates(nodes, target, result.max_unavailable, hold, lock_holders)
    if name == MASTER_POOL and controller_node and len(chosen) > 1:
        if any(node.name == controller_node for node in chosen):
            chosen = [node for node in chosen if node.name != controller_node]
            result.events.append(("DeferringOperatorNodeUpdate",
                                  f"Deferring update of machine config operator node "
                                  f"{controller_node}"))
    if len(chosen) > capacity:
        chosen = rollout_order(chosen, capacity)
    by_target: dict[str, list[str]] = {}
    for node in chosen:
        own = target_of(node, target)
        patch = result.patches.setdefault(node.name, {})
        patch[DESIRED_CONFIG_ANNOTATION] = own
        if DESIRED_IMAGE_ANNOTATION in node.annotations:
            patch[DESIRED_IMAGE_ANNOTATION] = None
        result.targeted.append(node.name)
        result.node_targets[node.name] = own
        by_target.setdefault(own, []).append(node.name)
    # MCO's texts, one event per config: nodes with overlays have their own
    for config, names in by_target.items():
        if len(names) == 1:
            result.events.append(("SetDesiredConfig",
                                  f"Targeted node {names[0]} to MachineConfig: {config}"))
        else:
            result.events.append(("SetDesiredConfig",
                                  f"Set target for {len(names)} nodes to MachineConfig: {config}"))
    return result
