"""mcc.pool_status: counts, every condition text, transition times, status.configuration."""
from __future__ import annotations

from typing import Any

from machineconfig.constants import (
    CURRENT_CONFIG_ANNOTATION as CUR, DESIRED_CONFIG_ANNOTATION as DES,
    MACHINE_CONFIG_DAEMON_REASON_ANNOTATION as REASON,
    MACHINE_CONFIG_DAEMON_STATE_ANNOTATION as STATE,
)
from machineconfig.store.base import NodeRecord
from machineconfig.status import find_condition
from mcc.pool_status import calculate_status, set_condition, status_events

T = "rendered-worker-new"
T0, T1 = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"


def pool(paused: bool = False, status: Any = None) -> dict[str, Any]:
    return {"metadata": {"name": "worker", "generation": 3},
            "spec": {"paused": paused, "configuration": {"name": T, "source": [{"name": "a"}]}},
            "status": status or {}}


def node(name: str, current: str = T, desired: str = T, state: str = "Done", reason: str = "",
         ready: bool = True) -> NodeRecord:
    return NodeRecord(name, {}, {CUR: current, DES: desired, STATE: state, REASON: reason},
                      ready=ready)


def cond(status: dict[str, Any], kind: str) -> tuple[str, str, str]:
    c = find_condition(status, kind)
    assert c is not None
    return c["status"], c["reason"], c["message"]


def test_all_updated() -> None:
    s = calculate_status(pool(), [node("a"), node("b")], T0)
    assert (s["machineCount"], s["updatedMachineCount"], s["readyMachineCount"],
            s["unavailableMachineCount"], s["degradedMachineCount"]) == (2, 2, 2, 0, 0)
    assert s["observedGeneration"] == 3
    assert cond(s, "Updated") == ("True", "", f"All nodes are updated with MachineConfig {T}")
    assert cond(s, "Updating") == ("False", "", "")
    assert cond(s, "NodeDegraded") == ("False", "", "")
    assert cond(s, "Degraded") == ("False", "", "")
    assert s["configuration"] == {"name": T, "source": [{"name": "a"}]}


def test_updating() -> None:
    s = calculate_status(pool(status={"configuration": {"name": "old"}}),
                         [node("a"), node("b", current="old", state="Working")], T0)
    assert (s["updatedMachineCount"], s["unavailableMachineCount"]) == (1, 1)
    assert cond(s, "Updated") == ("False", "", "")
    assert cond(s, "Updating") == ("True", "", f"All nodes are updating to MachineConfig {T}")
    assert s["configuration"] == {"name": "old"}  # stays until the whole pool is updated


def test_paused() -> None:
    s = calculate_status(pool(paused=True), [node("b", current="old", desired="old")], T0)
    assert cond(s, "Updating") == ("False", "",
                                   f"Pool is paused; will not update to MachineConfig {T}")


def test_node_degraded_texts() -> None:
    nodes = [node("a", desired="x", current="old", state="Degraded", reason="boom"),
             node("b", desired="x", current="old", state="Unreconcilable", reason="no way")]
    s = calculate_status(pool(), nodes, T0)
    reason = "2 nodes are reporting degraded status on sync"
    message = 'Node a is reporting: "boom", Node b is reporting: "no way"'
    assert s["degradedMachineCount"] == 2
    assert cond(s, "NodeDegraded") == ("True", reason, message)
    assert cond(s, "Degraded") == ("True", reason, message)


def test_render_degraded_makes_the_pool_degraded() -> None:
    status: dict[str, Any] = {}
    set_condition(status, "RenderDegraded", True, "", "Failed to render configuration for "
                  "pool worker: boom", T0)
    s = calculate_status(pool(status=status), [node("a")], T1)
    assert cond(s, "RenderDegraded")[0] == "True"
    assert cond(s, "Degraded")[0] == "True"


def test_ready_count_excludes_cordoned_updated_nodes() -> None:
    s = calculate_status(pool(), [node("a", ready=False), node("b")], T0)
    assert (s["updatedMachineCount"], s["readyMachineCount"], s["unavailableMachineCount"]) \
        == (2, 1, 1)
    assert cond(s, "Updated")[0] == "False"


def test_transition_time_kept_unless_status_flips() -> None:
    status: dict[str, Any] = {}
    set_condition(status, "Updating", True, "", "one", T0)
    set_condition(status, "Updating", True, "", "two", T1)
    assert status["conditions"][0]["lastTransitionTime"] == T0
    set_condition(status, "Updating", False, "", "", T1)
    assert status["conditions"][0]["lastTransitionTime"] == T1


def test_unchanged_pool_gives_equal_status() -> None:
    p = pool()
    first = calculate_status(p, [node("a")], T0)
    p["status"] = first
    assert calculate_status(p, [node("a")], T1) == first


def test_events() -> None:
    p = pool(status={"configuration": {"name": "old"}})
    new = calculate_status(p, [node("a")], T0)
    assert status_events(p, new) == [
        ("Completed", f"Pool worker has completed update to MachineConfig {T}")]
    new = calculate_status(p, [node("a", current="old", state="Working")], T0)
    assert status_events(p, new) == [("Updating", f"Pool worker now targeting MachineConfig {T}")]
