"""Evicting a node's pods over HTTP: machineconfig.store.kube_drain (lightkube) against the fake
API server's Eviction subresource and PodDisruptionBudgets. Time is a fake clock: the tests step
it, nothing sleeps."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client, KubeConfig

from machineconfig.store.base import Blocker, StoreError
from machineconfig.store.kube_drain import (
    BEING_DELETED, WAITING_FOR_DELETION, KubeApi, KubeDrainer, parse_retry_after,
    refusal_blocker,
)
from tests.kube.fakeapi import FakeAPIServer
from tests.kube.fakeapi.eviction import (
    MULTIPLE_BUDGETS, VIOLATION, Eviction, add_budget, add_pod, add_replicaset, install,
    node_pods,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def eviction(fakeapi: FakeAPIServer) -> Eviction:
    return install(fakeapi.state)


@pytest.fixture
def client(kubeconfig: Path) -> Iterator[Client]:
    with Client(config=KubeConfig.from_file(kubeconfig)) as c:
        yield c


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def drainer(client: Client, clock: Clock, eviction: Eviction) -> KubeDrainer:
    return KubeDrainer(KubeApi(client), clock=clock)


def post_eviction(server: FakeAPIServer, namespace: str, name: str, body_name: str | None = None
                  ) -> tuple[int, dict[str, Any], dict[str, str]]:
    body = {"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": body_name or name, "namespace": namespace}}
    req = urllib.request.Request(
        f"{server.url}/api/v1/namespaces/{namespace}/pods/{name}/eviction",
        data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def web(server: FakeAPIServer, replicas: int, on_node: int, budget: dict[str, Any]) -> None:
    """A ReplicaSet `web` with `on_node` of its pods on n1, the rest on n2, and a budget."""
    state = server.state
    add_replicaset(state, "web", replicas)
    for i in range(replicas):
        add_pod(state, f"web-{i}", "n1" if i < on_node else "n2", labels={"app": "web"},
                owner=("ReplicaSet", "web"))
    add_budget(state, "web", {"app": "web"}, **budget)


# ----- what a drain moves and what it leaves

def test_daemonset_mirror_and_finished_pods_stay_emptydir_and_bare_pods_go(
        fakeapi: FakeAPIServer, drainer: KubeDrainer, eviction: Eviction) -> None:
    state = fakeapi.state
    add_pod(state, "agent-x", "n1", namespace="kube-system", owner=("DaemonSet", "agent"))
    add_pod(state, "etcd-n1", "n1", namespace="kube-system",
            annotations={"kubernetes.io/config.mirror": "0123abcd"})
    add_pod(state, "job-done", "n1", phase="Succeeded")
    add_pod(state, "cache", "n1", volumes=[{"name": "scratch", "emptyDir": {}}],
            owner=("ReplicaSet", "cache"))
    add_pod(state, "bare", "n1")
    add_pod(state, "elsewhere", "n2")

    first = drainer.evict_pods("n1")
    assert not first.done and sorted(first.evicted) == ["default/bare", "default/cache"]
    assert {b.pod for b in first.blocking} == {"default/bare", "default/cache"}
    assert drainer.evict_pods("n1").done
    assert node_pods(state, "n1") == ["default/job-done", "kube-system/agent-x",
                                      "kube-system/etcd-n1"]
    assert node_pods(state, "n2") == ["default/elsewhere"]
    assert sorted(key for key, _ in eviction.answered) == ["default/bare", "default/cache"]


def test_an_empty_node_is_done_without_a_single_eviction(
        fakeapi: FakeAPIServer, drainer: KubeDrainer, eviction: Eviction) -> None:
    add_pod(fakeapi.state, "agent-x", "n1", owner=("DaemonSet", "agent"))
    progress = drainer.evict_pods("n1")
    assert progress.done and progress.blocking == ()
    assert eviction.answered == []
    assert ("GET", "/api/v1/pods", "fieldSelector=spec.nodeName%3Dn1") in fakeapi.state.requests


# ----- PodDisruptionBudgets

def test_budget_allowing_one_disruption_drains_one_pod_at_a_time(
        fakeapi: FakeAPIServer, drainer: KubeDrainer, clock: Clock, eviction: Eviction) -> None:
    state = fakeapi.state
    web(fakeapi, replicas=4, on_node=3, budget={"max_unavailable": 1})
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
            assert b.budget == "default/web"
            assert b.message == "The disruption budget web needs 3 healthy pods and has 3 currently"
        if progress.evicted:
            assert len(progress.evicted) == 1  # one at a time
            # the ReplicaSet replaces the evicted pod on another node, and it becomes Ready
            add_pod(state, f"web-new-{len(order)}", "n2", labels={"app": "web"},
                    owner=("ReplicaSet", "web"))
        waits.append(progress.retry_after)
        clock.now += progress.retry_after
    assert sorted(order) == ["default/web-0", "default/web-1", "default/web-2"]
    # after an accepted eviction a 1 s poll for the pod to go; the refused pods are tried again
    # 5 s after their 429
    assert waits == [1.0, 4.0, 1.0, 4.0, 1.0]
    assert node_pods(state, "n1") == []
    codes = [code for _, code in eviction.answered]
    assert codes.count(201) == 3 and codes.count(429) >= 2


def test_budget_allowing_none_blocks_and_names_pod_and_budget(
        fakeapi: FakeAPIServer, drainer: KubeDrainer, clock: Clock, eviction: Eviction) -> None:
    web(fakeapi, replicas=2, on_node=1, budget={"min_available": "100%"})
    for _ in range(3):
        progress = drainer.evict_pods("n1")
        assert not progress.done and progress.evicted == ()
        assert progress.blocking == (Blocker(
            "default/web-0", "default/web",
            "The disruption budget web needs 2 healthy pods and has 2 currently"),)
        assert str(progress.blocking[0]) == (
            "pod default/web-0 blocked by PodDisruptionBudget default/web (The disruption budget "
            "web needs 2 healthy pods and has 2 currently)")
        clock.now += progress.retry_after
    assert node_pods(fakeapi.state, "n1") == ["default/web-0"]
    assert eviction.answered == [("default/web-0", 429)] * 3


def test_retry_after_header_is_honoured(fakeapi: FakeAPIServer, drainer: KubeDrainer,
                                        clock: Clock, eviction: Eviction) -> None:
    eviction.retry_after = 7
    web(fakeapi, replicas=2, on_node=1, budget={"max_unavailable": 0})
    assert drainer.evict_pods("n1").retry_after == 7.0
    clock.now += 6.5  # not yet: no request to the Eviction API
    progress = drainer.evict_pods("n1")
    assert progress.retry_after == pytest.approx(0.5) and len(eviction.answered) == 1
    assert progress.blocking[0].budget == "default/web"  # still named while it waits
    clock.now += 0.5
    assert drainer.evict_pods("n1").retry_after == 7.0
    assert len(eviction.answered) == 2


def test_without_retry_after_the_pod_is_tried_again_after_5s(
        fakeapi: FakeAPIServer, drainer: KubeDrainer, clock: Clock, eviction: Eviction) -> None:
    web(fakeapi, replicas=2, on_node=1, budget={"max_unavailable": 0})
    assert drainer.evict_pods("n1").retry_after == 5.0
    clock.now += 4.9
    assert drainer.evict_pods("n1").retry_after == pytest.approx(0.1)
    assert len(eviction.answered) == 1
    clock.now += 0.1
    drainer.evict_pods("n1")
    assert len(eviction.answered) == 2


def test_a_budget_still_being_processed_answers_retry_after_10(
        fakeapi: FakeAPIServer, drainer: KubeDrainer, eviction: Eviction) -> None:
    web(fakeapi, replicas=3, on_node=1, budget={"max_unavailable": 1})
    eviction.paused = True  # the disruption controller has not seen the new spec yet
    pdbs = fakeapi.rtype("policy", "v1", "poddisruptionbudgets")
    pdb = fakeapi.state.get(pdbs, "default", "web")
    pdb["spec"]["maxUnavailable"] = 2
    fakeapi.state.update(pdbs, "default", "web", pdb)  # generation 2, observedGeneration 1
    code, status, headers = post_eviction(fakeapi, "default", "web-0")
    assert (code, headers.get("Retry-After")) == (429, "10")
    assert status["details"] == {"causes": [{
        "reason": "DisruptionBudget",
        "message": "The disruption budget web is still being processed by the server."}],
        "retryAfterSeconds": 10}
    progress = drainer.evict_pods("n1")
    assert progress.retry_after == 10.0 and progress.blocking[0].budget == "default/web"


# ----- accepted evictions finish before the node counts as empty

def test_waits_for_evicted_pods_to_go(fakeapi: FakeAPIServer, drainer: KubeDrainer,
                                      clock: Clock, eviction: Eviction) -> None:
    eviction.graceful = True
    add_pod(fakeapi.state, "slow", "n1")
    first = drainer.evict_pods("n1")
    assert first.evicted == ("default/slow",)
    assert first.blocking == (Blocker("default/slow", "", WAITING_FOR_DELETION),)
    clock.now += first.retry_after
    second = drainer.evict_pods("n1")
    assert not second.done and second.evicted == ()
    assert len(eviction.answered) == 1  # not evicted twice
    assert eviction.finish_deletions() == ["default/slow"]
    assert drainer.evict_pods("n1").done


def test_a_pod_someone_else_is_deleting_is_waited_for(
        fakeapi: FakeAPIServer, drainer: KubeDrainer, eviction: Eviction) -> None:
    eviction.graceful = True
    add_pod(fakeapi.state, "going", "n1")
    assert post_eviction(fakeapi, "default", "going")[0] == 201
    progress = drainer.evict_pods("n1")
    assert progress.blocking == (Blocker("default/going", "", BEING_DELETED),)
    assert len(eviction.answered) == 1


# ----- the fake answers like kube-apiserver

def test_fake_eviction_answers(fakeapi: FakeAPIServer, eviction: Eviction) -> None:
    state = fakeapi.state
    code, body, _ = post_eviction(fakeapi, "default", "nope")
    assert code == 404 and body["reason"] == "NotFound"
    assert body["message"] == 'pods "nope" not found'
    add_pod(state, "p", "n1", labels={"app": "db"})
    code, body, _ = post_eviction(fakeapi, "default", "p", body_name="q")
    assert (code, body["message"]) == (400, "name in URL does not match name in Eviction object")

    add_budget(state, "db", {"app": "db"}, min_available=1)
    code, body, headers = post_eviction(fakeapi, "default", "p")
    assert code == 429 and "Retry-After" not in headers
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": VIOLATION, "reason": "TooManyRequests", "code": 429,
                    "details": {"causes": [{"reason": "DisruptionBudget", "message":
                                "The disruption budget db needs 1 healthy pods and has 1 "
                                "currently"}]}}
    add_budget(state, "db2", {"app": "db"}, max_unavailable=1)
    code, body, _ = post_eviction(fakeapi, "default", "p")
    assert (code, body["code"], body["status"], body["message"]) == (
        201, 500, "Failure", MULTIPLE_BUDGETS)

    # a Pending pod is deleted without asking the budgets
    add_pod(state, "starting", "n1", labels={"app": "db"}, phase="Pending")
    code, body, _ = post_eviction(fakeapi, "default", "starting")
    assert code == 201 and body["status"] == "Success"
    assert node_pods(state, "n1") == ["default/p"]


def test_fake_budget_arithmetic(fakeapi: FakeAPIServer, eviction: Eviction) -> None:
    state = fakeapi.state
    add_replicaset(state, "api", 3)
    for i in range(3):
        add_pod(state, f"api-{i}", "n1", labels={"app": "api"}, owner=("ReplicaSet", "api"),
                ready=i != 2)
    pdb = add_budget(state, "api", {"app": "api"}, min_available="50%")
    # 50% of 3 rounds up to 2; two of the three pods are Ready
    assert {k: pdb["status"][k] for k in ("expectedPods", "desiredHealthy", "currentHealthy",
                                          "disruptionsAllowed")} == {
        "expectedPods": 3, "desiredHealthy": 2, "currentHealthy": 2, "disruptionsAllowed": 0}
    # the unready pod may go (the budget is satisfied without it), a ready one may not
    assert post_eviction(fakeapi, "default", "api-2")[0] == 201
    assert post_eviction(fakeapi, "default", "api-0")[0] == 429


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
        fakeapi: FakeAPIServer, drainer: KubeDrainer, clock: Clock, eviction: Eviction) -> None:
    add_pod(fakeapi.state, "p", "n1", labels={"app": "db"})
    add_budget(fakeapi.state, "db", {"app": "db"}, min_available=0)
    add_budget(fakeapi.state, "db-too", {"app": "db"}, max_unavailable="50%")
    progress = drainer.evict_pods("n1")
    assert progress.evicted == () and progress.retry_after == 5.0
    assert progress.blocking == (Blocker("default/p", "", MULTIPLE_BUDGETS),)
    clock.now += 5
    drainer.evict_pods("n1")
    assert eviction.answered == [("default/p", 201)] * 2  # asked again, not waited for
    assert node_pods(fakeapi.state, "n1") == ["default/p"]


def test_an_unreachable_api_server_is_a_store_error(fakeapi: FakeAPIServer,
                                                     drainer: KubeDrainer) -> None:
    fakeapi.stop()
    with pytest.raises(StoreError, match=r"^kube: list pods on node n1: "):
        drainer.evict_pods("n1")


def test_fake_unhealthy_pod_eviction_policy(fakeapi: FakeAPIServer, eviction: Eviction) -> None:
    state = fakeapi.state
    for i, ready in enumerate((True, True, False)):
        add_pod(state, f"db-{i}", "n1", labels={"app": "db"}, ready=ready)
    # needs 3 healthy, has 2: under the default policy (IfHealthyBudget) the unready pod stays
    add_budget(state, "db", {"app": "db"}, min_available=3)
    assert post_eviction(fakeapi, "default", "db-2")[0] == 429
    pdbs = fakeapi.rtype("policy", "v1", "poddisruptionbudgets")
    pdb = state.get(pdbs, "default", "db")
    pdb["spec"]["unhealthyPodEvictionPolicy"] = "AlwaysAllow"
    state.update(pdbs, "default", "db", pdb)
    assert post_eviction(fakeapi, "default", "db-2")[0] == 201
    assert post_eviction(fakeapi, "default", "db-0")[0] == 429  # a ready one still may not go
