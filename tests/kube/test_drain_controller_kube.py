"""The drain controller on the kube store, over HTTP against the fake API server: cordon through
spec.unschedulable, eviction through policy/v1, PodDisruptionBudgets, the desiredDrain /
lastAppliedDrain handshake, and what a blocked drain tells the user (the node's drainReason
annotation and a Warning Event). The controller's and the drainer's clock is a fake one: an hour of
retries runs in a moment and nothing sleeps."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import Client, KubeConfig
from prometheus_client import CollectorRegistry

from machineconfig.constants import (
    CORDONED_BY_MCC_ANNOTATION as OURS, DESIRED_DRAIN_ANNOTATION as WANT,
    DRAIN_REASON_ANNOTATION as REASON, LAST_APPLIED_DRAIN_ANNOTATION as DONE,
)
from machineconfig.store.kube import KubeStore
from machineconfig.store.kube_drain import KubeApi, KubeDrainer
from mcc.drain_controller import DrainController, drain_err_gauge
from tests.kube.fakeapi import FakeAPIServer
from tests.kube.fakeapi.eviction import (
    Eviction, add_budget, add_pod, add_replicaset, install, node_pods,
)

DRAIN = "drain-rendered-worker-1234"
UNCORDON = "uncordon-rendered-worker-1234"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Cluster:
    """The fake API server with the Eviction API, a controller's KubeStore over HTTP and the drain
    controller, all on one fake clock."""

    def __init__(self, server: FakeAPIServer, client: Client) -> None:
        self.server = server
        self.state = server.state
        self.eviction: Eviction = install(server.state)
        self.clock = Clock()
        self.store = KubeStore(client)
        # The store's drainer on the test clock (KubeStore builds one on the real clock).
        self.store._drainer = KubeDrainer(KubeApi(client), clock=self.clock)
        self.controller = DrainController(self.store, clock=self.clock,
                                          drain_err=drain_err_gauge(CollectorRegistry()))
        self.post_times: list[float] = []  # when each eviction request was made
        for name in ("n1", "n2"):
            server.create("", "v1", "nodes", {"metadata": {"name": name}, "status": {
                "conditions": [{"type": "Ready", "status": "True"}]}})

    def node(self, name: str = "n1") -> dict[str, Any]:
        return self.state.get(self.server.rtype("", "v1", "nodes"), "", name)

    def annotations(self, name: str = "n1") -> dict[str, str]:
        return dict(self.node(name)["metadata"].get("annotations") or {})

    def unschedulable(self, name: str = "n1") -> bool:
        return bool(self.node(name).get("spec", {}).get("unschedulable"))

    def request(self, value: str, name: str = "n1") -> None:
        """What the daemon does: set desiredDrain on its node."""
        self.store.patch_node_annotations(name, {WANT: value})

    def cordon_by_hand(self, name: str = "n1") -> None:
        self.store.set_unschedulable(name, True)

    def one_pass(self) -> dict[str, str]:
        before = len(self.eviction.answered)
        errors = self.controller.sync(self.store.list_nodes())
        self.post_times += [self.clock.now] * (len(self.eviction.answered) - before)
        return errors

    def run(self, until: float, stop_when_done: bool = True,
            each: Any = None) -> dict[str, str]:
        """Passes whenever the controller asks to be woken, up to `until` seconds."""
        errors: dict[str, str] = {}
        while self.clock.now <= until:
            errors = self.one_pass()
            if each is not None:
                each()
            wait = self.controller.wake_in()
            if wait is None and stop_when_done:
                break
            self.clock.now += max(wait or 1.0, 0.001)
        return errors

    def warnings(self) -> list[tuple[str, str]]:
        return [(e.reason, e.message) for e in self.store.list_events(kind="Node", name="n1")
                if e.type == "Warning"]


@pytest.fixture
def cluster(fakeapi: FakeAPIServer, kubeconfig: Path) -> Iterator[Cluster]:
    with Client(config=KubeConfig.from_file(kubeconfig)) as client:
        cluster = Cluster(fakeapi, client)
        try:
            yield cluster
        finally:
            cluster.store.close()  # its watch loops, before the client goes


def web(cluster: Cluster, replicas: int, on_node: int, **budget: Any) -> None:
    state = cluster.state
    add_replicaset(state, "web", replicas)
    for i in range(replicas):
        add_pod(state, f"web-{i}", "n1" if i < on_node else "n2", labels={"app": "web"},
                owner=("ReplicaSet", "web"))
    add_budget(state, "web", {"app": "web"}, **budget)


def test_drain_moves_everything_but_daemonset_and_mirror_pods(cluster: Cluster) -> None:
    state = cluster.state
    add_pod(state, "agent-n1", "n1", namespace="kube-system", owner=("DaemonSet", "agent"))
    add_pod(state, "kube-apiserver-n1", "n1", namespace="kube-system",
            annotations={"kubernetes.io/config.mirror": "f00d"})
    add_pod(state, "cache-0", "n1", owner=("ReplicaSet", "cache"),
            volumes=[{"name": "scratch", "emptyDir": {"medium": "Memory"}}])
    add_pod(state, "debug", "n1")
    cluster.request(DRAIN)
    assert cluster.run(until=60) == {}
    assert cluster.unschedulable() and cluster.annotations()[OURS] == "true"
    assert cluster.annotations()[DONE] == DRAIN
    assert node_pods(state, "n1") == ["kube-system/agent-n1", "kube-system/kube-apiserver-n1"]
    assert sorted(k for k, _ in cluster.eviction.answered) == ["default/cache-0", "default/debug"]
    # the cordon went through spec.unschedulable with a merge patch on the Node
    assert any(m == "PATCH" and p == "/api/v1/nodes/n1" for m, p, _ in state.requests)


def test_budget_allowing_one_disruption_drains_slowly_but_completely(cluster: Cluster) -> None:
    web(cluster, replicas=4, on_node=3, max_unavailable=1)
    replaced: set[str] = set()

    def replicaset_controller() -> None:
        """Replace each evicted pod on n2 (where the scheduler may still put pods)."""
        present = {p.split("/")[1] for p in node_pods(cluster.state, "n1")}
        for i in range(3):
            name = f"web-{i}"
            if name not in present and name not in replaced:
                replaced.add(name)
                add_pod(cluster.state, f"{name}-new", "n2", labels={"app": "web"},
                        owner=("ReplicaSet", "web"))

    def acknowledged_only_when_empty() -> None:
        if DONE in cluster.annotations():
            assert node_pods(cluster.state, "n1") == [] and cluster.unschedulable()

    def each() -> None:
        acknowledged_only_when_empty()
        replicaset_controller()

    cluster.request(DRAIN)
    assert cluster.run(until=90, each=each) == {}
    assert cluster.annotations()[DONE] == DRAIN
    accepted = [t for t, (_, code) in zip(cluster.post_times, cluster.eviction.answered)
                if code == 201]
    assert len(accepted) == 3 and accepted == sorted(set(accepted))  # one at a time
    assert [code for _, code in cluster.eviction.answered].count(429) >= 2
    assert cluster.warnings() == []


def test_budget_allowing_none_blocks_and_names_pod_and_budget(cluster: Cluster) -> None:
    web(cluster, replicas=2, on_node=1, min_available=2)
    cluster.request(DRAIN)
    errors = cluster.run(until=90, stop_when_done=False)
    named = ("drain did not complete within 1m30s: pod default/web-0 blocked by "
             "PodDisruptionBudget default/web (The disruption budget web needs 2 healthy pods "
             "and has 2 currently)")
    assert errors == {"n1": named}
    assert cluster.annotations()[REASON] == named
    assert DONE not in cluster.annotations() and cluster.unschedulable()
    assert cluster.warnings() == [("DrainBlocked", named)]
    events = cluster.state.list(cluster.server.rtype("", "v1", "events"), "default")[0]
    assert [(e["involvedObject"]["kind"], e["involvedObject"]["name"], e["type"])
            for e in events if e["reason"] == "DrainBlocked"] == [("Node", "n1", "Warning")]

    # the application owner scales up: the drain goes through on a later attempt
    add_pod(cluster.state, "web-2", "n2", labels={"app": "web"}, owner=("ReplicaSet", "web"))
    assert cluster.run(until=400) == {}
    assert cluster.annotations()[DONE] == DRAIN and REASON not in cluster.annotations()


def test_retry_after_is_honoured(cluster: Cluster) -> None:
    cluster.eviction.retry_after = 7
    web(cluster, replicas=2, on_node=1, max_unavailable=0)
    cluster.request(DRAIN)
    cluster.run(until=89, stop_when_done=False)
    assert cluster.post_times == [7.0 * i for i in range(13)]  # 0, 7, ... 84


def test_without_retry_after_evictions_are_retried_every_5s(cluster: Cluster) -> None:
    web(cluster, replicas=2, on_node=1, max_unavailable=0)
    cluster.request(DRAIN)
    cluster.run(until=89, stop_when_done=False)
    assert cluster.post_times == [5.0 * i for i in range(18)]  # 0, 5, ... 85


def test_last_applied_drain_waits_for_evicted_pods_to_go(cluster: Cluster) -> None:
    cluster.eviction.graceful = True
    add_pod(cluster.state, "slow", "n1")
    cluster.request(DRAIN)
    cluster.run(until=30, stop_when_done=False)
    assert node_pods(cluster.state, "n1") == ["default/slow"]  # terminating
    assert DONE not in cluster.annotations()
    assert cluster.eviction.answered == [("default/slow", 201)]
    cluster.eviction.finish_deletions()
    cluster.run(until=60)
    assert cluster.annotations()[DONE] == DRAIN


def test_uncordon_lifts_only_our_own_cordon(cluster: Cluster) -> None:
    add_pod(cluster.state, "debug", "n1")
    cluster.request(DRAIN)
    cluster.run(until=30)
    cluster.request(UNCORDON)
    cluster.run(until=31)
    annotations = cluster.annotations()
    assert not cluster.unschedulable() and OURS not in annotations
    assert annotations[DONE] == UNCORDON

    cluster.cordon_by_hand()  # an administrator's cordon, before the next update
    cluster.request("drain-rendered-worker-5678")
    cluster.run(until=60)
    assert OURS not in cluster.annotations()
    cluster.request("uncordon-rendered-worker-5678")
    cluster.run(until=61)
    assert cluster.unschedulable()
    assert cluster.annotations()[DONE] == "uncordon-rendered-worker-5678"
