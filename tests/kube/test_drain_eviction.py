"""Evicting a node's pods over HTTP: machineconfig.store.kube_drain (lightkube) against the real
kube-apiserver's Eviction subresource and PodDisruptionBudgets whose status the real disruption
controller computes (tests/kube/controlplane.py). Pods are bound to a node by spec.nodeName and
given the status a kubelet would report; nothing runs them. The drainer's time is a fake clock
the tests step; what the API server needs time for (the budget's status) is waited for."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from machineconfig.store.base import Blocker, StoreError
from machineconfig.store.kube_drain import (
    BEING_DELETED, WAITING_FOR_DELETION, KubeApi, KubeDrainer, parse_retry_after,
    refusal_blocker,
)
from tests.kube.controlplane import ControlPlane, free_port
from tests.kube.kit import (
    MERGE, add_budget, add_owner, add_pod, budget, call, evictions, finish_deletions, node_pods,
    post_eviction, settle_budget,
)

VIOLATION = "Cannot evict pod as it would violate the pod's disruption budget."
MULTIPLE_BUDGETS = ("This pod has more than one PodDisruptionBudget, which the eviction "
                    "subresource does not support.")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cp(clean_cluster: ControlPlane) -> ControlPlane:
    return clean_cluster


@pytest.fixture
def ns(kube_namespace: str) -> str:
    return kube_namespace


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def drainer(cp: ControlPlane, clock: Clock) -> Iterator[KubeDrainer]:
    client = cp.client()
    try:
        yield KubeDrainer(KubeApi(client), clock=clock)
    finally:
        client.close()


def web(cp: ControlPlane, ns: str, replicas: int, on_node: int, **budget: Any) -> None:
    """A ReplicaSet `web` with `on_node` of its pods on n1, the rest on n2, and a budget."""
    owner = add_owner(cp, ns, "ReplicaSet", "web", replicas, {"app": "web"})
    for i in range(replicas):
        add_pod(cp, ns, f"web-{i}", "n1" if i < on_node else "n2", owner, {"app": "web"})
    add_budget(cp, ns, "web", {"app": "web"}, **budget)


# ----- what a drain moves and what it leaves

def test_daemonset_mirror_and_finished_pods_stay_emptydir_and_bare_pods_go(
        cp: ControlPlane, ns: str, drainer: KubeDrainer) -> None:
    mark = cp.audit_mark()
    agent = add_owner(cp, ns, "DaemonSet", "agent")
    add_pod(cp, ns, "agent-x", "n1", agent, {"owner": "agent"})
    add_pod(cp, ns, "etcd-n1", "n1", annotations={"kubernetes.io/config.mirror": "0123abcd"})
    add_pod(cp, ns, "job-done", "n1", phase="Succeeded")
    cache = add_owner(cp, ns, "ReplicaSet", "cache")
    add_pod(cp, ns, "cache", "n1", cache, {"owner": "cache"},
            volumes=[{"name": "scratch", "emptyDir": {}}])
    add_pod(cp, ns, "bare", "n1")
    add_pod(cp, ns, "elsewhere", "n2")

    first = drainer.evict_pods("n1")
    assert not first.done and sorted(first.evicted) == [f"{ns}/bare", f"{ns}/cache"]
    assert {b.pod for b in first.blocking} == {f"{ns}/bare", f"{ns}/cache"}
    assert drainer.evict_pods("n1").done
    assert node_pods(cp, "n1") == [f"{ns}/agent-x", f"{ns}/etcd-n1", f"{ns}/job-done"]
    assert node_pods(cp, "n2") == [f"{ns}/elsewhere"]
    assert sorted(evictions(cp, mark)) == [(f"{ns}/bare", 201), (f"{ns}/cache", 201)]


def test_an_empty_node_is_done_without_a_single_eviction(
        cp: ControlPlane, ns: str, drainer: KubeDrainer) -> None:
    mark = cp.audit_mark()
    agent = add_owner(cp, ns, "DaemonSet", "agent")
    add_pod(cp, ns, "agent-x", "n1", agent, {"owner": "agent"})
    progress = drainer.evict_pods("n1")
    assert progress.done and progress.blocking == ()
    assert evictions(cp, mark) == []
    assert "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1" in [
        r.uri for r in cp.requests(mark) if r.verb == "list"]


# ----- PodDisruptionBudgets

def test_budget_allowing_one_disruption_drains_one_pod_at_a_time(
        cp: ControlPlane, ns: str, drainer: KubeDrainer, clock: Clock) -> None:
    mark = cp.audit_mark()
    web(cp, ns, replicas=4, on_node=3, max_unavailable=1)
    order: list[str] = []
    waits: list[float] = []
    steps = 0
    while True:
        progress = drainer.evict_pods("n1")
        steps += 1
        assert steps < 20, progress
        order.extend(progress.evicted)
        if progress.done:
            break
        refused = [b for b in progress.blocking if b.budget]
        for b in refused:  # the budget is named, with the API server's words
            assert b.budget == f"{ns}/web"
            assert b.message == "The disruption budget web needs 3 healthy pods and has 3 currently"
        if progress.evicted:
            assert len(progress.evicted) == 1  # one at a time
            # the ReplicaSet replaces the evicted pod on another node, and it becomes Ready
            owner = add_owner_ref(cp, ns, "web")
            add_pod(cp, ns, f"web-new-{len(order)}", "n2", owner, {"app": "web"})
            settle_budget(cp, ns, "web")
        waits.append(progress.retry_after)
        clock.now += progress.retry_after
    assert sorted(order) == [f"{ns}/web-0", f"{ns}/web-1", f"{ns}/web-2"]
    # after an accepted eviction a 1 s poll for the pod to go; the refused pods are tried again
    # 5 s after their 429
    assert waits == [1.0, 4.0, 1.0, 4.0, 1.0]
    assert node_pods(cp, "n1") == []
    codes = [code for _, code in evictions(cp, mark)]
    assert codes.count(201) == 3 and codes.count(429) >= 2


def add_owner_ref(cp: ControlPlane, ns: str, name: str) -> dict[str, Any]:
    code, owner = call(cp, "GET", f"/apis/apps/v1/namespaces/{ns}/replicasets/{name}")
    assert code == 200, owner
    return owner


def test_budget_allowing_none_blocks_and_names_pod_and_budget(
        cp: ControlPlane, ns: str, drainer: KubeDrainer, clock: Clock) -> None:
    web(cp, ns, replicas=2, on_node=1, min_available="100%")
    mark = cp.audit_mark()
    for _ in range(3):
        progress = drainer.evict_pods("n1")
        assert not progress.done and progress.evicted == ()
        assert progress.blocking == (Blocker(
            f"{ns}/web-0", f"{ns}/web",
            "The disruption budget web needs 2 healthy pods and has 2 currently"),)
        assert str(progress.blocking[0]) == (
            f"pod {ns}/web-0 blocked by PodDisruptionBudget {ns}/web (The disruption budget "
            "web needs 2 healthy pods and has 2 currently)")
        clock.now += progress.retry_after
    assert node_pods(cp, "n1") == [f"{ns}/web-0"]
    assert evictions(cp, mark) == [(f"{ns}/web-0", 429)] * 3


def test_without_retry_after_the_pod_is_tried_again_after_5s(
        cp: ControlPlane, ns: str, drainer: KubeDrainer, clock: Clock) -> None:
    web(cp, ns, replicas=2, on_node=1, max_unavailable=0)
    mark = cp.audit_mark()
    assert drainer.evict_pods("n1").retry_after == 5.0
    clock.now += 4.9
    assert drainer.evict_pods("n1").retry_after == pytest.approx(0.1)
    assert len(evictions(cp, mark)) == 1
    clock.now += 0.1
    drainer.evict_pods("n1")
    assert len(evictions(cp, mark)) == 2


def test_a_budget_still_being_processed_answers_retry_after_10_and_it_is_honoured(
        cp: ControlPlane, ns: str, drainer: KubeDrainer, clock: Clock) -> None:
    """The budget's spec changed and the disruption controller has not seen it yet
    (kube-controller-manager is paused): kube-apiserver answers 429 with Retry-After: 10, and
    the drainer asks again only after that."""
    web(cp, ns, replicas=3, on_node=1, max_unavailable=1)
    with cp.controller_manager_paused():
        code, pdb = call(cp, "PATCH", f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/web",
                         {"spec": {"maxUnavailable": 2}}, MERGE)
        assert code == 200 and pdb["metadata"]["generation"] > pdb["status"][
            "observedGeneration"]
        code, status, headers = post_eviction(cp, ns, "web-0")
        assert (code, headers.get("Retry-After")) == (429, "10")
        assert status["details"]["causes"] == [{
            "reason": "DisruptionBudget",
            "message": "The disruption budget web is still being processed by the server."}]
        mark = cp.audit_mark()
        progress = drainer.evict_pods("n1")
        assert progress.retry_after == 10.0 and progress.blocking[0].budget == f"{ns}/web"
        clock.now += 9.5  # not yet: no request to the Eviction API
        progress = drainer.evict_pods("n1")
        assert progress.retry_after == pytest.approx(0.5) and len(evictions(cp, mark)) == 1
        assert progress.blocking[0].budget == f"{ns}/web"  # still named while it waits
        clock.now += 0.5
        assert drainer.evict_pods("n1").retry_after == 10.0
        assert len(evictions(cp, mark)) == 2
    settle_budget(cp, ns, "web")
    clock.now += 10
    assert drainer.evict_pods("n1").evicted == (f"{ns}/web-0",)


# ----- accepted evictions finish before the node counts as empty

def test_waits_for_evicted_pods_to_go(cp: ControlPlane, ns: str, drainer: KubeDrainer,
                                      clock: Clock) -> None:
    mark = cp.audit_mark()
    add_pod(cp, ns, "slow", "n1", grace=30)
    first = drainer.evict_pods("n1")
    assert first.evicted == (f"{ns}/slow",)
    assert first.blocking == (Blocker(f"{ns}/slow", "", WAITING_FOR_DELETION),)
    clock.now += first.retry_after
    second = drainer.evict_pods("n1")
    assert not second.done and second.evicted == ()
    assert len(evictions(cp, mark)) == 1  # not evicted twice
    assert finish_deletions(cp) == [f"{ns}/slow"]
    assert drainer.evict_pods("n1").done


def test_a_pod_someone_else_is_deleting_is_waited_for(
        cp: ControlPlane, ns: str, drainer: KubeDrainer) -> None:
    add_pod(cp, ns, "going", "n1", grace=30)
    mark = cp.audit_mark()
    assert post_eviction(cp, ns, "going")[0] == 201
    progress = drainer.evict_pods("n1")
    assert progress.blocking == (Blocker(f"{ns}/going", "", BEING_DELETED),)
    assert len(evictions(cp, mark)) == 1


# ----- what kube-apiserver answers, as kube_drain reads it

def test_eviction_answers(cp: ControlPlane, ns: str) -> None:
    code, body, _ = post_eviction(cp, ns, "nope")
    assert code == 404 and body["reason"] == "NotFound"
    assert body["message"] == 'pods "nope" not found'
    add_pod(cp, ns, "p", "n1", labels={"app": "db"})
    code, body, _ = post_eviction(cp, ns, "p", body_name="q")
    assert (code, body["message"]) == (400, "name in URL does not match name in Eviction object")

    add_budget(cp, ns, "db", {"app": "db"}, min_available=1)
    code, body, headers = post_eviction(cp, ns, "p")
    assert code == 429 and "Retry-After" not in headers
    assert (body["reason"], body["message"]) == ("TooManyRequests", VIOLATION)
    assert body["details"]["causes"] == [{
        "reason": "DisruptionBudget",
        "message": "The disruption budget db needs 1 healthy pods and has 1 currently"}]
    assert refusal_blocker(f"{ns}/p", body) == Blocker(
        f"{ns}/p", f"{ns}/db", "The disruption budget db needs 1 healthy pods and has 1 currently")

    # a Pending pod is deleted without asking the budgets
    add_pod(cp, ns, "starting", "n1", labels={"app": "db"}, phase="Pending")
    code, body, _ = post_eviction(cp, ns, "starting")
    assert code == 201 and body["status"] == "Success"
    assert node_pods(cp, "n1") == [f"{ns}/p"]
    # an unready pod may go while the budget is satisfied without it
    add_pod(cp, ns, "unready", "n1", labels={"app": "db"}, ready=False)
    assert budget(cp, ns, "db")["status"]["disruptionsAllowed"] == 0
    assert post_eviction(cp, ns, "unready")[0] == 201


def test_retry_after_values() -> None:
    assert parse_retry_after("7") == 7.0 and parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("-3") is None
    # an HTTP date: the seconds from now
    assert parse_retry_after("Fri, 27 Nov 2026 16:00:30 GMT",
                             now_wall=lambda: 1795795200.0) == 30.0


def test_refusals_without_a_budget_name_the_api_message() -> None:
    status = {"kind": "Status", "status": "Failure", "code": 500, "message": MULTIPLE_BUDGETS}
    assert refusal_blocker("shop/web-0", status) == Blocker("shop/web-0", "", MULTIPLE_BUDGETS)
    assert str(refusal_blocker("shop/web-0", status)) == f"pod shop/web-0: {MULTIPLE_BUDGETS}"


def test_a_pod_under_two_budgets_is_reported_not_waited_for(
        cp: ControlPlane, ns: str, drainer: KubeDrainer, clock: Clock) -> None:
    add_pod(cp, ns, "p", "n1", labels={"app": "db"})
    add_budget(cp, ns, "db", {"app": "db"}, min_available=0)
    add_budget(cp, ns, "db-too", {"app": "db"}, max_unavailable="50%")
    mark = cp.audit_mark()
    progress = drainer.evict_pods("n1")
    assert progress.evicted == () and progress.retry_after == 5.0
    assert progress.blocking == (Blocker(f"{ns}/p", "", MULTIPLE_BUDGETS),)
    clock.now += 5
    drainer.evict_pods("n1")
    assert len(evictions(cp, mark)) == 2  # asked again, not waited for
    assert node_pods(cp, "n1") == [f"{ns}/p"]


def test_an_unreachable_api_server_is_a_store_error(cp: ControlPlane, clock: Clock) -> None:
    from lightkube import Client, KubeConfig

    text = cp.kubeconfig.read_text().replace(cp.url, f"https://127.0.0.1:{free_port()}")
    gone = cp.workdir / "gone.kubeconfig"
    gone.write_text(text)
    with Client(KubeConfig.from_file(str(gone))) as client:
        drainer = KubeDrainer(KubeApi(client), clock=clock)
        with pytest.raises(StoreError, match=r"^kube: list pods on node n1: "):
            drainer.evict_pods("n1")
