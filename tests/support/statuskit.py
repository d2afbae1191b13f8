"""A small cluster caught mid-rollout on the real local store, for the status tests (model, CLI
table, mcs's page): pool worker (maxUnavailable 1) with n1 updating to a new rendered config, n2
waiting for its turn, n3 Degraded after a drift, and a node whose name and reason are hostile
markup."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from machineconfig.constants import (
    MACHINE_CONFIG_DAEMON_REASON_ANNOTATION, MACHINE_CONFIG_DAEMON_STATE_ANNOTATION,
)
from machineconfig.store import Store
from machineconfig.store.base import RebootLocks
from mcc.controller import Controller
from tests.support.clusterkit import daemon_step, join, machine_config, make_store, write

HOSTILE_NAME = "zz<img src=x onerror=alert(1)>"
HOSTILE_REASON = '<script>alert("reason")</script>&amp;'
DRIFT_MESSAGE = "unexpected on-disk state validating against rendered: <b>/etc/motd</b>"


@dataclass
class Cluster:
    store: Store
    inputs: Path
    controller: Controller
    first: str  # the rendered config every node ran before
    second: str  # the pool's new target


def target(store: Store) -> str:
    return str(store.get_object("MachineConfigPool", "worker")["spec"]["configuration"]["name"])


def settle(store: Store, controller: Controller) -> None:
    for _ in range(20):
        store.revision()
        report = controller.run_pass()
        if not daemon_step(store) and not report.targeted:
            return


def mid_rollout(tmp_path: Path) -> Cluster:
    store, inputs = make_store(tmp_path)
    controller = Controller(store)
    settle(store, controller)
    first = target(store)
    for name in ("n1", "n2", "n3", HOSTILE_NAME):
        join(store, name, first)
    settle(store, controller)
    # a new config: the first pass targets one node (maxUnavailable 1)
    write(inputs / "50-worker.yaml", machine_config("50-worker", "/etc/motd2", "x\n"))
    store.revision()  # the local store notices changed input files here
    controller.run_pass()
    # n3 drifted meanwhile: the daemon's event and its Degraded state; a hostile node's reason
    store.record_event("Node", "n3", "ConfigDriftDetected", DRIFT_MESSAGE, "Warning")
    store.patch_node_annotations("n3", {MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: "Degraded",
                                        MACHINE_CONFIG_DAEMON_REASON_ANNOTATION: DRIFT_MESSAGE})
    store.patch_node_annotations(HOSTILE_NAME, {
        MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: "Degraded",
        MACHINE_CONFIG_DAEMON_REASON_ANNOTATION: HOSTILE_REASON})
    store.revision()  # the local store notices changed input files here
    controller.run_pass()
    return Cluster(store, inputs, controller, first, target(store))


def slots_of(store: Store) -> RebootLocks:
    """The local store's FleetLock slots (the capability the status model reads)."""
    assert isinstance(store, RebootLocks)
    return store
