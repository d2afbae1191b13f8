"""The controller's Prometheus metrics, with MCO's names, served by `mcc start --metrics-listen`.

- `mcc_drain_err{node}` (mcc.drain_controller): 1 while a node's drain has failed for an hour.
- `mcc_pool_alert{node}`: 1 for a node that matches the master pool and a custom pool (it stays
  a master: the custom pool's configs never reach it), 0 for a node in one custom pool only.
- `mco_machine_count`, `mco_updated_machine_count`, `mco_degraded_machine_count`,
  `mco_unavailable_machine_count` `{pool}`: the pool status counts.
- `mco_state{node,pool,state,reason}`: the time of the last pass, labelled with the pool's most
  recent condition that is True (type and reason), for every node of the pool. MCO's operator
  carries that condition over from one pool to the next in its loop; here it is per pool.

Series of nodes and pools that are gone are removed on the next pass.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

METRICS = CollectorRegistry()

_COUNTS = (
    ("machineCount", "mco_machine_count", "total number of machines in the pool"),
    ("updatedMachineCount", "mco_updated_machine_count",
     "number of machines updated to the pool's current config"),
    ("degradedMachineCount", "mco_degraded_machine_count", "number of degraded machines"),
    ("unavailableMachineCount", "mco_unavailable_machine_count",
     "number of unavailable machines"),
)


def latest_true_condition(status: Mapping[str, Any]) -> tuple[str, str]:
    """(type, reason) of the True condition that changed last; ("", "") when none is True."""
    best: tuple[str, str, str] = ("", "", "")
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        stamp = str(cond.get("lastTransitionTime") or "")
        if not best[0] or stamp > best[0]:
            best = (stamp, str(cond.get("type") or ""), str(cond.get("reason") or ""))
    return best[1], best[2]


class PoolMetrics:
    """Pool and membership gauges, set from one controller pass."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.pool_alert = Gauge("mcc_pool_alert", "1 when a node matches the master pool and a "
                                "custom pool (it stays in master)", ["node"], registry=registry)
        self.state = Gauge("mco_state", "state of a specified pool",
                           ["node", "pool", "state", "reason"], registry=registry)
        self.counts = {field: Gauge(name, text, ["pool"], registry=registry)
                       for field, name, text in _COUNTS}
        # what is set now, so that what disappears can be removed
        self._alerts: set[str] = set()
        self._states: set[tuple[str, str, str, str]] = set()
        self._pools: set[str] = set()

    def set_alerts(self, alerts: Mapping[str, int]) -> None:
        for node in self._alerts - set(alerts):
            self.pool_alert.remove(node)
        for node, value in alerts.items():
            self.pool_alert.labels(node).set(value)
        self._alerts = set(alerts)

    def set_pools(self, pools: Iterable[tuple[str, Mapping[str, Any], Iterable[str]]],
                  now: float | None = None) -> None:
        """(pool name, its status, its nodes' names) for every pool."""
        stamp = time.time() if now is None else now
        states: set[tuple[str, str, str, str]] = set()
        names: set[str] = set()
        for pool, status, nodes in pools:
            names.add(pool)
            for field, gauge in self.counts.items():
                gauge.labels(pool).set(float(status.get(field) or 0))
            ctype, reason = latest_true_condition(status)
            for node in nodes:
                states.add((node, pool, ctype, reason))
        for labels in self._states - states:
            self.state.remove(*labels)
        for labels in states:
            self.state.labels(*labels).set(stamp)
        for pool in self._pools - names:
            for gauge in self.counts.values():
                gauge.remove(pool)
        self._states, self._pools = states, names


POOLS = PoolMetrics(METRICS)
