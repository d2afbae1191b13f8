"""mcc start --metrics-listen: the drain controller's mcc_drain_err over HTTP, as Prometheus reads it."""
from __future__ import annotations

import urllib.request
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry

from mcc.commands.start import serve_metrics
from mcc.controller import Controller
from mcc.drain_controller import DRAIN_ERR
from mcc.metrics import PoolMetrics
from tests.support.clusterkit import join, make_store, write


def test_drain_err_is_served() -> None:
    server = serve_metrics("127.0.0.1:0")
    assert server is not None
    DRAIN_ERR.labels(node="worker-7").set(1)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics",
                                    timeout=10) as resp:
            text = resp.read().decode()
    finally:
        DRAIN_ERR.remove("worker-7")
        server.shutdown()
        server.server_close()
    assert 'mcc_drain_err{node="worker-7"} 1.0' in text


def test_a_bad_listen_address_is_not_fatal() -> None:
    assert serve_metrics("127.0.0.1:notaport") is None


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_pool_counts_state_and_alerts_follow_the_passes(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    store, inputs = make_store(tmp_path)
    controller = Controller(store, metrics=PoolMetrics(registry))
    store.revision()
    controller.run_pass()
    first = str(store.get_object("MachineConfigPool", "worker")["spec"]["configuration"]["name"])
    for name in ("n1", "n2"):
        join(store, name, first)
    # a master that also matches the custom pool "infra" stays a master: alert 1
    write(inputs / "infra.yaml", yaml.safe_dump({
        "apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfigPool",
        "metadata": {"name": "infra"},
        "spec": {"machineConfigSelector": {"matchLabels": {
                     "machineconfiguration.openshift.io/role": "infra"}},
                 "nodeSelector": {"matchLabels": {"node-role.kubernetes.io/infra": ""}}}}))
    write(inputs / "master.yaml", yaml.safe_dump({
        "apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfigPool",
        "metadata": {"name": "master"},
        "spec": {"machineConfigSelector": {"matchLabels": {
                     "machineconfiguration.openshift.io/role": "master"}},
                 "nodeSelector": {"matchLabels": {"node-role.kubernetes.io/master": ""}}}}))
    store.register_node("m1", {"node-role.kubernetes.io/master": "",
                               "node-role.kubernetes.io/infra": ""})
    store.register_node("i1", {"node-role.kubernetes.io/infra": ""})
    store.revision()
    controller.run_pass()
    status = store.get_object("MachineConfigPool", "worker")["status"]
    assert sample(registry, "mco_machine_count", pool="worker") == status["machineCount"] == 2
    assert sample(registry, "mco_updated_machine_count", pool="worker") == 2
    assert sample(registry, "mco_degraded_machine_count", pool="worker") == 0
    assert sample(registry, "mco_unavailable_machine_count", pool="worker") == 0
    assert sample(registry, "mcc_pool_alert", node="m1") == 1
    assert sample(registry, "mcc_pool_alert", node="i1") == 0
    assert sample(registry, "mcc_pool_alert", node="n1") is None  # worker only: no value
    updated = sample(registry, "mco_state", node="n1", pool="worker", state="Updated",
                     reason="")
    assert updated is not None and updated > 0

    # a node that leaves the pool takes its series with it; the count follows
    store.set_node_labels("n2", {"node-role.kubernetes.io/worker": None})
    store.revision()
    controller.run_pass()
    assert sample(registry, "mco_machine_count", pool="worker") == 1
    assert sample(registry, "mco_state", node="n2", pool="worker", state="Updated",
                  reason="") is None
