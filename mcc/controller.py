"""The controller loop: on every store change (or every `interval` seconds) one pass of
render -> node rollout -> drain -> pool status -> garbage collection, each a module of its own.

`Controller.run_pass` is one pass; `Controller.run` loops until stopped (SIGTERM in `mcc start`).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from machineconfig.api import object_name, pool_target
from machineconfig.constants import CURRENT_CONFIG_ANNOTATION, DESIRED_CONFIG_ANNOTATION
from machineconfig import disruption, rollout
from machineconfig.clock import now_rfc3339, parse_rfc3339, rfc3339
from machineconfig.errors import InputError, MachineConfigError
from machineconfig.sdnotify import notify
from machineconfig.store.base import (
    CONTROLLER_CONFIG, MACHINE_CONFIG_POOL, MACHINE_CONFIGURATION, NodeRecord, RebootLocks,
    Store,
)
from mcc import drain_controller, gc, machine_config_nodes, node_controller, plan, pool_status, windows
from mcc.metrics import POOLS, PoolMetrics
from mcc.render_controller import RenderController
from mcc.template import DEFAULT_TEMPLATES_DIR

log = logging.getLogger(__name__)

MACHINE_CONFIGURATION_NAME = "cluster"  # the one MachineConfiguration MCO reads

# Longest single wait on the store, so a stop request is seen within this many seconds.
WAIT_SLICE = 1.0


@dataclass
class PassReport:
    """What one pass did (for tests and the --once summary)."""

    rendered: bool = False
    render_errors: dict[str, str] = field(default_factory=dict)
    targeted: dict[str, str] = field(default_factory=dict)  # node -> desiredConfig set
    drain_errors: dict[str, str] = field(default_factory=dict)
    statuses_written: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    machine_config_nodes: list[str] = field(default_factory=list)  # created/updated/deleted NAME
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class WindowReport:
    """A pool's maintenance window in the last pass: its state (None when unreadable) and its
    pool condition (open, reason, message)."""

    state: windows.WindowState | None
    condition: tuple[bool, str, str]


class Controller:
    def __init__(self, store: Store, templates_dir: Path = DEFAULT_TEMPLATES_DIR,
                 values: Mapping[str, Any] | None = None, gc_enabled: bool = True,
                 now: Callable[[], str] = now_rfc3339, node_name: str = "",
                 metrics: PoolMetrics = POOLS) -> None:
        self.store = store
        self.metrics = metrics
        self.node_name = node_name  # the node this controller runs on ("" when unknown)
        self.now = now
        self.gc_enabled = gc_enabled
        self.render = RenderController(store, templates_dir, values, now)
        self.drain = drain_controller.DrainController(store)
        self._windows: dict[str, WindowReport] = {}  # pool -> its window in the last pass
        # the cluster's node disruption policies (MachineConfiguration `cluster`, or MCO's)
        self.policy: disruption.NodeDisruptionPolicy = disruption.DEFAULT_POLICY
        # Warnings already reported (SelectingAll, membership and maxUnavailable errors): a pass
        # runs on every change, an event per pass would drown the real ones.
        self._reported: set[tuple[str, str, str]] = set()

    def _event_once(self, kind: str, name: str, reason: str, message: str,
                    type: str = "Warning") -> None:
        key = (name, reason, message)
        if key in self._reported:
            return
        self._reported.add(key)
        self.store.record_event(kind, name, reason, message, type)

    def run_pass(self) -> PassReport:
        report = PassReport()
        steps: list[tuple[str, Callable[[PassReport], None]]] = [
            ("render", self._render), ("policy", self._policy), ("node", self._nodes),
            ("drain", self._drain), ("status", self._status)]
        if self.gc_enabled:
            steps.append(("gc", self._gc))
        for name, step in steps:
            try:
                step(report)
            except MachineConfigError as e:
                # The next pass retries; the other steps still run on what the store holds.
                log.warning("%s step failed: %s", name, e)
                report.errors.append(f"{name}: {e}")
        return report

    def _policy(self, report: PassReport) -> None:
        """MCO's MachineConfiguration `cluster`: its spec.nodeDisruptionPolicy merged with the
        default policies, published in status.nodeDisruptionPolicyStatus.clusterPolicies (with
        observedGeneration) as MCO's operator does, and used for the rollout's own decisions. A
        policy that does not parse keeps the last good one published (event, log)."""
        found = [o for o in self.store.list_objects(MACHINE_CONFIGURATION)
                 if isinstance(o.get("metadata"), dict)
                 and o["metadata"].get("name") == MACHINE_CONFIGURATION_NAME]
        if not found:
            self.policy = disruption.DEFAULT_POLICY
            return
        obj = found[0]
        try:
            merged = disruption.merge_policies(disruption.DEFAULT_POLICY,
                                               disruption.parse_policy(obj))
        except disruption.PolicyError as e:
            log.warning("MachineConfiguration %s: %s", MACHINE_CONFIGURATION_NAME, e)
            self._event_once(MACHINE_CONFIGURATION, MACHINE_CONFIGURATION_NAME,
                             "InvalidNodeDisruptionPolicy",
                             f"{e}; the last good node disruption policies stay in force")
            return
        self.policy = merged
        status = dict(obj["status"]) if isinstance(obj.get("status"), dict) else {}
        generation = obj["metadata"].get("generation")
        want = {**status, "nodeDisruptionPolicyStatus": {
            "clusterPolicies": disruption.policy_status(merged)}}
        if isinstance(generation, int):
            want["observedGeneration"] = generation
        if want != status:
            self.store.update_status(MACHINE_CONFIGURATION, MACHINE_CONFIGURATION_NAME, want)
            log.info("MachineConfiguration %s: node disruption policies published "
                     "(%d file, %d unit policies)", MACHINE_CONFIGURATION_NAME,
                     len(merged.files), len(merged.units))

    def _render(self, report: PassReport) -> None:
        result = self.render.sync()
        if result is None:
            return
        report.rendered = True
        report.render_errors = dict(result.errors)

    def _nodes(self, report: PassReport) -> None:
        pools = self.store.list_objects(MACHINE_CONFIG_POOL)
        all_nodes = self.store.list_nodes()
        members, errors = node_controller.assign_nodes(pools, all_nodes)
        patched: dict[str, Mapping[str, str | None]] = {}
        topology = ""
        for cc in self.store.list_objects(CONTROLLER_CONFIG):
            infra = (cc.get("spec") or {}).get("infra") or {}
            topology = str((infra.get("status") or {}).get("controlPlaneTopology") or "")
        for node, error in errors.items():
            log.warning("node %s skipped: %s", node, error)
            self._event_once("Node", node, "PoolMembership", error)
        now = parse_rfc3339(self.now())
        self._windows = {}
        locks = self.store.list_reboot_locks() if isinstance(self.store, RebootLocks) else []
        for pool in pools:
            name = object_name(pool)
            hold = self._window_hold(pool, members.get(name, []), now)
            # FleetLock slot holders (Zincati hosts, say) share the pool's maxUnavailable; a
            # member that is updating anyway is counted once
            groups = rollout.groups_of_pool(name)
            updating = {n.name for n in members.get(name, []) if rollout.is_unavailable(n)}
            holders = {lock.holder for lock in locks if lock.group in groups} - updating
            try:
                result = node_controller.reconcile_pool(pool, members.get(name, []), topology,
                                                        self.node_name, hold, len(holders))
            except rollout.MaxUnavailableError as e:
                log.warning("pool %s: no rollout: %s", name, e)
                self._event_once(MACHINE_CONFIG_POOL, name, "InvalidMaxUnavailable", str(e))
                continue
            if result.skipped:
                log.debug("pool %s: no rollout: %s", name, result.skipped)
            key, effect = node_controller.UPDATE_IN_PROGRESS_TAINT
            for node, present in result.taints.items():
                self.store.set_node_taint(node, key, effect, present)
                log.info("node %s: %s taint %s:%s", node, "added" if present else "removed",
                         key, effect)
            for node, patch in result.patches.items():
                self.store.patch_node_annotations(node, patch)
                patched[node] = patch
                if node not in result.targeted:
                    if node in result.adopted:
                        log.info("node %s: new in pool %s, desiredConfig = its currentConfig",
                                 node, name)
                    else:
                        log.info("node %s: controlPlaneTopology set to %s", node, topology)
                    continue
                own = result.node_targets.get(node, result.target)
                report.targeted[node] = own
                log.info("pool %s: node %s -> desiredConfig %s (maxUnavailable %d)", name, node,
                         own, result.max_unavailable)
                self.store.record_event("Node", node, "SetDesiredConfig",
                                        f"Targeted node {node} to MachineConfig: {own}")
            for reason, message in result.events:
                if reason == "SelectingAll":
                    self._event_once(MACHINE_CONFIG_POOL, name, reason, message)
                else:
                    self.store.record_event(MACHINE_CONFIG_POOL, name, reason, message,
                                            "Normal")
        report.machine_config_nodes = machine_config_nodes.sync(self.store, members, patched,
                                                                all_nodes)

    def _window_hold(self, pool: Mapping[str, Any], nodes: list[NodeRecord],
                     now: datetime) -> set[str]:
        """The pool's nodes whose update must wait for its maintenance window (mcc.windows):
        while it is closed, those whose move to the target drains or reboots them (all of
        them unless the pool lets rebootless updates through). Records the window's state for
        the pool status and the run loop's wake-up."""
        name = object_name(pool)
        target = pool_target(pool)
        waiting = [n for n in nodes if target and
                   n.annotations.get(DESIRED_CONFIG_ANNOTATION) != rollout.target_of(n, target)]
        try:
            schedule = windows.schedule_of(pool)
        except InputError as e:
            # fail closed: a schedule nobody can read holds every disruptive update
            message = f"{e}; updates wait until it is fixed"
            self._event_once(MACHINE_CONFIG_POOL, name, "InvalidMaintenanceWindow", message)
            self._windows[name] = WindowReport(None, (False, "InvalidSchedule", message))
            return {n.name for n in waiting}
        if schedule is None:
            return set()
        state = windows.state_at(schedule, now)
        hold: set[str] = set()
        if not state.is_open:
            moves: dict[tuple[str, str], bool] = {}
            for node in waiting:
                move = (node.annotations.get(CURRENT_CONFIG_ANNOTATION, ""),
                        rollout.target_of(node, target))
                if move not in moves:
                    moves[move] = not state.rebootless_outside or self._disruptive(*move)
                if moves[move]:
                    hold.add(node.name)
        message = windows.describe(state, sorted(hold))
        self._windows[name] = WindowReport(state, (state.is_open,
                                                   "Open" if state.is_open else "Closed",
                                                   message))
        if hold:
            self._event_once(MACHINE_CONFIG_POOL, name, "WaitingForMaintenanceWindow",
                             f"{len(hold)} node(s) wait for the maintenance window to update "
                             f"to {target}: next opens {rfc3339(state.next_opening)}",
                             "Normal")
        return hold

    def _disruptive(self, current: str, target: str) -> bool:
        """Whether a node on `current` is drained or rebooted to reach `target` (default node
        disruption policy; unknown configs count as disruptive)."""
        try:
            return plan.is_disruptive(self.store.get_rendered(current),
                                      self.store.get_rendered(target), self.policy)
        except MachineConfigError:
            return True

    def window_wake_in(self, now: datetime | None = None) -> float | None:
        """Seconds until a pool's maintenance window opens or closes, for the run loop."""
        moment = now or parse_rfc3339(self.now())
        edges = [edge for report in self._windows.values() if report.state is not None
                 for edge in (report.state.open_until, report.state.next_opening)
                 if edge is not None]
        return max((min(edges) - moment).total_seconds(), 0.0) if edges else None

    def _drain(self, report: PassReport) -> None:
        # The drain controller records its own events (a blocked drain is retried on MCO's
        # schedule, not reported on every pass).
        report.drain_errors = self.drain.sync(self.store.list_nodes())

    def _status(self, report: PassReport) -> None:
        pools = self.store.list_objects(MACHINE_CONFIG_POOL)
        nodes = self.store.list_nodes()
        members, _ = node_controller.assign_nodes(pools, nodes)
        now = self.now()
        input_errors = self._input_errors()
        self.metrics.set_alerts(node_controller.pool_alerts(pools, nodes))
        measured: list[tuple[str, Mapping[str, Any], list[str]]] = []
        for pool in pools:
            name = object_name(pool)
            window = self._windows.get(name)
            status = pool_status.calculate_status(pool, members.get(name, []), now,
                                                  input_errors,
                                                  window.condition if window else None)
            measured.append((name, status, [n.name for n in members.get(name, [])]))
            if status == (pool.get("status") or {}):
                continue
            self.store.update_status(MACHINE_CONFIG_POOL, name, status)
            report.statuses_written.append(name)
            log.info("pool %s: status %d/%d updated, %d unavailable, %d degraded", name,
                     status["updatedMachineCount"], status["machineCount"],
                     status["unavailableMachineCount"], status["degradedMachineCount"])
            for reason, message in pool_status.status_events(pool, status):
                self.store.record_event(MACHINE_CONFIG_POOL, name, reason, message, "Normal")
        self.metrics.set_pools(measured)

    def _input_errors(self) -> list[str] | None:
        """Why input files fail to load, on a store that has input files (the local one)."""
        errors = getattr(self.store, "input_errors", None)
        if not callable(errors):
            return None
        # The store logs each one when it loads the file; here they go into pool status.
        return [str(e) for e in errors()]

    def _gc(self, report: PassReport) -> None:
        report.deleted = gc.collect(self.store)

    def run(self, stop: threading.Event, interval: float) -> None:
        """Pass after pass until `stop` is set: on each store change, at least every
        `interval` seconds."""
        first = True
        since = 0
        while not stop.is_set():
            try:
                # Read before the pass: a change made during it (ours too) wakes the next one.
                since = self.store.revision()
                self.run_pass()
            except Exception:  # noqa: BLE001 - a controller must outlive one bad pass
                log.exception("controller pass failed; retrying in %.0fs", interval)
            if first:
                notify("READY=1")  # systemd Type=notify; a no-op otherwise
                first = False
            # A draining node due for its next eviction step, or a maintenance window
            # opening or closing, wakes the loop early.
            due = [d for d in (self.drain.wake_in(), self.window_wake_in()) if d is not None]
            deadline = time.monotonic() + min([interval, *(max(d, 0.05) for d in due)])
            while not stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    if self.store.wait_for_change(since, min(WAIT_SLICE, left)) > since:
                        break
                except MachineConfigError as e:
                    log.warning("waiting for store changes failed: %s", e)
                    stop.wait(min(WAIT_SLICE, left))
        log.info("controller stopped")
