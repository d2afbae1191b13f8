"""The same rollout on the local store and on the kube store (the real control plane): the real
controller (mcc.controller.Controller) drives three simulated nodes whose daemons follow mcd's
annotation protocol (state Working, the desiredDrain / lastAppliedDrain handshake for the drain
and the uncordon, currentConfig and state Done), with the same inputs in the same order. The pool
status (conditions, counts, configuration) and the event sequence (kind, object, reason, message,
type) come out the same on both stores.

On the kube store each daemon uses a store limited to its own node, as `mcd start --store kube`
does; the inputs are applied over HTTP as kubectl would (strict field validation)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from machineconfig import constants as C
from machineconfig.store import NodeAPI, Store, open_store
from mcc.controller import Controller
from tests.kube.controlplane import ControlPlane
from tests.kube.kit import apply, writes
from tests.support.clusterkit import machine_config
from tests.support.poolyaml import pool_yaml

NOW = "2026-01-01T00:00:00Z"
NODES = ("n1", "n2", "n3")
WORKER = {"node-role.kubernetes.io/worker": ""}


class SimDaemon:
    """One node's daemon, reduced to its annotation protocol (mcd.daemon + mcd.drain): on a new
    desiredConfig it reports Working and asks for a drain; once drained it "applies and reboots"
    and asks for an uncordon; once uncordoned it reports the config as current and Done."""

    def __init__(self, api: NodeAPI, name: str) -> None:
        self.api, self.name = api, name

    def step(self) -> bool:
        """One look at the node; True when the daemon wrote something."""
        a = self.api.get_node(self.name).annotations
        desired, current = a.get(C.DESIRED_CONFIG_ANNOTATION, ""), a.get(C.CURRENT_CONFIG_ANNOTATION, "")
        if not desired or desired == current:
            return False
        drain, uncordon = f"drain-{desired}", f"uncordon-{desired}"
        requested, applied = a.get(C.DESIRED_DRAIN_ANNOTATION), a.get(C.LAST_APPLIED_DRAIN_ANNOTATION)
        if requested not in (drain, uncordon):
            self.api.record_event("Node", self.name, "Cordon", "Cordoned node to apply update")
            self.api.record_event("Node", self.name, "Drain", "Draining node to update config.")
            self.api.patch_node_annotations(self.name, {
                C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: C.STATE_WORKING,
                C.DESIRED_DRAIN_ANNOTATION: drain})
            return True
        if requested == drain and applied == drain:
            self.api.record_event("Node", self.name, "Reboot", f"Node will reboot into config {desired}")
            self.api.patch_node_annotations(self.name, {C.DESIRED_DRAIN_ANNOTATION: uncordon})
            return True
        if requested == uncordon and applied == uncordon:
            self.api.patch_node_annotations(self.name, {
                C.CURRENT_CONFIG_ANNOTATION: desired,
                C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: C.STATE_DONE,
                C.MACHINE_CONFIG_DAEMON_REASON_ANNOTATION: ""})
            self.api.record_event("Node", self.name, "NodeDone",
                                  f"Setting node {self.name}, currentConfig {desired} to Done")
            return True
        return False  # waiting for the controller


@dataclass
class Cluster:
    """One store, the controller over it, the way inputs reach it, and a daemon per node."""

    store: Store
    put_input: Callable[[str, str], None]  # file name, YAML text
    daemon_api: Callable[[str], NodeAPI]
    controller: Controller
    daemons: list[SimDaemon]
    most_tainted: int = 0  # the most nodes carrying UpdateInProgress at once, over all settles

    def join(self, name: str, config: str) -> None:
        """A node that booted into `config` (what mcd firstboot leaves behind)."""
        self.store.register_node(name, WORKER)
        self.store.patch_node_annotations(name, {
            C.CURRENT_CONFIG_ANNOTATION: config, C.DESIRED_CONFIG_ANNOTATION: config,
            C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: C.STATE_DONE})
        self.daemons.append(SimDaemon(self.daemon_api(name), name))

    def settle(self, rounds: int = 80) -> int:
        """Controller pass, then every daemon looks once, until a round changes nothing; returns
        the most nodes ever between targeted and Done at once."""
        worst = 0
        for _ in range(rounds):
            self.store.revision()  # as Controller.run does before each pass
            report = self.controller.run_pass()
            assert not report.errors, report.errors
            moved = [d.step() for d in self.daemons]
            in_flight = sum(1 for n in self.store.list_nodes()
                            if n.annotations.get(C.DESIRED_CONFIG_ANNOTATION)
                            != n.annotations.get(C.CURRENT_CONFIG_ANNOTATION))
            worst = max(worst, in_flight)
            self.most_tainted = max(self.most_tainted, sum(
                1 for n in self.store.list_nodes()
                if n.has_taint("UpdateInProgress", "PreferNoSchedule")))
            if not any(moved) and not (report.rendered or report.targeted or
                                       report.statuses_written or report.deleted):
                return worst
        raise AssertionError("the rollout did not settle")

    def pool(self) -> dict[str, Any]:
        return self.store.get_object("MachineConfigPool", "worker")

    def snapshot(self) -> dict[str, Any]:
        """What must be equal on both stores."""
        pool = self.pool()
        status = dict(pool.get("status") or {})
        status.pop("observedGeneration", None)  # kube counts spec generations, local has none
        nodes = {n.name: ({k: v for k, v in n.annotations.items() if k.startswith(C.GROUP)},
                          n.unschedulable,
                          # the controller's taint only: kube-controller-manager adds its own
                          # (node.kubernetes.io/not-ready: these nodes have no kubelet)
                          [t for t in n.taints if t["key"] == "UpdateInProgress"])
                 for n in self.store.list_nodes()}
        return {"configuration": pool["spec"].get("configuration"), "status": status,
                "nodes": nodes, "rendered": self.store.list_rendered()}

    def events(self) -> list[tuple[str, str, str, str, str, int]]:
        """The event sequence as a Kubernetes event recorder leaves it: a repeat of an identical
        event counts up the earlier one and moves it last (the kube store does this on the API
        server; the local store records every occurrence, so it is folded here)."""
        folded: dict[tuple[str, str, str, str, str], int] = {}
        for e in self.store.list_events():
            key = (e.kind, e.name, e.reason, e.message, e.type)
            count = folded.pop(key, 0) + e.count
            folded[key] = count
        return [(*k, n) for k, n in folded.items()]


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Cluster]:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    store = open_store(f"local:{inputs}", str(tmp_path / "state"))

    def put(name: str, text: str) -> None:
        tmp = inputs / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(inputs / name)

    yield Cluster(store, put, lambda name: store, Controller(store, now=lambda: NOW), [])


@pytest.fixture
def kube(clean_cluster: ControlPlane) -> Iterator[Cluster]:
    cp = clean_cluster
    kubeconfig = clean_cluster.kubeconfig
    store = open_store(f"kube:{kubeconfig}")
    daemon_stores: list[Any] = []

    def daemon_api(name: str) -> NodeAPI:
        api = open_store(f"kube:{kubeconfig}", node=name)
        daemon_stores.append(api)
        return api

    def put(name: str, text: str) -> None:
        for doc in yaml.safe_load_all(text):
            if doc:
                apply(cp, doc)

    yield Cluster(store, put, daemon_api, Controller(store, now=lambda: NOW), [])
    for s in [store, *daemon_stores]:
        s.close()


def scenario(cluster: Cluster) -> list[dict[str, Any]]:
    """Render, three nodes join, a change rolls out one node at a time, a broken config
    degrades the pool without touching a node, the revert heals it. Returns a snapshot per
    phase."""
    snapshots = []
    cluster.put_input("pool.yaml", pool_yaml("worker", role="worker", node_role="worker",
                                             max_unavailable=1))
    cluster.put_input("00-worker.yaml", machine_config("00-worker", "/etc/motd", "hello\n"))
    cluster.settle()
    first = cluster.pool()["spec"]["configuration"]["name"]
    for name in NODES:
        cluster.join(name, first)
    cluster.settle()
    snapshots.append(cluster.snapshot())

    cluster.put_input("50-worker.yaml", machine_config("50-worker", "/etc/registries", "x\n"))
    assert cluster.settle() == 1  # maxUnavailable: 1
    snapshots.append(cluster.snapshot())

    cluster.put_input("60-worker.yaml", machine_config("60-worker", "/etc/broken", "y\n",
                                                       kernel_type="bogus"))
    cluster.settle()
    snapshots.append(cluster.snapshot())

    cluster.put_input("60-worker.yaml", machine_config("60-worker", "/etc/broken", "y\n"))
    cluster.settle()
    snapshots.append(cluster.snapshot())
    return snapshots


def conditions(snapshot: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["message"]) for c in snapshot["status"]["conditions"]}


def test_rollout_is_the_same_on_the_local_and_the_kube_store(local: Cluster, kube: Cluster,
                                                            control_plane: ControlPlane) -> None:
    on_local = scenario(local)
    on_kube = scenario(kube)

    # The scenario did what it says (on the local store, the reference).
    joined, rolled, broken, healed = on_local
    assert conditions(joined)["Updated"][0] == "True"
    second = rolled["configuration"]["name"]
    assert second != joined["configuration"]["name"]
    assert conditions(rolled)["Updated"] == ("True", f"All nodes are updated with MachineConfig {second}")
    assert rolled["status"]["updatedMachineCount"] == 3 and rolled["status"]["machineCount"] == 3
    assert all(not cordoned and not taints for _, cordoned, taints in rolled["nodes"].values())
    # while the change rolled out one node at a time, every node waiting for it was tainted
    # UpdateInProgress:PreferNoSchedule (MCO's node controller), and none is once it settled
    assert local.most_tainted == kube.most_tainted == 3
    assert conditions(broken)["RenderDegraded"] == (
        "True", "Failed to render configuration for pool worker: kernelType=bogus is invalid")
    assert broken["nodes"] == rolled["nodes"]
    assert conditions(healed)["RenderDegraded"][0] == "False"
    assert conditions(healed)["Updated"][0] == "True"

    # And the kube store shows the same, phase by phase.
    for phase, (a, b) in enumerate(zip(on_local, on_kube)):
        assert a == b, f"phase {phase} differs"
    # A settled controller writes nothing to the API server (no status or annotation churn).
    mark = control_plane.audit_mark()
    kube.controller.run_pass()
    assert writes(control_plane, mark) == []
    assert local.events() == kube.events()
    reasons = [e[2] for e in kube.events()]
    for reason in ("RenderedConfigGenerated", "SetDesiredConfig", "Cordon", "Drain", "Reboot",
                   "NodeDone"):
        assert reason in reasons, reason


EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "cluster"
VALUES = Path(__file__).resolve().parents[2] / "examples" / "cluster-values.yaml"


def example_text(path: Path) -> str:
    """An example file as both stores get it: a required `format: byte` field left empty in the
    example ControllerConfig gets a newline ("Cg==") instead, which kube-apiserver accepts."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        if doc.get("kind") == "ControllerConfig":
            for key in ("additionalTrustBundle", "cloudProviderCAData"):
                if doc["spec"].get(key, None) == "":
                    doc["spec"][key] = "Cg=="
    return yaml.safe_dump_all(docs)


