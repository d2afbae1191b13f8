"""mcc.node_controller: maxUnavailable, membership, candidates, capacity, ordering, paused pools."""
from __future__ import annotations

from typing import Any

import pytest

from machineconfig.constants import (
    CURRENT_CONFIG_ANNOTATION as CUR, DESIRED_CONFIG_ANNOTATION as DES,
    DESIRED_IMAGE_ANNOTATION, MACHINE_CONFIG_DAEMON_STATE_ANNOTATION as STATE,
)
from machineconfig.store.base import NodeRecord
from machineconfig.rollout import MaxUnavailableError, is_unavailable, max_unavailable
from mcc.node_controller import assign_nodes, candidates, reconcile_pool

OLD, NEW = "rendered-worker-old", "rendered-worker-new"
WORKER_SEL = {"matchLabels": {"node-role.kubernetes.io/worker": ""}}


def pool(name: str = "worker", target: str = NEW, selector: Any = None, **spec: Any
         ) -> dict[str, Any]:
    return {"metadata": {"name": name},
            "spec": {"nodeSelector": selector if selector is not None else
                     {"matchLabels": {f"node-role.kubernetes.io/{name}": ""}},
                     "configuration": {"name": target}, **spec}}


def node(name: str, current: str = OLD, desired: str | None = None, state: str = "Done",
         ready: bool = True, unschedulable: bool = False, zone: str | None = None,
         created: str = "2026-01-01T00:00:00Z", roles: tuple[str, ...] = ("worker",),
         **extra: str) -> NodeRecord:
    labels = {f"node-role.kubernetes.io/{r}": "" for r in roles}
    if zone is not None:
        labels["topology.kubernetes.io/zone"] = zone
    ann = {CUR: current, DES: desired if desired is not None else current, STATE: state, **extra}
    return NodeRecord(name, labels, ann, unschedulable, ready, created)


# spec 6.2.6 / MCO's TestMaxUnavailable
@pytest.mark.parametrize(("value", "count", "expected"), [
    (None, 4, 1), (2, 4, 2), (0, 4, 1), ("50%", 4, 2), ("60%", 4, 2), ("10%", 4, 1),
    ("100%", 4, 4), ("0%", 4, 1), (3, 1, 3),
])
def test_max_unavailable(value: object, count: int, expected: int) -> None:
    assert max_unavailable(value, count) == expected


@pytest.mark.parametrize("value", ["60", "50 percent", "40 %", "%", "abc", True, 1.5])
def test_max_unavailable_rejects(value: object) -> None:
    with pytest.raises(MaxUnavailableError):
        max_unavailable(value, 4)


def test_rollout_respects_max_unavailable() -> None:
    nodes = [node(f"n{i}") for i in range(5)]
    r = reconcile_pool(pool(maxUnavailable=2), nodes)
    assert list(r.patches) == ["n0", "n1"]
    assert r.patches["n0"] == {DES: NEW}
    assert r.events == [("SetDesiredConfig", f"Set target for 2 nodes to MachineConfig: {NEW}")]


def test_single_target_event_text() -> None:
    r = reconcile_pool(pool(), [node("a"), node("b")])
    assert r.events == [("SetDesiredConfig", f"Targeted node a to MachineConfig: {NEW}")]


def test_updating_node_uses_capacity() -> None:
    # b already targets NEW and is Working: it is unavailable, so nothing else moves.
    nodes = [node("a"), node("b", desired=NEW, state="Working"), node("c")]
    assert reconcile_pool(pool(), nodes).patches == {}
    r = reconcile_pool(pool(maxUnavailable=2), nodes)
    assert list(r.patches) == ["a"]


def test_unready_and_cordoned_nodes_count_and_are_not_candidates() -> None:
    nodes = [node("a", ready=False), node("b", unschedulable=True), node("c"), node("d")]
    assert reconcile_pool(pool(maxUnavailable=2), nodes).patches == {}
    r = reconcile_pool(pool(maxUnavailable=3), nodes)
    assert list(r.patches) == ["c"]


def test_failing_node_on_target_takes_a_slot() -> None:
    # a failed on NEW (Degraded, still schedulable): not unavailable, but holds capacity.
    nodes = [node("a", desired=NEW, state="Degraded"), node("b"), node("c")]
    assert not is_unavailable(nodes[0])
    assert reconcile_pool(pool(), nodes).patches == {}
    assert list(reconcile_pool(pool(maxUnavailable=2), nodes).patches) == ["b"]


def test_failing_node_is_retargeted_when_the_target_changes() -> None:
    nodes = [node("a", desired="rendered-worker-broken", state="Degraded"), node("b")]
    r = reconcile_pool(pool(), nodes)
    assert list(r.patches) == ["a"]


def test_unreconcilable_counts_as_failing() -> None:
    nodes = [node("a", desired=NEW, state="Unreconcilable"), node("b")]
    assert reconcile_pool(pool(), nodes).patches == {}


