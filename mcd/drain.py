"""The daemon's half of the drain handshake (MCO's drain.go): set desiredDrain to
`drain-<config>` or `uncordon-<config>` and wait for the controller to echo it in lastAppliedDrain,
with MCO's timeout texts.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from machineconfig import constants as C
from machineconfig.errors import MachineConfigError
from machineconfig.store.base import NodeAPI

log = logging.getLogger(__name__)


class DrainError(MachineConfigError):
    """The controller did not apply the request in time; `str()` is MCO's Degraded reason."""

    temporary = True  # the controller may still apply it: retried


def duration_text(seconds: float) -> str:
    """A timeout in words ("1 hour", "10 minutes") as MCO's messages spell them."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds:g} second{'' if seconds == 1 else 's'}"


class DrainClient:
    """Requests for one node; `wait(timeout)` blocks until the store changes or time passes."""

    def __init__(self, api: NodeAPI, node: str, wait: Callable[[float], bool],
                 clock: Callable[[], float], event: Callable[[str, str, str], None],
                 watch: float) -> None:
        self.api, self.node = api, node
        self.wait, self.clock, self.event, self.watch = wait, clock, event, watch

    def _applied(self) -> str | None:
        return self.api.get_node(self.node).annotations.get(C.LAST_APPLIED_DRAIN_ANNOTATION)

    def handshake(self, value: str, timeout: float) -> bool:
        """Set desiredDrain and wait for lastAppliedDrain to match; False on timeout."""
        if self._applied() == value:
            log.info("%s already applied", value)
            return True
        self.api.patch_node_annotations(self.node, {C.DESIRED_DRAIN_ANNOTATION: value})
        log.info("requested %s, waiting up to %s", value, duration_text(timeout))
        deadline = self.clock() + timeout
        while self._applied() != value:
            remaining = deadline - self.clock()
            if remaining <= 0:
                return False
            self.wait(min(remaining, self.watch))
        return True

    def drain(self, desired: str, timeout: float) -> None:
        annotations = self.api.get_node(self.node).annotations
        if annotations.get(C.CONTROL_PLANE_TOPOLOGY_ANNOTATION) == "SingleReplica":
            log.info("single-replica control plane: drain skipped")
            return
        value = f"drain-{desired}"
        if annotations.get(C.LAST_APPLIED_DRAIN_ANNOTATION) != value:
            self.event("Cordon", "Cordoned node to apply update", "Normal")
            self.event("Drain", "Draining node to update config.", "Normal")
        if not self.handshake(value, timeout):
            self.event("FailedToDrain", "failed to drain node", "Warning")
            message = (f"failed to drain node: {self.node} after {duration_text(timeout)}. "
                       "Please see machine-config-controller logs for more information")
            # MCO's text, then what the controller says blocks it (pods and disruption budgets),
            # so the pool's NodeDegraded message names the blockers without a trip to the logs.
            blocked = self.api.get_node(self.node).annotations.get(C.DRAIN_REASON_ANNOTATION)
            raise DrainError(f"{message}: {blocked}" if blocked else message)

    def uncordon(self, current: str, timeout: float) -> None:
        if not self.handshake(f"uncordon-{current}", timeout):
            raise DrainError(f"failed to uncordon node: {self.node} after "
                             f"{duration_text(timeout)}. Please see machine-config-controller "
                             "logs for more information")
