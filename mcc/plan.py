"""`mcc plan`'s core: for each pool and node, what the next rollout changes and what it costs.

The cost comes from the daemon's own decision (machineconfig.disruption: diff, node-disruption
actions, drain rule), applied to the node's current config and the pool's would-be target.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from machineconfig.api import object_name, pool_target
from machineconfig import disruption
from machineconfig.constants import (
    CURRENT_CONFIG_ANNOTATION, NODE_CONFIG_ANNOTATION, OVERLAYS_ANNOTATION,
)
from machineconfig import rollout
from machineconfig.errors import InputError, MachineConfigError
from machineconfig.reconcile import NotReconcilableError, check_reconcilable
from machineconfig.rendered_config import RenderedConfig
from machineconfig.store.base import NodeRecord
from mcc import windows

log = logging.getLogger(__name__)

JSON = dict[str, Any]
Lookup = Callable[[str], RenderedConfig]  # rendered config by name; raises MachineConfigError


@dataclass
class NodePlan:
    node: str
    current: str
    target: str
    cost: str  # "none", "reload crio.service", "drain, reboot", "unreconcilable: ...", ...
    changes: list[str] = field(default_factory=list)
    # per-node overlays (mcc.overlay): their names, how the node's own target differs from the
    # pool's, and why the node's own config does not render ("" when it does)
    overlays: list[str] = field(default_factory=list)
    overlay_changes: list[str] = field(default_factory=list)
    overlay_error: str = ""

    def to_dict(self) -> JSON:
        return {"node": self.node, "current": self.current, "target": self.target,
                "cost": self.cost, "changes": list(self.changes),
                "overlays": list(self.overlays), "overlayChanges": list(self.overlay_changes),
                "overlayError": self.overlay_error}


@dataclass
class PoolPlan:
    pool: str
    current: str  # spec.configuration.name today
    target: str  # what rendering the inputs now gives ("" when it fails)
    error: str = ""
    paused: bool = False
    max_unavailable: str = ""
    nodes: list[NodePlan] = field(default_factory=list)
    window: str = ""  # the maintenance window's state, "" without one (mcc.windows)

    def to_dict(self) -> JSON:
        return {"pool": self.pool, "current": self.current, "target": self.target,
                "error": self.error, "paused": self.paused,
                "maxUnavailable": self.max_unavailable,
                "maintenanceWindow": self.window,
                "nodes": [n.to_dict() for n in self.nodes]}


def changes_of(diff: disruption.MachineConfigDiff) -> list[str]:
    """One short line per changed section, for people."""
    out = []
    for flag, text in ((diff.os_update, "OS image"), (diff.kargs, "kernel arguments"),
                       (diff.kernel_type, "kernel type"), (diff.extensions, "extensions"),
                       (diff.fips, "FIPS"), (diff.passwd, "users/SSH keys")):
        if flag:
            out.append(text)
    for verb, paths in (("added", diff.files_added), ("changed", diff.files_changed),
                        ("removed", diff.files_removed)):
        out.extend(f"file {p} {verb}" for p in paths)
    for verb, names in (("added", diff.units_added), ("changed", diff.units_changed),
                        ("removed", diff.units_removed)):
        out.extend(f"unit {n} {verb}" for n in names)
    return out


def cost(old: RenderedConfig, new: RenderedConfig,
         policy: disruption.NodeDisruptionPolicy) -> tuple[str, list[str]]:
    """What moving a node from `old` to `new` costs, as the daemon would decide it."""
    try:
        check_reconcilable(old.object, new.object)
    except NotReconcilableError as e:
        return f"unreconcilable: {e.reason}", []
    diff = disruption.compute_diff(old.object, new.object)
    actions = disruption.post_config_actions(diff, policy)
    drain = disruption.drain_required(actions, old.ignition, new.ignition)
    words = [str(a) for a in actions if a.type is not disruption.ActionType.NONE]
    return ", ".join((["drain"] if drain else []) + words) or "none", changes_of(diff)


def is_disruptive(old: RenderedConfig, new: RenderedConfig,
                  policy: disruption.NodeDisruptionPolicy = disruption.DEFAULT_POLICY) -> bool:
    """Whether moving a node from `old` to `new` drains or reboots it (an unreconcilable move
    counts as disruptive: a maintenance window holds it too)."""
    try:
        check_reconcilable(old.object, new.object)
    except NotReconcilableError:
        return True
    diff = disruption.compute_diff(old.object, new.object)
    actions = disruption.post_config_actions(diff, policy)
    return any(a.type is disruption.ActionType.REBOOT for a in actions) or \
        disruption.drain_required(actions, old.ignition, new.ignition)


def plan_pool(pool: Mapping[str, Any], target: str, error: str, nodes: Sequence[NodeRecord],
              lookup: Lookup, policy: disruption.NodeDisruptionPolicy = disruption.DEFAULT_POLICY,
              now: datetime | None = None, node_targets: Mapping[str, str] | None = None,
              node_errors: Mapping[str, str] | None = None) -> PoolPlan:
    """Every member node's move to `target` (the pool's current config when `target` is "").
    With `now`, a pool's maintenance window (mcc.windows) says which moves wait for it.
    `node_targets`: the nodes that overlays select, to their own would-be config (the others
    move to the pool's); `node_errors`: nodes whose own config fails (they keep theirs)."""
    spec = pool.get("spec") or {}
    current = pool_target(pool)
    raw_max = spec.get("maxUnavailable")
    try:
        limit = str(rollout.max_unavailable(raw_max, len(nodes)))
    except rollout.MaxUnavailableError as e:
        limit = f"invalid ({e})"
    result = PoolPlan(object_name(pool), current, target, error,
                      bool(spec.get("paused")), limit)
    goal = target or current
    cache: dict[tuple[str, str], tuple[str, list[str]]] = {}  # many nodes share one move
    for node in sorted(nodes, key=lambda n: n.name):
        here = node.annotations.get(CURRENT_CONFIG_ANNOTATION, "")
        if not goal:
            result.nodes.append(NodePlan(node.name, here, "", "no rendered config"))
            continue
        if node.name in (node_errors or {}) or (error and NODE_CONFIG_ANNOTATION in
                                                node.annotations):
            # its own config fails (or its pool's does): it keeps the one it has
            own = node.annotations.get(NODE_CONFIG_ANNOTATION) or goal
        else:
            own = (node_targets or {}).get(node.name, goal)
        plan = _node_plan(node.name, here, own, lookup, policy, cache)
        if own != goal:
            _overlay_plan(plan, goal, own, lookup)
        plan.overlay_error = (node_errors or {}).get(node.name, "")
        result.nodes.append(plan)
    if now is not None:
        _plan_window(pool, result, lookup, policy, now)
    return result


def _overlay_plan(plan: NodePlan, pool_config: str, own: str, lookup: Lookup) -> None:
    """How the node's own target differs from its pool's."""
    try:
        mine = lookup(own)
        plan.overlays = [n for n in mine.annotations.get(OVERLAYS_ANNOTATION, "").split(",") if n]
        plan.overlay_changes = changes_of(disruption.compute_diff(lookup(pool_config).object,
                                                                  mine.object))
    except MachineConfigError as e:
        plan.overlay_changes = [f"unknown: {e}"]


def _node_plan(node: str, here: str, goal: str, lookup: Lookup,
               policy: disruption.NodeDisruptionPolicy,
               cache: dict[tuple[str, str], tuple[str, list[str]]]) -> NodePlan:
    """One node's move from `here` to `goal` and its cost (cached per move)."""
    if not here:
        return NodePlan(node, "", goal, "first boot")
    if here == goal:
        return NodePlan(node, here, goal, "none")
    key = (here, goal)
    if key not in cache:
        try:
            cache[key] = cost(lookup(here), lookup(goal), policy)
        except MachineConfigError as e:
            cache[key] = (f"unknown: {e}", [])
    verdict, changes = cache[key]
    return NodePlan(node, here, goal, verdict, list(changes))


def _plan_window(pool: Mapping[str, Any], result: PoolPlan, lookup: Lookup,
                 policy: disruption.NodeDisruptionPolicy, now: datetime) -> None:
    try:
        schedule = windows.schedule_of(pool)
    except InputError as e:
        result.window = f"unreadable, every update waits: {e}"
        return
    if schedule is None:
        return
    state = windows.state_at(schedule, now)
    waiting = []
    for node in result.nodes:
        if not node.current or node.current == node.target or not node.target:
            continue
        try:
            disruptive = is_disruptive(lookup(node.current), lookup(node.target), policy)
        except MachineConfigError:
            disruptive = True
        if not state.allows(disruptive):
            waiting.append(node.node)
            node.cost += "; waits for the maintenance window"
    result.window = windows.describe(state, waiting)


def format_text(plans: Sequence[PoolPlan]) -> str:
    lines = []
    for p in plans:
        head = f"pool {p.pool}: "
        if p.error:
            head += f"render fails: {p.error}; stays on {p.current or 'nothing'}"
        elif p.target and p.target != p.current:
            head += f"{p.current or 'nothing'} -> {p.target}"
        else:
            head += f"{p.current or 'nothing'} (no new rendered config)"
        head += f"; {len(p.nodes)} nodes, maxUnavailable {p.max_unavailable}"
        if p.paused:
            head += ", paused (nothing rolls out until unpaused)"
        lines.append(head)
        if p.window:
            lines.append(f"  {p.window}")
        for n in p.nodes:
            move = f"{n.current or '-'} -> {n.target}" if n.current != n.target else n.current
            lines.append(f"  {n.node}: {n.cost} ({move})")
            lines.extend(f"    {c}" for c in n.changes)
            if n.overlays or n.overlay_changes:
                lines.append(f"    own config (overlays {', '.join(n.overlays) or '?'}), "
                             f"differs from the pool's:")
                lines.extend(f"      {c}" for c in n.overlay_changes or ["nothing"])
            if n.overlay_error:
                lines.append(f"    own config fails, keeps {n.target}: {n.overlay_error}")
    return "\n".join(lines) + "\n"
