"""mcc.drain_controller on the local store: drain = cordon mark, uncordon only our cordon,
the lastAppliedDrain echo, unknown verbs; and, on a store that evicts pods, the per-node drain
state machine with MCO's retry schedule (a fake clock, no sleeping)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from machineconfig.constants import (
    CORDONED_BY_MCC_ANNOTATION as OURS, DESIRED_DRAIN_ANNOTATION as WANT,
    DRAIN_REASON_ANNOTATION as REASON, LAST_APPLIED_DRAIN_ANNOTATION as DONE,
)
from machineconfig.store import Store
from machineconfig.store.base import Blocker, DrainProgress
from mcc import drain_controller
from tests.support.clusterkit import make_store


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    s, _ = make_store(tmp_path)
    s.register_node("n1", {"node-role.kubernetes.io/worker": ""})
    return s


def request(store: Store, value: str) -> dict[str, str]:
    store.patch_node_annotations("n1", {WANT: value})
    return drain_controller.sync(store, store.list_nodes())


def test_drain_cordons_and_acknowledges(store: Store) -> None:
    assert request(store, "drain-rendered-worker-a") == {}
    node = store.get_node("n1")
    assert node.unschedulable
    assert node.annotations[DONE] == "drain-rendered-worker-a"
    assert node.annotations[OURS] == "true"


def test_uncordon_clears_our_cordon(store: Store) -> None:
    request(store, "drain-rendered-worker-a")
    assert request(store, "uncordon-rendered-worker-a") == {}
    node = store.get_node("n1")
    assert not node.unschedulable
    assert node.annotations[DONE] == "uncordon-rendered-worker-a"
    assert OURS not in node.annotations


def test_uncordon_leaves_an_administrators_cordon(store: Store) -> None:
    store.set_unschedulable("n1", True)
    request(store, "drain-rendered-worker-a")  # already cordoned: not ours
    assert OURS not in store.get_node("n1").annotations
    request(store, "uncordon-rendered-worker-a")
    node = store.get_node("n1")
    assert node.unschedulable
    assert node.annotations[DONE] == "uncordon-rendered-worker-a"


def test_acknowledged_request_is_not_redone(store: Store) -> None:
    request(store, "drain-rendered-worker-a")
    store.set_unschedulable("n1", False)  # someone uncordoned after we acknowledged
    assert drain_controller.pending_requests(store.list_nodes()) == []


def test_unknown_verb(store: Store) -> None:
    errors = request(store, "evict-rendered-worker-a")
    assert errors == {"n1": "node n1: non-recognized drain verb detected evict"}
    assert DONE not in store.get_node("n1").annotations


# ----- a store that evicts pods (kube): the per-node drain state machine and MCO's schedule

class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class EvictingStore:
    """The local store plus a scripted Eviction API standing in for the cluster: `evict_pods`
    answers `self.answer` and records when it was asked (tests/kube drives the real one)."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self.clock = clock
        self.calls: list[float] = []
        self.answer = DrainProgress(done=True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def evict_pods(self, node: str) -> DrainProgress:
        assert self._store.get_node(node).unschedulable, "evicting from a schedulable node"
        self.calls.append(self.clock.now)
        return self.answer


BUDGET_BLOCKS = DrainProgress(done=False, blocking=(
    Blocker("shop/web-0", "shop/web", "The disruption budget web needs 2 healthy pods and has 2 "
            "currently"),), retry_after=5.0)
NAMED = ("drain did not complete within 1m30s: pod shop/web-0 blocked by PodDisruptionBudget "
         "shop/web (The disruption budget web needs 2 healthy pods and has 2 currently)")


@pytest.fixture()
def clock() -> Clock:
    return Clock()


@pytest.fixture()
def kube(store: Store, clock: Clock) -> EvictingStore:
    return EvictingStore(store, clock)


@pytest.fixture()
def controller(kube: EvictingStore, clock: Clock) -> drain_controller.DrainController:
    gauge = drain_controller.drain_err_gauge(CollectorRegistry())
    dc = drain_controller.DrainController(cast(Store, kube), clock=clock, drain_err=gauge)
    assert dc.evictor is kube
    return dc


def run_until(dc: drain_controller.DrainController, kube: EvictingStore, clock: Clock,
              end: float) -> dict[str, str]:
    """Pass after pass, each when the controller asks to be woken, until `end` seconds."""
    errors: dict[str, str] = {}
    while clock.now <= end:
        errors = dc.sync(kube.list_nodes())
        wait = dc.wake_in()
        if wait is None:
            break
        clock.now += max(wait, 0.001)
    return errors


def drain_err(dc: drain_controller.DrainController) -> float | None:
    for metric in dc.drain_err.collect():
        for sample in metric.samples:
            if sample.labels == {"node": "n1"}:
                return float(sample.value)
    return None


def warnings(store: Store) -> list[tuple[str, str]]:
    return [(e.reason, e.message) for e in store.list_events(kind="Node", name="n1")
            if e.type == "Warning"]


def test_local_store_offers_no_eviction(store: Store) -> None:
    assert drain_controller.DrainController(store).evictor is None


def test_evicting_store_acknowledges_only_an_empty_cordoned_node(
        store: Store, kube: EvictingStore, controller: drain_controller.DrainController,
        clock: Clock) -> None:
    store.patch_node_annotations("n1", {WANT: "drain-rendered-worker-a"})
    kube.answer = DrainProgress(done=False, blocking=(Blocker("shop/web-0", "", "eviction "
                                "accepted, waiting for the pod to go"),), retry_after=1.0)
    assert controller.sync(store.list_nodes()) == {}
    node = store.get_node("n1")
    assert node.unschedulable and node.annotations[OURS] == "true"
    assert DONE not in node.annotations
    assert controller.wake_in() == 1.0
    clock.now = 0.5  # not due: no eviction step
    controller.sync(store.list_nodes())
    assert kube.calls == [0.0]
    clock.now = 1.0
    kube.answer = DrainProgress(done=True)
    assert controller.sync(store.list_nodes()) == {}
    assert store.get_node("n1").annotations[DONE] == "drain-rendered-worker-a"
    assert controller.wake_in() is None
    assert warnings(store) == []


def test_blocked_drain_follows_mcos_schedule_and_names_the_budget(
        store: Store, kube: EvictingStore, controller: drain_controller.DrainController,
        clock: Clock) -> None:
    store.patch_node_annotations("n1", {WANT: "drain-rendered-worker-a"})
    kube.answer = BUDGET_BLOCKS
    errors = run_until(controller, kube, clock, 89.9)
    assert errors == {}  # within the first attempt: nothing to report yet
    assert kube.calls == [5.0 * i for i in range(18)]  # every Retry-After (5 s) for 90 s
    errors = run_until(controller, kube, clock, 90.0)
    assert errors == {"n1": NAMED}
    node = store.get_node("n1")
    assert node.annotations[REASON] == NAMED and DONE not in node.annotations
    assert warnings(store) == [("DrainBlocked", NAMED)]

    # failed attempts are retried 1 minute later, each given 90 s again
    kube.calls.clear()
    run_until(controller, kube, clock, 600.0)
    starts = [t for i, t in enumerate(kube.calls) if i == 0 or t - kube.calls[i - 1] > 5]
    assert starts == [150.0, 300.0, 450.0, 600.0]
    assert warnings(store) == [("DrainBlocked", NAMED)]  # the same blockers: one event

    # failing for more than 10 minutes: every 5 minutes, with DrainThresholdExceeded
    kube.calls.clear()
    run_until(controller, kube, clock, 1400.0)
    starts = [t for i, t in enumerate(kube.calls) if i == 0 or t - kube.calls[i - 1] > 5]
    # the attempt begun at 600 s goes on (605 s is its next step) and fails at 690 s, past 10
    # minutes of failing: the next ones start 5 minutes after each failure
    assert starts == [605.0, 990.0, 1380.0]
    threshold = [m for r, m in warnings(store) if r == "DrainThresholdExceeded"]
    assert threshold == [
        "Drain failed. Drain has been failing for more than 10 minutes. Waiting 5 minutes then "
        f"retrying. Error message from drain: {NAMED}"] * 2
    assert drain_err(controller) is None

    # after an hour: DrainFailed and the metric, and it keeps trying
    run_until(controller, kube, clock, 3720.0)  # attempts start at 1380 + 390 k s
    assert ("DrainFailed", "node n1: drain exceeded timeout: 1h0m0s. Will continue to retry.") \
        in warnings(store)
    assert drain_err(controller) == 1.0
    kube.answer = DrainProgress(done=True)
    assert run_until(controller, kube, clock, 5000.0) == {}
    node = store.get_node("n1")
    assert node.annotations[DONE] == "drain-rendered-worker-a" and REASON not in node.annotations
    assert drain_err(controller) is None


def test_a_node_uncordoned_during_the_drain_is_cordoned_again_before_acknowledging(
        store: Store, kube: EvictingStore, controller: drain_controller.DrainController,
        clock: Clock) -> None:
    store.patch_node_annotations("n1", {WANT: "drain-rendered-worker-a"})
    kube.answer = BUDGET_BLOCKS
    controller.sync(store.list_nodes())
    store.set_unschedulable("n1", False)  # an administrator uncordons mid-drain
    kube.answer = DrainProgress(done=True)
    clock.now = 5.0
    controller.sync(store.list_nodes())  # cordons again (evict_pods asserts it), then done
    node = store.get_node("n1")
    assert node.unschedulable and node.annotations[DONE] == "drain-rendered-worker-a"


def test_pods_are_cordoned_in_before_the_drain_is_acknowledged(
        store: Store, kube: EvictingStore, controller: drain_controller.DrainController,
        clock: Clock) -> None:
    class UncordonedWhileEvicting(EvictingStore):
        def evict_pods(self, node: str) -> DrainProgress:
            super().evict_pods(node)
            self._store.set_unschedulable(node, False)
            return DrainProgress(done=True)

    racy = UncordonedWhileEvicting(store, clock)
    dc = drain_controller.DrainController(
        cast(Store, racy), clock=clock,
        drain_err=drain_controller.drain_err_gauge(CollectorRegistry()))
    store.patch_node_annotations("n1", {WANT: "drain-rendered-worker-a"})
    dc.sync(store.list_nodes())
    assert DONE not in store.get_node("n1").annotations  # emptied, but no longer cordoned
    assert dc.wake_in() == 0.0  # and it goes again at once


def test_uncordon_after_a_blocked_drain_clears_the_reason_and_only_our_cordon(
        store: Store, kube: EvictingStore, controller: drain_controller.DrainController,
        clock: Clock) -> None:
    store.patch_node_annotations("n1", {WANT: "drain-rendered-worker-a"})
    kube.answer = BUDGET_BLOCKS
    run_until(controller, kube, clock, 90.0)
    assert store.get_node("n1").annotations[REASON] == NAMED
    # the daemon gives up and the config is reverted: it asks for an uncordon
    store.patch_node_annotations("n1", {WANT: "uncordon-rendered-worker-a"})
    assert controller.sync(store.list_nodes()) == {}
    node = store.get_node("n1")
    assert not node.unschedulable and node.annotations[DONE] == "uncordon-rendered-worker-a"
    assert REASON not in node.annotations and OURS not in node.annotations
    assert controller.wake_in() is None  # the drain is forgotten

    store.set_unschedulable("n1", True)  # an administrator's cordon
    store.patch_node_annotations("n1", {WANT: "drain-rendered-worker-b"})
    kube.answer = DrainProgress(done=True)
    controller.sync(store.list_nodes())
    assert OURS not in store.get_node("n1").annotations
    store.patch_node_annotations("n1", {WANT: "uncordon-rendered-worker-b"})
    controller.sync(store.list_nodes())
    assert store.get_node("n1").unschedulable


def test_unknown_verb_with_an_evicting_store(
        store: Store, controller: drain_controller.DrainController) -> None:
    store.patch_node_annotations("n1", {WANT: "evict-rendered-worker-a"})
    assert controller.sync(store.list_nodes()) == {
        "n1": "node n1: non-recognized drain verb detected evict"}
    controller.sync(store.list_nodes())
    assert warnings(store) == [("DrainFailed", "node n1: non-recognized drain verb detected evict")]


def test_go_duration() -> None:
    assert [drain_controller.go_duration(s) for s in (5, 90, 600, 3600, 3725)] == [
        "5s", "1m30s", "10m0s", "1h0m0s", "1h2m5s"]


def test_controller_passes_drive_the_drain_and_report_what_blocks_it(
        store: Store, kube: EvictingStore, clock: Clock) -> None:
    from mcc.controller import Controller

    controller = Controller(cast(Store, kube))
    controller.drain = drain_controller.DrainController(
        cast(Store, kube), clock=clock,
        drain_err=drain_controller.drain_err_gauge(CollectorRegistry()))
    store.patch_node_annotations("n1", {WANT: "drain-rendered-worker-a"})
    kube.answer = BUDGET_BLOCKS
    for t in range(0, 95, 5):
        clock.now = float(t)
        report = controller.run_pass()
        assert controller.drain.wake_in() == (5.0 if t < 90 else 60.0)
    assert report.drain_errors == {"n1": NAMED}
    assert report.errors == []
    kube.answer = DrainProgress(done=True)
    clock.now = 150.0
    assert controller.run_pass().drain_errors == {}
    assert store.get_node("n1").annotations[DONE] == "drain-rendered-worker-a"


def test_the_run_loop_wakes_up_for_a_due_drain_step(store: Store) -> None:
    """With a 1 hour interval and no store changes, only the drain's own schedule (retry after
    0.05 s) can bring the loop back for the next eviction steps."""
    import threading

    from mcc.controller import Controller

    kube = EvictingStore(store, Clock())
    kube.answer = DrainProgress(done=False, blocking=BUDGET_BLOCKS.blocking, retry_after=0.05)
    third = threading.Event()

    def evict_pods(node: str) -> DrainProgress:
        kube.calls.append(0.0)
        if len(kube.calls) >= 3:
            third.set()
        return kube.answer

    kube.evict_pods = evict_pods  # type: ignore[method-assign]
    controller = Controller(cast(Store, kube))
    controller.drain = drain_controller.DrainController(
        cast(Store, kube), drain_err=drain_controller.drain_err_gauge(CollectorRegistry()))
    store.patch_node_annotations("n1", {WANT: "drain-rendered-worker-a"})
    stop = threading.Event()
    loop = threading.Thread(target=controller.run, args=(stop, 3600.0))
    loop.start()
    try:
        assert third.wait(30), kube.calls
    finally:
        stop.set()
        loop.join(30)


def test_many_blockers_are_counted_and_the_event_fits_its_limit(
        store: Store, kube: EvictingStore, controller: drain_controller.DrainController,
        clock: Clock) -> None:
    blockers = tuple(Blocker(f"shop/web-{i}", "shop/web", "The disruption budget web needs 40 "
                             "healthy pods and has 40 currently") for i in range(40))
    kube.answer = DrainProgress(done=False, blocking=blockers, retry_after=5.0)
    store.patch_node_annotations("n1", {WANT: "drain-rendered-worker-a"})
    errors = run_until(controller, kube, clock, 90.0)
    assert errors["n1"].count("blocked by PodDisruptionBudget shop/web") == 10
    assert errors["n1"].endswith("; and 30 more pods")
    assert store.get_node("n1").annotations[REASON] == errors["n1"]  # under 2000 characters
    [(reason, message)] = warnings(store)
    assert reason == "DrainBlocked" and len(message) == 1024 and message.endswith(" ...")
    assert message.startswith(errors["n1"][:1020])
