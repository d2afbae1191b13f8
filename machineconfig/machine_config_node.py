"""MachineConfigNode (machineconfiguration.openshift.io/v1): one object per node that mirrors
where the node's update stands, in MCO's condition types, reasons and phase order.

The controller writes the spec (node, pool, desired config) and the owner reference to the
Node; the node's daemon writes the status, one phase transition at a time, through
`transition()`. Everything here is pure: the stores keep the objects, mcd.node_progress decides
when a phase begins and ends.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from machineconfig.constants import API_VERSION
from machineconfig.errors import InputError

KIND = "MachineConfigNode"
PLURAL = "machineconfignodes"
# spec.configVersion.desired and status.configVersion.desired before there is a value (MCO's)
NOT_YET_SET = "not-yet-set"

# Condition types (MCO's StateProgress values)
UPDATE_PREPARED = "UpdatePrepared"
UPDATE_EXECUTED = "UpdateExecuted"
UPDATE_POST_ACTION_COMPLETE = "UpdatePostActionComplete"
UPDATE_COMPLETE = "UpdateComplete"
UPDATED = "Updated"
RESUMED = "Resumed"
DRAINED = "Drained"
APPLIED_FILES_AND_OS = "AppliedFilesAndOS"
CORDONED = "Cordoned"
UNCORDONED = "Uncordoned"
REBOOTED_NODE = "RebootedNode"
NODE_DEGRADED = "NodeDegraded"
# Every condition an object carries once the daemon first reports, in the order MCO fills them
# in (its pinned-image-set conditions are left out: this project pins no images).
ALL_CONDITIONS = (UPDATE_PREPARED, UPDATE_EXECUTED, UPDATE_POST_ACTION_COMPLETE, UPDATE_COMPLETE,
                  RESUMED, DRAINED, APPLIED_FILES_AND_OS, CORDONED, REBOOTED_NODE, UPDATED,
                  UNCORDONED, NODE_DEGRADED)
STATUSES = ("True", "False", "Unknown")
NOT_YET_OCCURRED = "NotYetOccurred"

# Bounds of the CRD (and of what the embedded node API accepts from a node)
MAX_CONDITIONS = 20
MAX_MESSAGE = 32768
MAX_REASON = 1024
MAX_NAME = 253
REASON_PATTERN = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class StatusError(InputError):
    """A MachineConfigNode status that is not one (from a node through the node API)."""


@dataclass(frozen=True)
class Condition:
    """One condition to set: its type, status (True, False, Unknown), reason and message."""

    type: str
    status: str
    reason: str
    message: str

    def to_dict(self, now: str) -> dict[str, Any]:
        return {"type": self.type, "status": self.status, "reason": self.reason,
                "message": self.message[:MAX_MESSAGE], "lastTransitionTime": now}


def spec(node: str, pool: str, desired: str) -> dict[str, Any]:
    """MCO's spec: the node, its pool, and the node's desiredConfig (NOT_YET_SET when none)."""
    return {"node": {"name": node}, "pool": {"name": pool},
            "configVersion": {"desired": desired or NOT_YET_SET}}


def owner_reference(node: str, uid: str) -> dict[str, Any]:
    """The Node owns its MachineConfigNode, as in MCO: the garbage collector removes it with
    the Node."""
    return {"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid}


def new_object(node: str, pool: str, desired: str, node_uid: str = "") -> dict[str, Any]:
    """A MachineConfigNode as the controller creates it (no status: the daemon writes that)."""
    meta: dict[str, Any] = {"name": node}
    if node_uid:
        meta["ownerReferences"] = [owner_reference(node, node_uid)]
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta,
            "spec": spec(node, pool, desired)}


def conditions_of(obj: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    status = (obj or {}).get("status")
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    return [dict(c) for c in conditions or [] if isinstance(c, Mapping)]


def condition(obj: Mapping[str, Any] | None, ctype: str) -> dict[str, Any] | None:
    for cond in conditions_of(obj):
        if cond.get("type") == ctype:
            return cond
    return None


def condition_status(obj: Mapping[str, Any] | None, ctype: str) -> str:
    """"True", "False", "Unknown", or "" when the object has no such condition."""
    cond = condition(obj, ctype)
    return str(cond.get("status") or "") if cond else ""


def transition(obj: Mapping[str, Any], parent: Condition, child: Condition | None, *,
               desired_config: str, current_config: str, now: str) -> dict[str, Any] | None:
    """The object's status after one phase transition (MCO's GenerateAndApplyMachineConfigNodes),
    or None when it would not change (the parent condition already has this status and message).

    - The first report fills in every condition of ALL_CONDITIONS: those not reported yet are
      False with reason NotYetOccurred.
    - A parent or child condition replaces the condition of its type.
    - Updated=True ends an update: every other condition not False turns False, its message
      prefixed with the config the update was to ("Action during update to X: ...").
    - Any other parent while Updated is True starts an update: Updated turns False.
    - status.configVersion.desired is the node's desiredConfig once the update was found
      compatible (UpdatePrepared=True, or any later phase), else NOT_YET_SET; .current is the
      node's currentConfig when it has one. observedGeneration is the object's generation.
    """
    status = copy.deepcopy(dict(obj.get("status") or {}))
    conditions = conditions_of(obj)
    fresh_parent = parent.to_dict(now)
    fresh_child = child.to_dict(now) if child is not None else None
    spec_desired = str(((obj.get("spec") or {}).get("configVersion") or {}).get("desired") or "")
    if not conditions:
        conditions = [fresh_parent] + ([fresh_child] if fresh_child else [])
        have = {c["type"] for c in conditions}
        conditions += [{"type": t, "status": "False", "reason": NOT_YET_OCCURRED,
                        "message": f"This node has not yet entered the {t} phase",
                        "lastTransitionTime": now} for t in ALL_CONDITIONS if t not in have]
    else:
        found_parent = found_child = False
        out = []
        for cond in conditions:
            ctype = cond.get("type")
            if fresh_child is not None and ctype == fresh_child["type"]:
                found_child = True
                cond = fresh_child
            elif ctype == parent.type:
                found_parent = True
                if cond.get("status") == parent.status and cond.get("message") == parent.message:
                    return None
                cond = fresh_parent
            elif parent.type == UPDATED and parent.status == "True" and \
                    cond.get("status") != "False":
                cond = {**cond, "status": "False", "lastTransitionTime": now,
                        "message": (f"Action during update to {spec_desired}: "
                                    f"{cond.get('message', '')}")[:MAX_MESSAGE]}
            elif ctype == UPDATED and cond.get("status") == "True" and parent.type != NODE_DEGRADED:
                cond = {**cond, "status": "False", "reason": UPDATED, "lastTransitionTime": now,
                        "message": f"This node is updating to {desired_config or spec_desired}"}
            out.append(cond)
        if fresh_child is not None and not found_child:
            out.append(fresh_child)
        if not found_parent:
            out.append(fresh_parent)
        conditions = out
    status["conditions"] = conditions[:MAX_CONDITIONS]
    compatible = parent.status == "True" if parent.type == UPDATE_PREPARED else bool(desired_config)
    version = dict(status.get("configVersion") or {})
    version["desired"] = desired_config if compatible and desired_config else NOT_YET_SET
    if current_config:
        version["current"] = current_config
    status["configVersion"] = version
    generation = (obj.get("metadata") or {}).get("generation")
    if isinstance(generation, int) and generation >= 1:
        status["observedGeneration"] = max(generation, int(status.get("observedGeneration") or 0))
    return status


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_NAME or not NAME_PATTERN.match(value):
        raise StatusError(f"{where} must be a DNS-1123 subdomain")
    return value


def check_status(status: Any) -> dict[str, Any]:
    """`status` if it is a MachineConfigNode status as the CRD allows it (conditions with known
    types, statuses, reasons and bounded messages; configVersion names; observedGeneration);
    raises StatusError naming the first field that is not."""
    if not isinstance(status, Mapping):
        raise StatusError("status must be an object")
    unknown = sorted(set(status) - {"conditions", "configVersion", "observedGeneration"})
    if unknown:
        raise StatusError(f"status.{unknown[0]} is not a field of a MachineConfigNode status")
    conditions = status.get("conditions", [])
    if not isinstance(conditions, Sequence) or isinstance(conditions, (str, bytes)) or \
            len(conditions) > MAX_CONDITIONS:
        raise StatusError(f"status.conditions must be a list of at most {MAX_CONDITIONS}")
    seen: set[str] = set()
    for i, cond in enumerate(conditions):
        where = f"status.conditions[{i}]"
        if not isinstance(cond, Mapping) or set(cond) - {"type", "status", "reason", "message",
                                                         "lastTransitionTime"}:
            raise StatusError(f"{where} must be a condition (type, status, reason, message, "
                              "lastTransitionTime)")
        if cond.get("type") not in ALL_CONDITIONS or cond["type"] in seen:
            raise StatusError(f"{where}.type must be one MachineConfigNode condition type, once")
        seen.add(cond["type"])
        if cond.get("status") not in STATUSES:
            raise StatusError(f"{where}.status must be True, False or Unknown")
        reason = cond.get("reason")
        if not isinstance(reason, str) or len(reason) > MAX_REASON or \
                not REASON_PATTERN.match(reason):
            raise StatusError(f"{where}.reason must be a CamelCase word")
        if not isinstance(cond.get("message"), str) or len(cond["message"]) > MAX_MESSAGE:
            raise StatusError(f"{where}.message must be a string of at most {MAX_MESSAGE}")
        if not isinstance(cond.get("lastTransitionTime"), str) or \
                len(cond["lastTransitionTime"]) > 64:
            raise StatusError(f"{where}.lastTransitionTime must be an RFC 3339 time")
    version = status.get("configVersion", {})
    if not isinstance(version, Mapping) or set(version) - {"current", "desired"}:
        raise StatusError("status.configVersion must be {current, desired}")
    for key in ("current", "desired"):
        if key in version:
            _name(version[key], f"status.configVersion.{key}")
    generation = status.get("observedGeneration", 1)
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 1:
        raise StatusError("status.observedGeneration must be a positive integer")
    return copy.deepcopy(dict(status))


def summary_row(obj: Mapping[str, Any]) -> dict[str, str]:
    """The columns `kubectl get machineconfignodes -o wide` prints (the CRD's printer columns)."""
    spec_ = obj.get("spec") or {}
    version = (obj.get("status") or {}).get("configVersion") or {}
    row = {"NAME": str((obj.get("metadata") or {}).get("name") or ""),
           "POOLNAME": str((spec_.get("pool") or {}).get("name") or ""),
           "DESIREDCONFIG": str((spec_.get("configVersion") or {}).get("desired") or ""),
           "CURRENTCONFIG": str(version.get("current") or ""),
           "UPDATED": condition_status(obj, UPDATED)}
    for column, ctype in WIDE_COLUMNS:
        row[column] = condition_status(obj, ctype)
    return row


# The CRD's priority-1 printer columns (shown by -o wide), in its order
WIDE_COLUMNS = (("UPDATEPREPARED", UPDATE_PREPARED), ("UPDATEEXECUTED", UPDATE_EXECUTED),
                ("UPDATEPOSTACTIONCOMPLETE", UPDATE_POST_ACTION_COMPLETE),
                ("UPDATECOMPLETE", UPDATE_COMPLETE), ("RESUMED", RESUMED),
                ("UPDATEDFILESANDOS", APPLIED_FILES_AND_OS), ("CORDONEDNODE", CORDONED),
                ("DRAINEDNODE", DRAINED), ("REBOOTEDNODE", REBOOTED_NODE),
                ("UNCORDONEDNODE", UNCORDONED))