def test_zone_then_age_order() -> None:
    nodes = [node("z-none-old", created="2020-01-01T00:00:00Z"),
             node("b-young", zone="b", created="2026-01-02T00:00:00Z"),
             node("b-old", zone="b", created="2026-01-01T00:00:00Z"),
             node("a", zone="a", created="2026-06-01T00:00:00Z")]
    r = reconcile_pool(pool(maxUnavailable=3), nodes)
    assert list(r.patches) == ["a", "b-old", "b-young"]
    r = reconcile_pool(pool(maxUnavailable="100%"), nodes)
    assert len(r.patches) == 4


def test_paused_pool_changes_nothing() -> None:
    r = reconcile_pool(pool(paused=True), [node("a")])
    assert r.patches == {} and r.skipped == "paused"


def test_pool_without_configuration_waits() -> None:
    assert reconcile_pool(pool(target=""), [node("a")]).patches == {}


def test_selecting_all_nodes_is_refused() -> None:
    r = reconcile_pool(pool(selector={}), [node("a")])
    assert r.patches == {}
    assert r.events[0][0] == "SelectingAll"


def test_done_nodes_are_left_alone_and_desired_image_is_dropped() -> None:
    # b's pending image makes it not done, so it takes a slot of maxUnavailable itself.
    nodes = [node("a", current=NEW), node("b", **{DESIRED_IMAGE_ANNOTATION: "img"})]
    assert reconcile_pool(pool(), nodes).patches == {}
    r = reconcile_pool(pool(maxUnavailable=2), nodes)
    assert r.patches == {"b": {DES: NEW, DESIRED_IMAGE_ANNOTATION: None}}


def test_invalid_max_unavailable_raises() -> None:
    with pytest.raises(MaxUnavailableError):
        reconcile_pool(pool(maxUnavailable="50 percent"), [node("a")])


def test_candidates_capacity() -> None:
    chosen, capacity = candidates([node("a"), node("b")], NEW, 1)
    assert [n.name for n in chosen] == ["a", "b"] and capacity == 1


# spec 6.1: membership and the primary pool
def test_primary_pool_rules() -> None:
    pools = [pool("master"), pool("worker"), pool("infra"), pool("gpu")]
    nodes = [node("w", roles=("worker",)), node("m", roles=("master",)),
             node("i", roles=("worker", "infra")), node("mi", roles=("master", "infra")),
             node("two", roles=("infra", "gpu")), node("none", roles=()),
             NodeRecord("win", {"node-role.kubernetes.io/worker": "",
                                "kubernetes.io/os": "windows"})]
    members, errors = assign_nodes(pools, nodes)
    names = {p: [n.name for n in ns] for p, ns in members.items()}
    assert names == {"master": ["m", "mi"], "worker": ["w"], "infra": ["i"], "gpu": []}
    assert errors == {"two": "node two belongs to 2 custom roles, cannot proceed with this Node"}


def test_nil_and_empty_node_selectors_match_nothing() -> None:
    pools = [{"metadata": {"name": "worker"}, "spec": {}}, pool("infra", selector={})]
    members, _ = assign_nodes(pools, [node("a", roles=("worker", "infra"))])
    assert members == {"worker": [], "infra": []}


def test_match_expressions() -> None:
    sel = {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                                {"key": "gone", "operator": "DoesNotExist"}]}
    p = pool("infra", selector=sel)
    yes = NodeRecord("yes", {"tier": "a"})
    no = NodeRecord("no", {"tier": "a", "gone": "x"})
    members, _ = assign_nodes([p], [yes, no])
    assert [n.name for n in members["infra"]] == ["yes"]


def test_control_plane_topology_is_copied_to_every_node() -> None:
    from machineconfig.constants import CONTROL_PLANE_TOPOLOGY_ANNOTATION as TOPO
    nodes = [node("a"), node("b", current=NEW), node("c", **{TOPO: "SingleReplica"})]
    r = reconcile_pool(pool(), nodes, "SingleReplica")
    assert r.patches == {"a": {TOPO: "SingleReplica", DES: NEW}, "b": {TOPO: "SingleReplica"}}
    assert r.targeted == ["a"]
    assert reconcile_pool(pool(paused=True), nodes, "SingleReplica").patches == {}


def test_new_node_without_desired_config_is_adopted() -> None:
    joined = NodeRecord("new", {"node-role.kubernetes.io/worker": ""},
                        {CUR: OLD, STATE: "Done"})
    r = reconcile_pool(pool(), [joined, node("b")])
    # adopted (desired = current), so it is not unavailable and the rollout can start
    assert r.adopted == ["new"]
    assert r.patches["new"] == {DES: NEW}
    assert r.targeted == ["new"]
    r = reconcile_pool(pool(paused=True), [joined])
    assert r.patches == {"new": {DES: OLD}}


