"""Rollout facts shared by the controller (mcc.node_controller) and the server's FleetLock
(mcs.fleetlock): MCO's node predicates (helpers.go / layered_node_state.go, non-layered), a
pool's maxUnavailable (spec/mco.md 6.2.6) and which FleetLock groups share a pool's slots."""
from __future__ import annotations

import re

from machineconfig.constants import (
    CURRENT_CONFIG_ANNOTATION, DESIRED_CONFIG_ANNOTATION, DESIRED_IMAGE_ANNOTATION,
    MACHINE_CONFIG_DAEMON_STATE_ANNOTATION, NODE_CONFIG_ANNOTATION, STATE_DEGRADED, STATE_DONE,
    STATE_UNRECONCILABLE,
)
from machineconfig.errors import MachineConfigError
from machineconfig.store.base import NodeRecord

# An int-or-percent string must be digits and a percent sign, as Kubernetes' intstr requires.
_PERCENT = re.compile(r"^(-?\d+)%$")


class MaxUnavailableError(MachineConfigError):
    """The pool's maxUnavailable is neither an int nor an "N%" string."""


def target_of(node: NodeRecord, pool_target: str) -> str:
    """The rendered config `node` should run: its own when overlays select it (the
    controller's node-config annotation), else its pool's target."""
    return node.annotations.get(NODE_CONFIG_ANNOTATION) or pool_target


def is_ready(node: NodeRecord) -> bool:
    """Ready and schedulable: a cordoned node is busy updating or held by an administrator."""
    return node.ready and not node.unschedulable


def is_done(node: NodeRecord) -> bool:
    a = node.annotations
    current = a.get(CURRENT_CONFIG_ANNOTATION, "")
    return (current != "" and current == a.get(DESIRED_CONFIG_ANNOTATION, "")
            and a.get(MACHINE_CONFIG_DAEMON_STATE_ANNOTATION) == STATE_DONE
            and DESIRED_IMAGE_ANNOTATION not in a)


def is_failing(node: NodeRecord) -> bool:
    """The daemon gave up on its desired config: the node can be retargeted."""
    a = node.annotations
    if a.get(CURRENT_CONFIG_ANNOTATION, "") == a.get(DESIRED_CONFIG_ANNOTATION, ""):
        return False
    return a.get(MACHINE_CONFIG_DAEMON_STATE_ANNOTATION) in (STATE_DEGRADED, STATE_UNRECONCILABLE)


def is_unavailable(node: NodeRecord) -> bool:
    if not is_ready(node):
        return True
    if is_done(node):
        return False
    # Mid-update (or not started yet) unless the daemon is in a failing state.
    return not is_failing(node)


def max_unavailable(value: object, node_count: int) -> int:
    """An int, or a percentage of `node_count` rounded down; nil means 1 and 0 becomes 1."""
    if value is None:
        result = 1
    elif isinstance(value, bool):
        raise MaxUnavailableError(f"invalid value for IntOrString: {value!r}")
    elif isinstance(value, int):
        result = value
    elif isinstance(value, str):
        match = _PERCENT.match(value)
        if match is None:
            raise MaxUnavailableError(f'invalid value for IntOrString: invalid type: string is '
                                      f'not a percentage: "{value}"')
        result = int(match.group(1)) * node_count // 100
    else:
        raise MaxUnavailableError(f"invalid value for IntOrString: {value!r}")
    return max(result, 1)


# FleetLock groups are pools; Zincati's default group is the worker pool.
FLEETLOCK_DEFAULT_GROUP, FLEETLOCK_DEFAULT_POOL = "default", "worker"


def pool_for_group(group: str) -> str:
    return FLEETLOCK_DEFAULT_POOL if group == FLEETLOCK_DEFAULT_GROUP else group


def groups_of_pool(pool: str) -> set[str]:
    return {pool, FLEETLOCK_DEFAULT_GROUP} if pool == FLEETLOCK_DEFAULT_POOL else {pool}
