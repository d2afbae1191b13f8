"""A pool's status from its nodes: MCO's calculateStatus with its condition texts (spec 6.3).

Pure: `calculate_status(pool, nodes, now)` returns the new status dict; conditions keep their
lastTransitionTime unless their status flips, so an unchanged pool yields an equal status.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from machineconfig.api import object_name, pool_configuration, pool_target
from machineconfig.constants import (
    CURRENT_CONFIG_ANNOTATION, DESIRED_CONFIG_ANNOTATION, DESIRED_IMAGE_ANNOTATION,
    MACHINE_CONFIG_DAEMON_REASON_ANNOTATION, MACHINE_CONFIG_DAEMON_STATE_ANNOTATION,
    MAINTENANCE_WINDOW_CONDITION, NODE_CONFIG_ANNOTATION, POOL_DEGRADED_CONDITION, STATE_DONE,
)
from machineconfig.status import find_condition
from machineconfig.store.base import NodeRecord
from mcc.node_controller import FAILING_STATES

log = logging.getLogger(__name__)

JSON = dict[str, Any]
UPDATED, UPDATING, NODE_DEGRADED = "Updated", "Updating", "NodeDegraded"
RENDER_DEGRADED = "RenderDegraded"
# Ours (the local store): input files that cannot be loaded. Not RenderDegraded: the pool still
# renders, from those files' last good objects, and a broken file names no pool.
INPUT_DEGRADED, INPUT_ERRORS_REASON = "InputDegraded", "InputFileErrors"
MAX_LISTED_ERRORS = 10


def is_condition_true(status: Mapping[str, Any], kind: str) -> bool:
    cond = find_condition(status, kind)
    return cond is not None and cond.get("status") == "True"


def set_condition(status: JSON, kind: str, value: bool, reason: str, message: str,
                  now: str) -> None:
    """SetMachineConfigPoolCondition: a no-op when nothing changed; the transition time moves
    only when the status flips."""
    text = "True" if value else "False"
    conditions: list[JSON] = status.setdefault("conditions", [])
    for i, cond in enumerate(conditions):
        if cond.get("type") != kind:
            continue
        if (cond.get("status"), cond.get("reason", ""), cond.get("message", "")) == (
                text, reason, message):
            return
        when = cond.get("lastTransitionTime", now) if cond.get("status") == text else now
        conditions[i] = {"type": kind, "status": text, "lastTransitionTime": when,
                         "reason": reason, "message": message}
        return
    conditions.append({"type": kind, "status": text, "lastTransitionTime": now,
                       "reason": reason, "message": message})


def input_errors_message(errors: Sequence[str]) -> str:
    listed = "; ".join(errors[:MAX_LISTED_ERRORS])
    more = f"; and {len(errors) - MAX_LISTED_ERRORS} more" if len(errors) > MAX_LISTED_ERRORS \
        else ""
    return (f"{len(errors)} input file error(s), the last good objects stay in use: "
            f"{listed}{more}")


def calculate_status(pool: Mapping[str, Any], nodes: Sequence[NodeRecord], now: str,
                     input_errors: Sequence[str] | None = None,
                     window: tuple[bool, str, str] | None = None) -> JSON:
    """The pool's status for `nodes` (its members); other fields of the old status are kept.

    `input_errors`: why input files fail to load (a store with input files; None elsewhere).
    `window`: (open, reason, message) of the pool's maintenance window, None without one."""
    spec = pool.get("spec") or {}
    status: JSON = copy.deepcopy(dict(pool.get("status") or {}))
    target = pool_target(pool)
    total = len(nodes)
    updated = ready = unavailable = 0
    degraded: list[NodeRecord] = []
    for node in nodes:  # mcc.node_controller's predicates, inlined: a pass covers every node
        a = node.annotations
        current = a.get(CURRENT_CONFIG_ANNOTATION, "")
        desired = a.get(DESIRED_CONFIG_ANNOTATION, "")
        state = a.get(MACHINE_CONFIG_DAEMON_STATE_ANNOTATION)
        node_ready = node.ready and not node.unschedulable
        done = (current != "" and current == desired and state == STATE_DONE
                and DESIRED_IMAGE_ANNOTATION not in a)
        # updated: at its own target (the pool's, or its own where overlays select it)
        if done and current == (a.get(NODE_CONFIG_ANNOTATION) or target):
            updated += 1
            ready += node_ready
        if not node_ready or not (done or (current != desired and state in FAILING_STATES)):
            unavailable += 1
        if state in FAILING_STATES:
            degraded.append(node)
    status["observedGeneration"] = int((pool.get("metadata") or {}).get("generation") or 0)
    status["machineCount"] = total
    status["updatedMachineCount"] = updated
    status["readyMachineCount"] = ready
    status["unavailableMachineCount"] = unavailable
    status["degradedMachineCount"] = len(degraded)
    all_updated = updated == total and ready == total and unavailable == 0
    if all_updated and target:
        set_condition(status, UPDATED, True, "", f"All nodes are updated with MachineConfig "
                      f"{target}", now)
        set_condition(status, UPDATING, False, "", "", now)
        status["configuration"] = copy.deepcopy(pool_configuration(pool))
    else:
        set_condition(status, UPDATED, False, "", "", now)
        if spec.get("paused"):
            set_condition(status, UPDATING, False, "",
                          f"Pool is paused; will not update to MachineConfig {target}", now)
        else:
            set_condition(status, UPDATING, True, "",
                          f"All nodes are updating to MachineConfig {target}", now)
    if degraded:
        reason = f"{len(degraded)} nodes are reporting degraded status on sync"
        message = ", ".join(f'Node {n.name} is reporting: "{_reason(n)}"' for n in degraded)
        set_condition(status, NODE_DEGRADED, True, reason, message, now)
    else:
        reason = message = ""
        set_condition(status, NODE_DEGRADED, False, "", "", now)
    # Present once there was an input error (then False when fixed): a store that never had
    # one shows MCO's conditions only, as the kube store does.
    if input_errors:
        set_condition(status, INPUT_DEGRADED, True, INPUT_ERRORS_REASON,
                      input_errors_message(input_errors), now)
    elif find_condition(status, INPUT_DEGRADED) is not None:
        set_condition(status, INPUT_DEGRADED, False, "", "", now)
    if window is not None:
        set_condition(status, MAINTENANCE_WINDOW_CONDITION, window[0], window[1], window[2], now)
    elif find_condition(status, MAINTENANCE_WINDOW_CONDITION) is not None:
        status["conditions"] = [c for c in status["conditions"]
                                if c.get("type") != MAINTENANCE_WINDOW_CONDITION]
    if not degraded and not is_condition_true(status, RENDER_DEGRADED) and input_errors:
        set_condition(status, POOL_DEGRADED_CONDITION, True, INPUT_ERRORS_REASON,
                      input_errors_message(input_errors), now)
    elif degraded or is_condition_true(status, RENDER_DEGRADED):
        set_condition(status, POOL_DEGRADED_CONDITION, True, reason, message, now)
    else:
        set_condition(status, POOL_DEGRADED_CONDITION, False, "", "", now)
    return status


def _reason(node: NodeRecord) -> str:
    return node.annotations.get(MACHINE_CONFIG_DAEMON_REASON_ANNOTATION, "")


def status_events(pool: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Events for a status change: the pool finished a rollout, or started one."""
    name = object_name(pool)
    old = pool.get("status") or {}
    events = []
    new_config = str((new.get("configuration") or {}).get("name") or "")
    if new_config and new_config != str(pool_configuration(pool, "status").get("name") or ""):
        events.append(("Completed", f"Pool {name} has completed update to MachineConfig "
                                    f"{new_config}"))
    updating = find_condition(new, UPDATING)
    was = find_condition(old, UPDATING)
    if updating and updating.get("status") == "True" and (
            was is None or was.get("message") != updating.get("message")):
        target = pool_target(pool)
        events.append(("Updating", f"Pool {name} now targeting MachineConfig {target}"))
    return events
