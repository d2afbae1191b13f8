"""Status at a glance: pools (machine counts, current and target rendered config, maintenance
window), nodes (state, config, reason), FleetLock reboot slots held, recent events and drift
alerts, read from any store.

One model for `mcc status` (a table, or JSON) and mcs's status page (`/status.json`). Counts come
from the node records themselves, with the rollout predicates the controller uses, so a page
loaded mid-rollout shows where the nodes are now, not the controller's last pass.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from machineconfig.api import object_name, pool_configuration, pool_target
from machineconfig import labels
from machineconfig.clock import rfc3339
from machineconfig.constants import (
    CURRENT_CONFIG_ANNOTATION, DESIRED_CONFIG_ANNOTATION, DRAIN_REASON_ANNOTATION,
    MACHINE_CONFIG_DAEMON_REASON_ANNOTATION, MACHINE_CONFIG_DAEMON_STATE_ANNOTATION,
    MAINTENANCE_WINDOW_CONDITION, POOL_DEGRADED_CONDITION, STATE_DEGRADED, STATE_UNRECONCILABLE,
)
from machineconfig.rollout import is_done, is_unavailable
from machineconfig.store.base import (MACHINE_CONFIG_POOL, NodeRecord, RebootLock, RebootLocks,
                                      Store, StoreEvent)

MASTER_POOL, WORKER_POOL = "master", "worker"
OS_LABEL = "kubernetes.io/os"
DRIFT_REASON = "ConfigDriftDetected"  # the daemon's event (mcd.daemon) when the disk drifted
RECENT_EVENTS = 20
MAX_TEXT = 2000  # a reason or message comes from a node: bounded, as the daemon bounds its own

# A node's phase in its pool, in the words of the table
UPDATED, UPDATING, DEGRADED, WAITING = "Updated", "Updating", "Degraded", "Waiting"


@dataclass(frozen=True)
class PoolView:
    name: str
    machines: int
    updated: int
    updating: int
    degraded: int
    ready: int
    unavailable: int
    current_config: str  # status.configuration: what every node ran at the last completed rollout
    target_config: str  # spec.configuration: what the pool rolls out
    paused: bool
    window: str  # the maintenance window's state ("" without one), as the controller last saw it
    degraded_message: str  # the pool's Degraded condition ("" when not degraded)

    @property
    def progress(self) -> float:
        return self.updated / self.machines if self.machines else 1.0


@dataclass(frozen=True)
class NodeView:
    name: str
    pool: str  # "" when in no pool (or in pools that cannot be told apart)
    phase: str  # UPDATED, UPDATING, DEGRADED or WAITING
    state: str  # the daemon's state annotation ("" before it reported one)
    current_config: str
    desired_config: str
    reason: str  # the daemon's reason, else why a drain is blocked, else why it is in no pool
    ready: bool
    cordoned: bool


@dataclass(frozen=True)
class EventView:
    time: str
    type: str  # Normal or Warning
    kind: str
    name: str
    reason: str
    message: str
    count: int = 1


@dataclass(frozen=True)
class DriftAlert:
    node: str
    time: str
    message: str
    active: bool  # the node is still Degraded (the monitor has not seen the disk fixed)


@dataclass(frozen=True)
class RebootSlotView:
    """A FleetLock reboot slot held (mcs.fleetlock): slots never expire, so a holder that took
    one and never came back keeps it until it unlocks or an admin releases it."""

    group: str
    holder: str  # the client's FleetLock id (a node name for this project's daemons)
    since: str  # RFC 3339, UTC (how long is the reader's sum, against `generated`: held_for)
    node_state: str  # the daemon's state of the node named `holder` ("" when no such node)


@dataclass(frozen=True)
class StatusModel:
    generated: str  # RFC 3339, UTC
    pools: list[PoolView] = field(default_factory=list)
    nodes: list[NodeView] = field(default_factory=list)
    events: list[EventView] = field(default_factory=list)
    drift: list[DriftAlert] = field(default_factory=list)
    reboot_slots: list[RebootSlotView] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON with Kubernetes-style camelCase keys (as `mcc plan -o json`)."""
        doc = asdict(self)
        for pool, view in zip(doc["pools"], self.pools):
            pool["progress"] = round(view.progress, 4)
        return {_camel_key(key): [_camel(item) for item in value] if isinstance(value, list)
                else value for key, value in doc.items()}


def _camel_key(key: str) -> str:
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), key)


def _camel(item: dict[str, Any]) -> dict[str, Any]:
    return {_camel_key(k): v for k, v in item.items()}


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."


def pool_of(pools: Sequence[Mapping[str, Any]], node: NodeRecord) -> tuple[str, str]:
    """(the node's pool, "") or ("", why it has none): one pool alone, or a master or custom pool
    with worker (custom pools and schedulable masters carry the worker role too); a master with
    a custom pool stays a master, as in MCO."""
    if node.labels.get(OS_LABEL) == "windows":
        return "", "a Windows node (no pool manages it)"
    matched = sorted(object_name(p) for p in pools if labels.pool_selects(p, node.labels))
    custom = [p for p in matched if p not in (MASTER_POOL, WORKER_POOL)]
    if not matched:
        return "", "selected by no pool"
    if len(custom) > 1:
        return "", f"selected by several custom pools: {', '.join(custom)}"
    if MASTER_POOL in matched:
        return MASTER_POOL, ""
    return (custom[0] if custom else matched[0]), ""


