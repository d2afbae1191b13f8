"""The daemon's reports into its node's MachineConfigNode: one method per phase transition of
an update (MCO's upgrade monitor calls, with its condition types, reasons and messages), each
turned into a status by machineconfig.machine_config_node.transition and written through the
store. Reports are best effort, as in MCO: a store without MachineConfigNodes, an object the
controller has not created yet, or a failed write is logged and never fails the update.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from machineconfig import constants as C
from machineconfig import machine_config_node as mcn
from machineconfig.clock import now_rfc3339
from machineconfig.disruption import Action, ActionType
from machineconfig.machine_config_node import Condition
from machineconfig.store.base import NodeAPI, NodeProgressReports, NotFoundError, StoreError

log = logging.getLogger(__name__)


def _go_bool(value: bool) -> str:
    return "true" if value else "false"


def _will(needed: bool) -> str:
    # MCO's text leaves the word out when the update is needed ("OS will  need an update")
    return "" if needed else "not"


class NodeProgress:
    """The phases of one node's updates, as its MachineConfigNode shows them."""

    def __init__(self, api: NodeAPI, node: str, now: Callable[[], str] = now_rfc3339) -> None:
        self.api, self.node, self.now = api, node, now
        self._missing_logged = False

    def _report(self, parent: Condition, child: Condition | None = None) -> None:
        api = self.api
        if not isinstance(api, NodeProgressReports):
            return
        try:
            obj = api.get_machine_config_node(self.node)
            annotations = api.get_node(self.node).annotations
            status = mcn.transition(obj, parent, child,
                                    desired_config=annotations.get(C.DESIRED_CONFIG_ANNOTATION, ""),
                                    current_config=annotations.get(C.CURRENT_CONFIG_ANNOTATION, ""),
                                    now=self.now())
            if status is None:
                return
            api.set_machine_config_node_status(self.node, status)
            log.info("MachineConfigNode %s: %s=%s%s", self.node, parent.type, parent.status,
                     f", {child.type}={child.status}" if child else "")
        except NotFoundError as err:
            if not self._missing_logged:
                log.info("no MachineConfigNode %s to report to yet (%s)", self.node, err)
                self._missing_logged = True
        except StoreError as err:
            log.warning("MachineConfigNode %s: %s=%s not reported: %s", self.node, parent.type,
                        parent.status, err)

    # ---- preparing ------------------------------------------------------------------------
    def prepared(self, actions: list[Action], drain: bool) -> None:
        self._report(Condition(mcn.UPDATE_PREPARED, "True", mcn.UPDATE_PREPARED,
                               f"Update Compatible. Post Cfg Actions: "
                               f"[{' '.join(str(a) for a in actions)}] "
                               f"Drain Required: {_go_bool(drain)}"))

    def incompatible(self, old: str, new: str, reason: str) -> None:
        self._report(Condition(mcn.UPDATE_PREPARED, "Unknown", mcn.UPDATE_PREPARED,
                               f"Update Failed compatibility validation. MachineConfigs {old} and "
                               f"{new} are not compatible. Err: {reason}"))

    def _step(self, phase: str, phase_status: str, step: str, phase_message: str,
              step_status: str, step_message: str) -> None:
        """A step of a phase: the phase's condition names the step as its reason, and the step's
        own condition has the phase and step as its reason (MCO's pairs)."""
        self._report(Condition(phase, phase_status, step, phase_message),
                     Condition(step, step_status, phase + step, step_message))

    # ---- executing: drain, files and OS ----------------------------------------------------
    def drain_skipped(self) -> None:
        text = "Node Drain Not required for this update."
        self._step(mcn.UPDATE_EXECUTED, "Unknown", mcn.DRAINED, text, "False", text)

    def draining(self, desired_drain: str, applied_drain: str) -> None:
        self._step(mcn.UPDATE_EXECUTED, "Unknown", mcn.DRAINED,
                   "Draining Node as part of update executed phase",
                   "Unknown", f"Draining node. The drain will not be complete until desired "
                              f"drainer {desired_drain} matches current drainer {applied_drain}")

    def drained(self, desired_drain: str, unschedulable: bool) -> None:
        """The controller cordoned and drained the node (lastAppliedDrain echoes the request)."""
        self._step(mcn.UPDATE_EXECUTED, "Unknown", mcn.CORDONED,
                   "Cordoned Node as part of update executed phase",
                   "True", f"Cordoned node. The node is reporting Unschedulable = "
                           f"{_go_bool(unschedulable)}")
        self._step(mcn.UPDATE_EXECUTED, "Unknown", mcn.DRAINED,
                   "Drained Node as part of update executed phase",
                   "True", f"Drained node. The drain is complete as the desired drainer "
                           f"matches current drainer: {desired_drain}")

    def drain_failed(self, desired_drain: str, error: str) -> None:
        self._step(mcn.UPDATE_EXECUTED, "Unknown", mcn.DRAINED, "Node Drain has not succeeded",
                   "Unknown", f"Error: Node Drain has not succeeded. Error is: {error} The drain "
                              f"will not be complete until desired drainer {desired_drain} "
                              f"matches current drainer")

    def files_applying(self, os_update: bool, ssh_keys: bool) -> None:
        self._step(mcn.UPDATE_EXECUTED, "Unknown", mcn.APPLIED_FILES_AND_OS,
                   "Updating the Files and OS on disk as a part of the in progress phase",
                   "Unknown", f"Applying files and new OS config to node. OS will "
                              f"{_will(os_update)} need an update. SSH Keys will "
                              f"{_will(ssh_keys)} need an update")

    def files_applied(self, os_update: bool, ssh_keys: bool) -> None:
        self._step(mcn.UPDATE_EXECUTED, "True", mcn.APPLIED_FILES_AND_OS,
                   "Updated the Files and OS on disk as a part of the in progress phase",
                   "True", f"Applied files and new OS config to node. OS did "
                           f"{_will(os_update)} need an update. SSH Keys did "
                           f"{_will(ssh_keys)} need an update")

    # ---- the post-config action ------------------------------------------------------------
    def rebooting(self) -> None:
        self._report(Condition(mcn.REBOOTED_NODE, "Unknown", mcn.REBOOTED_NODE,
                               "Upgrade requires a reboot."))

    def post_action(self, action: Action) -> None:
        """One rebootless action done (MCO reports reloads and None; restarts too, here)."""
        if action.type is ActionType.NONE:
            self._report(Condition(mcn.UPDATE_POST_ACTION_COMPLETE, "True", "None",
                                   "Changes do not require a reboot"))
        elif action.type is ActionType.RESTART:
            self._report(Condition(mcn.UPDATE_POST_ACTION_COMPLETE, "True",
                                   mcn.UPDATE_POST_ACTION_COMPLETE,
                                   f"Node has restarted service {action.service}"))
        elif action.type in (ActionType.RELOAD, ActionType.SPECIAL, ActionType.DAEMON_RELOAD):
            service = {ActionType.SPECIAL: "crio.service",
                       ActionType.DAEMON_RELOAD: "daemon-reload"}.get(action.type, action.service)
            self._report(Condition(mcn.UPDATE_POST_ACTION_COMPLETE, "True",
                                   mcn.UPDATE_POST_ACTION_COMPLETE,
                                   f"Node has reloaded service {service}"))

    def rebooted(self) -> None:
        self._report(Condition(mcn.REBOOTED_NODE, "True", mcn.REBOOTED_NODE,
                               "Node has rebooted"))

    # ---- completing ------------------------------------------------------------------------
    def resumed(self, config: str) -> None:
        self._report(Condition(mcn.RESUMED, "True", mcn.RESUMED,
                               f"In desired config {config}. Resumed normal operations."))

    def uncordoned(self, unschedulable: bool) -> None:
        self._step(mcn.UPDATE_COMPLETE, "True", mcn.UNCORDONED,
                   "Uncordoned Node as part of completing upgrade phase",
                   "True", f"UnCordoned node. The node is reporting Unschedulable = "
                           f"{_go_bool(unschedulable)}")

    def updated(self, config: str) -> None:
        self._report(Condition(mcn.UPDATED, "True", mcn.UPDATED,
                               f"Node {self.node} is in its desired config {config}"))

    # ---- degraded --------------------------------------------------------------------------
    def degraded(self, reason: str) -> None:
        self._report(Condition(mcn.NODE_DEGRADED, "True", mcn.NODE_DEGRADED,
                               f"Node {self.node} upgrade failure. {reason}"))

    def not_degraded(self) -> None:
        self._report(Condition(mcn.NODE_DEGRADED, "False", mcn.NODE_DEGRADED,
                               f"Node {self.node} is not degraded"))
