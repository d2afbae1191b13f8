"""End to end, per-node overlays: three nspawn nodes join the worker pool; an overlay for
e2e-worker-2 (a file and an SSH key of its own) gives that node its own rendered config, applied
on it alone (drain, reboot), while the other two keep the pool's config byte for byte, untouched;
removing the overlay brings the node back to the pool's config and the per-node config is
garbage-collected.

The steps run in file order on one cluster of their own (module-scoped fixtures).
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest
import yaml

from machineconfig.constants import NODE_CONFIG_ANNOTATION, OVERLAYS_ANNOTATION
from machineconfig.ignition.dataurl import encode_percent
from tests.e2e.cluster import CURRENT, DESIRED, STATE, condition, wait_until
from tests.e2e.conftest import E2E, JOIN_TIMEOUT, WORKERS
from tests.e2e.history import NodeHistory

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

ROLLOUT_TIMEOUT = 240
OVERLAY_NODE = "e2e-worker-2"
OVERLAY_FILE = "/etc/e2e-node-identity"
OVERLAY_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK+STUutyWCZaVW2+wdH7e0NPiQ2Sx7LSwrOMZlkLWLi "
               "e2e-overlay")
KEYS = "/home/core/.ssh/authorized_keys.d/ignition"
OVERLAY_INPUT = "50-e2e-worker-2-identity.yaml"

_state: dict[str, Any] = {}


def overlay_object(content: str) -> dict[str, Any]:
    return {
        "apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
        "metadata": {"name": "50-e2e-worker-2-identity",
                     "labels": {"machineconfiguration.openshift.io/node": OVERLAY_NODE}},
        "spec": {"config": {
            "ignition": {"version": "3.2.0"},
            "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": [OVERLAY_KEY]}]},
            "storage": {"files": [{"path": OVERLAY_FILE, "mode": 0o644,
                                   "contents": {"source": encode_percent(content.encode())}}]},
        }}}


def write_input(e2e: E2E, name: str, obj: dict[str, Any]) -> None:
    path = e2e.input_dir / name
    tmp = path.with_name(f".{name}.tmp")
    tmp.write_text(yaml.safe_dump(obj, sort_keys=False))
    os.replace(tmp, path)


def pool_target(e2e: E2E) -> str:
    return str(e2e.pool()["spec"]["configuration"]["name"])


def wait_each_at_own_target(e2e: E2E, overlay: bool) -> dict[str, str]:
    """Until the pool is Updated with every node Done on its own target: e2e-worker-2 on a
    node-config of its own (when `overlay`), the others on the pool's config."""
    def settled() -> dict[str, str] | None:
        e2e.check_health()
        pool = e2e.pool()
        target = pool_target(e2e)
        if condition(pool, "Updated").get("status") != "True":
            return None
        nodes = e2e.annotations()
        if sorted(nodes) != sorted(WORKERS):
            return None
        out = {}
        for name, a in nodes.items():
            own = a.get(NODE_CONFIG_ANNOTATION)
            if overlay and name == OVERLAY_NODE:
                if not own or own == target:
                    return None
            elif own is not None:
                return None
            goal = own or target
            if (a.get(CURRENT), a.get(DESIRED), a.get(STATE)) != (goal, goal, "Done"):
                return None
            out[name] = goal
        return out
    return wait_until(settled, ROLLOUT_TIMEOUT,
                      "every node Done on its own target" if overlay else
                      "every node Done on the pool's config", e2e.describe)


def test_nodes_join(e2e: E2E) -> None:
    target = e2e.wait_pool_updated(JOIN_TIMEOUT)
    _state["pool"] = target
    _state["pool_bytes"] = json.dumps(e2e.store.get_rendered(target).to_dict(), sort_keys=True)


def test_overlay_gives_one_node_its_own_config(e2e: E2E) -> None:
    pool_config = _state["pool"]
    reboots = {n.name: len(e2e.supervisor.reboots_of(n.name)) for n in e2e.nodes}
    started = time.monotonic()
    with NodeHistory(e2e.reopen) as history:
        write_input(e2e, OVERLAY_INPUT, overlay_object(f"{OVERLAY_NODE}\n"))
        targets = wait_each_at_own_target(e2e, overlay=True)
    print(f"overlay applied to {OVERLAY_NODE} in {time.monotonic() - started:.0f}s")
    own = targets[OVERLAY_NODE]
    assert own.startswith("rendered-worker-") and own != pool_config
    assert targets == {"e2e-worker-1": pool_config, OVERLAY_NODE: own,
                       "e2e-worker-3": pool_config}
    # the pool's config did not move, and its stored object is byte for byte the same
    assert pool_target(e2e) == pool_config
    assert json.dumps(e2e.store.get_rendered(pool_config).to_dict(), sort_keys=True) == \
        _state["pool_bytes"]
    stored = e2e.store.get_rendered(own)
    assert stored.annotations[OVERLAYS_ANNOTATION] == "50-e2e-worker-2-identity"
    # the other nodes were never targeted anywhere else, nor rebooted
    assert not history.errors, history.errors
    assert len(history.snapshots) > 5, "too few snapshots to judge the rollout"
    for _, nodes in history.snapshots:
        for name in ("e2e-worker-1", "e2e-worker-3"):
            assert nodes[name].desired == pool_config, nodes
            assert nodes[name].current == pool_config, nodes
    worst, where = history.max_unavailable()
    assert worst <= 1, where
    assert len(e2e.supervisor.reboots_of(OVERLAY_NODE)) == reboots[OVERLAY_NODE] + 1
    for node in e2e.nodes:
        node.wait_ready()
        host = node.testinfra()
        mine = node.name == OVERLAY_NODE
        assert host.file(OVERLAY_FILE).exists == mine
        assert (OVERLAY_KEY in host.file(KEYS).content_string) == mine
        if not mine:
            assert len(e2e.supervisor.reboots_of(node.name)) == reboots[node.name]
    assert host_file(e2e, OVERLAY_NODE, OVERLAY_FILE) == f"{OVERLAY_NODE}\n"
    status = e2e.pool()["status"]
    assert (status["machineCount"], status["updatedMachineCount"]) == (3, 3)
    _state["own"] = own


def host_file(e2e: E2E, node: str, path: str) -> str:
    found = next(n for n in e2e.nodes if n.name == node)
    return str(found.testinfra().file(path).content_string)


def test_removing_the_overlay_returns_the_node_to_the_pool(e2e: E2E) -> None:
    pool_config, own = _state["pool"], _state["own"]
    reboots = {n.name: len(e2e.supervisor.reboots_of(n.name)) for n in e2e.nodes}
    started = time.monotonic()
    (e2e.input_dir / OVERLAY_INPUT).unlink()
    targets = wait_each_at_own_target(e2e, overlay=False)
    print(f"{OVERLAY_NODE} back on the pool's config in {time.monotonic() - started:.0f}s")
    assert set(targets.values()) == {pool_config}
    # the file goes: drain and reboot again, that node only
    assert {n: len(e2e.supervisor.reboots_of(n)) - k for n, k in reboots.items()} == \
        {"e2e-worker-1": 0, OVERLAY_NODE: 1, "e2e-worker-3": 0}
    def collected() -> bool | None:
        return True if own not in e2e.store.list_rendered() else None
    wait_until(collected, 30, f"{own} garbage-collected", e2e.describe)
    for node in e2e.nodes:
        host = node.testinfra()
        assert not host.file(OVERLAY_FILE).exists
        assert OVERLAY_KEY not in host.file(KEYS).content_string