def node_phase(node: NodeRecord, target: str) -> str:
    a = node.annotations
    if a.get(MACHINE_CONFIG_DAEMON_STATE_ANNOTATION) in (STATE_DEGRADED, STATE_UNRECONCILABLE):
        return DEGRADED
    if is_done(node) and a.get(CURRENT_CONFIG_ANNOTATION) == target:
        return UPDATED
    # told to move (desired differs from current) or the daemon at work; else done on another
    # config than the pool's target: waiting for its turn (or its maintenance window)
    return WAITING if is_done(node) else UPDATING


def find_condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    """The condition of type `kind` among an object's `status.conditions`, None without one."""
    for cond in status.get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == kind:
            return cond
    return None


def _node_view(node: NodeRecord, pool: str, target: str, why_no_pool: str) -> NodeView:
    a = node.annotations
    reason = a.get(MACHINE_CONFIG_DAEMON_REASON_ANNOTATION, "") or \
        a.get(DRAIN_REASON_ANNOTATION, "") or why_no_pool
    return NodeView(name=node.name, pool=pool, phase=node_phase(node, target),
                    state=a.get(MACHINE_CONFIG_DAEMON_STATE_ANNOTATION, ""),
                    current_config=a.get(CURRENT_CONFIG_ANNOTATION, ""),
                    desired_config=a.get(DESIRED_CONFIG_ANNOTATION, ""),
                    reason=_bounded(reason), ready=node.ready, cordoned=node.unschedulable)


def _pool_view(pool: Mapping[str, Any], members: Sequence[NodeRecord],
               phases: Sequence[str]) -> PoolView:
    spec, status = pool.get("spec") or {}, pool.get("status") or {}
    window = find_condition(status, MAINTENANCE_WINDOW_CONDITION)
    degraded = find_condition(status, POOL_DEGRADED_CONDITION)
    degraded_message = str(degraded.get("message") or degraded.get("reason") or "") \
        if degraded is not None and degraded.get("status") == "True" else ""
    return PoolView(
        name=object_name(pool), machines=len(members), updated=phases.count(UPDATED),
        updating=phases.count(UPDATING), degraded=phases.count(DEGRADED),
        ready=sum(1 for n, p in zip(members, phases)
                  if p == UPDATED and n.ready and not n.unschedulable),
        unavailable=sum(1 for n in members if is_unavailable(n)),
        current_config=str(pool_configuration(pool, "status").get("name") or ""),
        target_config=pool_target(pool), paused=bool(spec.get("paused")),
        window=_bounded(str(window.get("message") or "")) if window is not None else "",
        degraded_message=_bounded(degraded_message))


def _event_view(event: StoreEvent) -> EventView:
    return EventView(time=event.time, type=event.type, kind=event.kind, name=event.name,
                     reason=event.reason, message=_bounded(event.message), count=event.count)


class EventTail:
    """The recent events and each node's last drift report, kept current from
    `list_events(since_seq=...)`, so a page polled every few seconds reads only what is new (a
    local store keeps up to 100 000 events). A repeat of an event (same object, reason and
    message; the kube store moves a counted event to the end) replaces its earlier copy."""

    def __init__(self, recent: int = RECENT_EVENTS) -> None:
        self.recent_size = max(recent, 0)
        self.seq = 0
        self._recent: dict[tuple[str, str, str, str], StoreEvent] = {}
        self._drift: dict[str, StoreEvent] = {}

    def update(self, events: Iterable[StoreEvent]) -> None:
        for event in sorted(events, key=lambda e: e.seq):
            if event.seq <= self.seq:
                continue
            self.seq = event.seq
            if event.kind == "Node" and event.reason == DRIFT_REASON:
                self._drift[event.name] = event
            if self.recent_size:
                key = (event.kind, event.name, event.reason, event.message)
                self._recent.pop(key, None)
                self._recent[key] = event
                if len(self._recent) > self.recent_size:
                    del self._recent[next(iter(self._recent))]  # the oldest

    def recent(self) -> list[StoreEvent]:
        """Newest first."""
        return list(reversed(self._recent.values()))

    def drift_alerts(self, nodes: Mapping[str, NodeView]) -> list[DriftAlert]:
        """Each node's last drift report, newest first; active while the node is Degraded."""
        alerts = [DriftAlert(node=e.name, time=e.time, message=_bounded(e.message),
                             active=e.name in nodes and nodes[e.name].phase == DEGRADED)
                  for e in self._drift.values()]
        return sorted(alerts, key=lambda a: a.time, reverse=True)