def test_examples_render_the_same_on_both_stores(local: Cluster, kube: Cluster,
                                                 control_plane: ControlPlane) -> None:
    """The quick start's inputs (templates, KubeletConfig, ContainerRuntimeConfig, pull secret
    through the ControllerConfig's reference, three pools): the same generated MachineConfigs,
    rendered configs, pool configurations, KubeletConfig / ContainerRuntimeConfig status and
    events on both stores, one node per pool rolled onto them."""
    from mcc import bootstrap

    values = bootstrap.load_values(str(VALUES))
    apply(control_plane, {"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": "openshift-config"}})
    for cluster in (local, kube):
        cluster.controller = Controller(cluster.store, values=values, now=lambda: NOW)
        for path in sorted(EXAMPLES.glob("*.yaml")):  # not the *.yaml.j2 template: local only
            cluster.put_input(path.name, example_text(path))
        cluster.settle()
        for pool_name, node in (("master", "m1"), ("worker", "w1"), ("infra", "i1")):
            target = cluster.store.get_object("MachineConfigPool", pool_name)["spec"][
                "configuration"]["name"]
            cluster.store.register_node(node, {f"node-role.kubernetes.io/{pool_name}": ""})
            cluster.store.patch_node_annotations(node, {
                C.CURRENT_CONFIG_ANNOTATION: target, C.DESIRED_CONFIG_ANNOTATION: target,
                C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: C.STATE_DONE})
        cluster.settle()

    def outcome(cluster: Cluster) -> dict[str, Any]:
        store = cluster.store
        pools = {p["metadata"]["name"]: (p["spec"]["configuration"],
                                         {k: v for k, v in p["status"].items()
                                          if k != "observedGeneration"})
                 for p in store.list_objects("MachineConfigPool")}
        generated = {m["metadata"]["name"]: m["spec"] for m in store.list_objects("MachineConfig")
                     if C.GENERATED_BY_CONTROLLER_VERSION_ANNOTATION in
                     (m["metadata"].get("annotations") or {})}
        statuses = {(k, o["metadata"]["name"]): [
                        {f: c.get(f) for f in ("type", "status", "message")}
                        for c in (o.get("status") or {}).get("conditions") or []]
                    for k in ("KubeletConfig", "ContainerRuntimeConfig")
                    for o in store.list_objects(k)}
        rendered = {n: store.get_rendered(n).to_dict()["spec"] for n in store.list_rendered()}
        return {"pools": pools, "generated": generated, "statuses": statuses,
                "rendered": rendered}

    a, b = outcome(local), outcome(kube)
    assert sorted(a["pools"]) == ["infra", "master", "worker"]
    assert any(name.startswith("99-worker-generated-kubelet") for name in a["generated"])
    assert all(conds for conds in a["statuses"].values())
    assert a == b
    assert local.events() == kube.events()
    # The pull secret reached the rendered configs through the ControllerConfig's reference.
    worker = b["pools"]["worker"][0]["name"]
    files = b["rendered"][worker]["config"]["storage"]["files"]
    source = next(f["contents"]["source"] for f in files
                  if f["path"] == "/var/lib/kubelet/config.json")
    assert "registry.example.com" in decode_data_url(source)


def decode_data_url(source: str) -> str:
    import base64
    import urllib.parse

    head, _, data = source.partition(",")
    return base64.b64decode(data).decode() if head.endswith(";base64") else \
        urllib.parse.unquote(data)