def test_inlined_hot_loops_agree_with_the_predicates() -> None:
    """candidates() and calculate_status() inline the predicates for speed: same answers."""
    import random

    from machineconfig.rollout import is_done, is_failing, is_ready
    from mcc.node_controller import is_degraded, targets
    from mcc.pool_status import calculate_status
    rng = random.Random(7)
    configs = ["", OLD, NEW]
    for _ in range(200):
        nodes = []
        for i in range(rng.randint(0, 12)):
            ann = {k: v for k, v in ((CUR, rng.choice(configs)), (DES, rng.choice(configs)),
                                     (STATE, rng.choice(["", "Done", "Working", "Degraded",
                                                         "Unreconcilable"]))) if v}
            if rng.random() < 0.1:
                ann[DESIRED_IMAGE_ANNOTATION] = "img"
            nodes.append(NodeRecord(f"n{i}", {}, ann, rng.random() < 0.2, rng.random() < 0.8))
        status = calculate_status(pool(), nodes, "t")
        assert status["unavailableMachineCount"] == sum(map(is_unavailable, nodes))
        assert status["degradedMachineCount"] == sum(map(is_degraded, nodes))
        updated = [n for n in nodes if is_done(n) and n.annotations.get(CUR) == NEW]
        assert status["updatedMachineCount"] == len(updated)
        assert status["readyMachineCount"] == sum(map(is_ready, updated))
        chosen, capacity = candidates(nodes, NEW, 100)
        unavailable = sum(map(is_unavailable, nodes))
        failing = sum(1 for n in nodes if targets(n, NEW) and is_failing(n))
        if 100 - unavailable > failing:
            assert chosen == [n for n in nodes if not targets(n, NEW) and is_ready(n)]
            assert capacity == 100 - unavailable - failing


# spec 6.2.8 and MCO's TestShouldMakeProgress: UpdateInProgress:PreferNoSchedule on every node
# whose desiredConfig is not the pool's target; removed once it is, other taints untouched
IN_PROGRESS = {"key": "UpdateInProgress", "effect": "PreferNoSchedule"}


def test_update_in_progress_taint_follows_the_target() -> None:
    waiting = [node(f"n{i}") for i in range(3)]
    r = reconcile_pool(pool(maxUnavailable=1), waiting)
    assert r.taints == {"n0": True, "n1": True, "n2": True}
    assert list(r.patches) == ["n0"]  # targeted now: still tainted until the next pass

    targeted = node("n0", desired=NEW, state="Working")
    targeted.taints = [dict(IN_PROGRESS), {"key": "dummy", "effect": "PreferNoSchedule"}]
    still_waiting = node("n1")
    still_waiting.taints = [dict(IN_PROGRESS)]
    r = reconcile_pool(pool(maxUnavailable=1), [targeted, still_waiting])
    assert r.taints == {"n0": False}  # n1 keeps its taint: nothing to change

    done = node("n2", current=NEW)  # already on the target, never tainted
    assert reconcile_pool(pool(), [done]).taints == {}
    # a desiredImage annotation left on a non-layered pool's node is still an update to make
    image = node("n3", current=NEW, **{DESIRED_IMAGE_ANNOTATION: "quay.io/x@sha256:1"})
    assert reconcile_pool(pool(), [image]).taints == {"n3": True}


def test_paused_pool_taints_nothing() -> None:
    assert reconcile_pool(pool(paused=True), [node("n0")]).taints == {}


def test_master_pool_defers_the_controllers_node_while_others_wait() -> None:
    masters = [node(f"m{i}", roles=("master",), created=f"2026-01-0{i + 1}T00:00:00Z")
               for i in range(3)]
    # the oldest master runs the controller: MCO would pick it first, it goes last instead
    r = reconcile_pool(pool("master", maxUnavailable=1), masters, controller_node="m0")
    assert r.targeted == ["m1"]
    assert ("DeferringOperatorNodeUpdate",
            "Deferring update of machine config operator node m0") in r.events
    # the last candidate left is updated (len(candidates) <= 1 defers nothing)
    done = [node("m1", current=NEW, roles=("master",)), node("m2", current=NEW, roles=("master",))]
    r = reconcile_pool(pool("master"), [masters[0], *done], controller_node="m0")
    assert r.targeted == ["m0"] and not any(e[0] == "DeferringOperatorNodeUpdate" for e in r.events)
    # only in the master pool
    workers = [node("w0"), node("w1")]
    r = reconcile_pool(pool(maxUnavailable=2), workers, controller_node="w0")
    assert r.targeted == ["w0", "w1"]


def test_a_pool_with_a_malformed_selector_claims_no_node() -> None:
    """An unknown operator once matched like DoesNotExist and claimed every node without the key;
    values that are a string once matched by substring. Such a pool selects nobody."""
    unknown = pool("odd", selector={"matchExpressions": [{"key": "gpu", "operator": "Foo"}]})
    substring = pool("sub", selector={"matchExpressions": [
        {"key": "node-role.kubernetes.io/worker", "operator": "In", "values": "x"}]})
    for bad in (unknown, substring):
        members, errors = assign_nodes([pool("worker"), bad], [node("w")])
        assert [n.name for n in members["worker"]] == ["w"] and members[bad["metadata"]["name"]] == []
        assert errors == {}
