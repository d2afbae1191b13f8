"""mcc.drain_controller on the local store: drain = cordon mark, uncordon only our cordon,
the lastAppliedDrain echo, unknown verbs."""
from __future__ import annotations

from pathlib import Path

import pytest

from machineconfig.constants import (
    CORDONED_BY_MCC_ANNOTATION as OURS, DESIRED_DRAIN_ANNOTATION as WANT,
    LAST_APPLIED_DRAIN_ANNOTATION as DONE,
)
from machineconfig.store import Store
from mcc import drain_controller
from tests.unit.clusterkit import make_store


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