def held_for(since: str, now: datetime | str) -> str:
    """How long ago `since` (RFC 3339) was, in its two largest units; "?" when unreadable."""
    try:
        then, now = (_instant(t) for t in (since, now))
    except ValueError:
        return "?"
    seconds = max(int((now - then).total_seconds()), 0)
    parts = [(seconds // 86400, "d"), (seconds % 86400 // 3600, "h"),
             (seconds % 3600 // 60, "m"), (seconds % 60, "s")]
    while len(parts) > 1 and parts[0][0] == 0:
        parts.pop(0)
    return " ".join(f"{value}{unit}" for value, unit in parts[:2])


def _instant(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _slot_view(lock: RebootLock, nodes: Mapping[str, NodeView]) -> RebootSlotView:
    node = nodes.get(lock.holder)
    return RebootSlotView(group=_bounded(lock.group), holder=_bounded(lock.holder),
                          since=lock.since, node_state=node.state if node is not None else "")


def build(pools: Sequence[Mapping[str, Any]], nodes: Sequence[NodeRecord],
          events: Sequence[StoreEvent] | EventTail, now: datetime,
          recent: int = RECENT_EVENTS, reboot_locks: Sequence[RebootLock] = ()) -> StatusModel:
    """The model from what a store holds (pure); `events` may be an EventTail kept current."""
    if isinstance(events, EventTail):
        tail = events
    else:
        tail = EventTail(recent)
        tail.update(events)
    targets = {object_name(p): pool_target(p)
               for p in pools}
    members: dict[str, list[NodeRecord]] = {name: [] for name in targets}
    phases: dict[str, list[str]] = {name: [] for name in targets}
    views: dict[str, NodeView] = {}
    for node in sorted(nodes, key=lambda n: n.name):
        pool, why = pool_of(pools, node)
        view = _node_view(node, pool, targets.get(pool, ""), why)
        views[node.name] = view
        if pool in members:
            members[pool].append(node)
            phases[pool].append(view.phase)
    pool_views = [_pool_view(p, members[object_name(p)], phases[object_name(p)])
                  for p in sorted(pools, key=object_name)]
    return StatusModel(
        generated=rfc3339(now),
        pools=pool_views, nodes=list(views.values()),
        events=[_event_view(e) for e in tail.recent()], drift=tail.drift_alerts(views),
        reboot_slots=[_slot_view(lock, views) for lock in
                      sorted(reboot_locks, key=lambda l: (l.since, l.group, l.holder))])


def read(store: Store, now: datetime | None = None, recent: int = RECENT_EVENTS,
         tail: EventTail | None = None) -> StatusModel:
    """The model of what `store` holds now; with `tail`, only the events since its last read
    are listed (it is updated). Raises StoreError."""
    if tail is None:
        tail = EventTail(recent)
    pools, nodes = store.list_objects(MACHINE_CONFIG_POOL), store.list_nodes()
    tail.update(store.list_events(since_seq=tail.seq))
    # FleetLock slots live in the local store only (mcs serves them); other stores have none
    locks = store.list_reboot_locks() if isinstance(store, RebootLocks) else []
    return build(pools, nodes, tail, now or datetime.now(timezone.utc), reboot_locks=locks)


def _cell(text: str, width: int) -> str:
    # One line per row whatever a node wrote: control characters become spaces
    clean = "".join(c if c.isprintable() else " " for c in text)
    return clean if len(clean) <= width else clean[:width - 1] + "~"


def format_text(model: StatusModel, reason_width: int = 80) -> str:
    """The table of `mcc status`."""
    pool_rows = [("POOL", "MACHINES", "UPDATED", "UPDATING", "DEGRADED", "READY", "CURRENT",
                  "TARGET", "WINDOW")]
    for p in model.pools:
        target = p.target_config + (" (paused)" if p.paused else "")
        pool_rows.append((p.name, str(p.machines), str(p.updated), str(p.updating),
                          str(p.degraded), str(p.ready), p.current_config or "-",
                          target or "-", _cell(p.window, 100) or "-"))
    node_rows = [("NODE", "POOL", "PHASE", "STATE", "CURRENT", "DESIRED", "REASON")]
    for n in model.nodes:
        state = n.state or "-"
        if n.cordoned:
            state += ",cordoned"
        if not n.ready:
            state += ",notready"
        node_rows.append((_cell(n.name, 63), n.pool or "-", n.phase, state,
                          n.current_config or "-", n.desired_config or "-",
                          _cell(n.reason, reason_width) or "-"))
    out = _table(pool_rows) + "\n" + _table(node_rows)
    if model.reboot_slots:
        slot_rows = [("FLEETLOCK GROUP", "HOLDER", "SINCE", "HELD FOR", "NODE STATE")]
        slot_rows += [(_cell(r.group, 63), _cell(r.holder, 63), _cell(r.since, 40),
                       held_for(r.since, model.generated), _cell(r.node_state, 40) or "-")
                      for r in model.reboot_slots]
        out += "\n" + _table(slot_rows)
    if model.drift:
        out += "\nDRIFT\n" + "".join(
            f"  {a.time}  {_cell(a.node, 63)}  {'active' if a.active else 'resolved'}  "
            f"{_cell(a.message, reason_width)}\n" for a in model.drift)
    return out


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n"
                   for row in rows)
