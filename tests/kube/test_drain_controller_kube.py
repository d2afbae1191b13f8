"""The drain controller on the kube store, on the real control plane: cordon through
spec.unschedulable, eviction through policy/v1, PodDisruptionBudgets, the desiredDrain /
lastAppliedDrain handshake, and what a blocked drain tells the user (the node's drainReason
annotation and a Warning Event). PodDisruptionBudget status comes from the real disruption
controller. The controller's and the drainer's clock is a fake one: an hour of retries runs in a
moment; only what the API server needs time for (a budget's status) is waited for."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from machineconfig.constants import (
    CORDONED_BY_MCC_ANNOTATION as OURS, DESIRED_DRAIN_ANNOTATION as WANT,
    DRAIN_REASON_ANNOTATION as REASON, LAST_APPLIED_DRAIN_ANNOTATION as DONE,
)
from machineconfig.store.kube import KubeStore
from machineconfig.store.kube_drain import KubeApi, KubeDrainer
from mcc.drain_controller import DrainController, drain_err_gauge
from tests.kube.controlplane import ControlPlane
from tests.kube.kit import (
    add_budget, add_owner, add_pod, call, evictions, finish_deletions, node_pods, settle_budget,
)

DRAIN = "drain-rendered-worker-1234"
UNCORDON = "uncordon-rendered-worker-1234"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Cluster:
    """The control plane, a namespace for the pods, a controller's KubeStore and the drain
    controller, the latter two on one fake clock."""

    def __init__(self, cp: ControlPlane, ns: str) -> None:
        self.cp = cp
        self.ns = ns
        self.client = cp.client()
        self.clock = Clock()
        self.store = KubeStore(self.client)
        # The store's drainer on the test clock (KubeStore builds one on the real clock).
        self.store._drainer = KubeDrainer(KubeApi(self.client), clock=self.clock)
        self.controller = DrainController(self.store, clock=self.clock,
                                          drain_err=drain_err_gauge(CollectorRegistry()))
        self.mark = cp.audit_mark()
        self.post_times: list[float] = []  # when each eviction request was made
        for name in ("n1", "n2"):
            code, out = call(cp, "POST", "/api/v1/nodes", {"metadata": {"name": name}, "status": {
                "conditions": [{"type": "Ready", "status": "True"}]}})
            assert code == 201, out

    def node(self, name: str = "n1") -> dict[str, Any]:
        code, node = call(self.cp, "GET", f"/api/v1/nodes/{name}")
        assert code == 200, node
        return node

    def annotations(self, name: str = "n1") -> dict[str, str]:
        return dict(self.node(name)["metadata"].get("annotations") or {})

    def unschedulable(self, name: str = "n1") -> bool:
        return bool(self.node(name).get("spec", {}).get("unschedulable"))

    def evictions(self) -> list[tuple[str, int]]:
        return evictions(self.cp, self.mark)

    def request(self, value: str, name: str = "n1") -> None:
        """What the daemon does: set desiredDrain on its node."""
        self.store.patch_node_annotations(name, {WANT: value})

    def cordon_by_hand(self, name: str = "n1") -> None:
        self.store.set_unschedulable(name, True)

    def one_pass(self) -> dict[str, str]:
        before = len(self.evictions())
        errors = self.controller.sync(self.store.list_nodes())
        self.post_times += [self.clock.now] * (len(self.evictions()) - before)
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
def cluster(clean_cluster: ControlPlane, kube_namespace: str) -> Iterator[Cluster]:
    cluster = Cluster(clean_cluster, kube_namespace)
    try:
        yield cluster
    finally:
        cluster.store.close()  # its watch loops and its client


def web(cluster: Cluster, replicas: int, on_node: int, **budget: Any) -> None:
    cp, ns = cluster.cp, cluster.ns
    owner = add_owner(cp, ns, "ReplicaSet", "web", replicas, {"app": "web"})
    for i in range(replicas):
        add_pod(cp, ns, f"web-{i}", "n1" if i < on_node else "n2", owner, {"app": "web"})
    add_budget(cp, ns, "web", {"app": "web"}, **budget)


def test_drain_moves_everything_but_daemonset_and_mirror_pods(cluster: Cluster) -> None:
    cp, ns = cluster.cp, cluster.ns
    agent = add_owner(cp, ns, "DaemonSet", "agent")
    add_pod(cp, ns, "agent-n1", "n1", agent, {"owner": "agent"})
    add_pod(cp, ns, "kube-apiserver-n1", "n1", annotations={"kubernetes.io/config.mirror": "f00d"})
    cache = add_owner(cp, ns, "ReplicaSet", "cache")
    add_pod(cp, ns, "cache-0", "n1", cache, {"owner": "cache"},
            volumes=[{"name": "scratch", "emptyDir": {"medium": "Memory"}}])
    add_pod(cp, ns, "debug", "n1")
    cluster.request(DRAIN)
    assert cluster.run(until=60) == {}
    assert cluster.unschedulable() and cluster.annotations()[OURS] == "true"
    assert cluster.annotations()[DONE] == DRAIN
    assert node_pods(cp, "n1") == [f"{ns}/agent-n1", f"{ns}/kube-apiserver-n1"]
    assert sorted(k for k, _ in cluster.evictions()) == [f"{ns}/cache-0", f"{ns}/debug"]
    # the cordon went through spec.unschedulable with a merge patch on the Node
    assert any(r.method == "PATCH" and r.path == "/api/v1/nodes/n1"
               for r in cp.requests(cluster.mark))


def test_budget_allowing_one_disruption_drains_slowly_but_completely(cluster: Cluster) -> None:
    cp, ns = cluster.cp, cluster.ns
    web(cluster, replicas=4, on_node=3, max_unavailable=1)
    replaced: set[str] = set()

    def replicaset_controller() -> None:
        """Replace each evicted pod on n2 (where the scheduler may still put pods)."""
        present = {p.split("/")[1] for p in node_pods(cp, "n1")}
        _, owner = call(cp, "GET", f"/apis/apps/v1/namespaces/{ns}/replicasets/web")
        for i in range(3):
            name = f"web-{i}"
            if name not in present and name not in replaced:
                replaced.add(name)
                add_pod(cp, ns, f"{name}-new", "n2", owner, {"app": "web"})
        settle_budget(cp, ns, "web")

    def acknowledged_only_when_empty() -> None:
        if DONE in cluster.annotations():
            assert node_pods(cp, "n1") == [] and cluster.unschedulable()

    def each() -> None:
        acknowledged_only_when_empty()
        replicaset_controller()

    cluster.request(DRAIN)
    assert cluster.run(until=90, each=each) == {}
    assert cluster.annotations()[DONE] == DRAIN
    answered = cluster.evictions()
    accepted = [t for t, (_, code) in zip(cluster.post_times, answered) if code == 201]
    assert len(accepted) == 3 and accepted == sorted(set(accepted))  # one at a time
    assert [code for _, code in answered].count(429) >= 2
    assert cluster.warnings() == []


def test_budget_allowing_none_blocks_and_names_pod_and_budget(cluster: Cluster) -> None:
    cp, ns = cluster.cp, cluster.ns
    web(cluster, replicas=2, on_node=1, min_available=2)
    cluster.request(DRAIN)
    errors = cluster.run(until=90, stop_when_done=False)
    named = (f"drain did not complete within 1m30s: pod {ns}/web-0 blocked by "
             f"PodDisruptionBudget {ns}/web (The disruption budget web needs 2 healthy pods "
             "and has 2 currently)")
    assert errors == {"n1": named}
    assert cluster.annotations()[REASON] == named
    assert DONE not in cluster.annotations() and cluster.unschedulable()
    assert cluster.warnings() == [("DrainBlocked", named)]
    _, events = call(cp, "GET", "/api/v1/namespaces/default/events")
    assert [(e["involvedObject"]["kind"], e["involvedObject"]["name"], e["type"])
            for e in events["items"] if e["reason"] == "DrainBlocked"] == [
        ("Node", "n1", "Warning")]

    # the application owner scales up: the drain goes through on a later attempt
    _, owner = call(cp, "GET", f"/apis/apps/v1/namespaces/{ns}/replicasets/web")
    add_pod(cp, ns, "web-2", "n2", owner, {"app": "web"})
    settle_budget(cp, ns, "web")
    assert cluster.run(until=400) == {}
    assert cluster.annotations()[DONE] == DRAIN and REASON not in cluster.annotations()


def test_retry_after_is_honoured(cluster: Cluster) -> None:
    """A budget whose new spec the disruption controller has not processed yet (the controller
    manager is paused): kube-apiserver answers Retry-After: 10, and the drain asks every 10 s."""
    cp, ns = cluster.cp, cluster.ns
    web(cluster, replicas=2, on_node=1, max_unavailable=1)
    with cp.controller_manager_paused():
        code, out = call(cp, "PATCH", f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/web",
                         {"spec": {"maxUnavailable": 0}}, "application/merge-patch+json")
        assert code == 200, out
        cluster.request(DRAIN)
        cluster.run(until=89, stop_when_done=False)
    assert cluster.post_times == [10.0 * i for i in range(9)]  # 0, 10, ... 80


def test_without_retry_after_evictions_are_retried_every_5s(cluster: Cluster) -> None:
    web(cluster, replicas=2, on_node=1, max_unavailable=0)
    cluster.request(DRAIN)
    cluster.run(until=89, stop_when_done=False)
    assert cluster.post_times == [5.0 * i for i in range(18)]  # 0, 5, ... 85


def test_last_applied_drain_waits_for_evicted_pods_to_go(cluster: Cluster) -> None:
    cp, ns = cluster.cp, cluster.ns
    add_pod(cp, ns, "slow", "n1", grace=30)
    cluster.request(DRAIN)
    cluster.run(until=30, stop_when_done=False)
    assert node_pods(cp, "n1") == [f"{ns}/slow"]  # terminating
    assert DONE not in cluster.annotations()
    assert cluster.evictions() == [(f"{ns}/slow", 201)]
    assert finish_deletions(cp) == [f"{ns}/slow"]
    cluster.run(until=60)
    assert cluster.annotations()[DONE] == DRAIN


def test_uncordon_lifts_only_our_own_cordon(cluster: Cluster) -> None:
    add_pod(cluster.cp, cluster.ns, "debug", "n1")
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
