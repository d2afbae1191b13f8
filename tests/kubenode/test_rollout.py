"""The real-pod e2e: two workers running kubelet and CRI-O from the served config, a Deployment
of busybox with a PodDisruptionBudget, and the rollouts the daemon and controller do to them.

1. A KubeletConfig (maxPods) is rendered and rolled out within maxUnavailable 1: each node is
   cordoned, its pods evicted through the Eviction API; the budget refuses (429) and the
   controller names it in drainReason and a DrainBlocked event until the replacement on the other
   node is Ready; the node reboots, kubelet's /configz (through the API server) shows the new
   maxPods, the node is uncordoned, the pods are back.
2. A registries.conf change reloads CRI-O only: no drain, no reboot, every container keeps its ID.
3. A pull-secret change touches nothing (no drain, no reboot, no restart).

The steps build on each other: once one fails the later ones fail at once.

Replacement pods are held unready on purpose: each container waits while /gate/slow exists (a
hostPath of its node) before it turns Ready, so the test decides when "the other node holds the
replacement" and the drain's 429 lasts past the controller's 90 s attempt.
"""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.kube.kit import machine_config_node_history
from tests.kubenode.harness import KubeCluster, KubeNode
from tests.unit.daemon.test_machine_config_node import REBOOT_PHASES, REBOOTLESS_PHASES, by_type, phases

NS = "kn-e2e"
APP = "sleeper"
PDB = "sleeper-budget"
REPLICAS = 4
GATE = "var/lib/machine-config-tests/gate"
MC = "/apis/machineconfiguration.openshift.io/v1"
A = "machineconfiguration.openshift.io/"
CURRENT, DESIRED, STATE = A + "currentConfig", A + "desiredConfig", A + "state"
DRAIN_REASON = A + "drainReason"
MAX_PODS = 110
ROLLOUT_TIMEOUT = 480

WORKLOAD = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {APP}, namespace: {NS}}}
spec:
  replicas: {REPLICAS}
  selector: {{matchLabels: {{app: {APP}}}}}
  template:
    metadata: {{labels: {{app: {APP}}}}}
    spec:
      terminationGracePeriodSeconds: 2
      dnsPolicy: Default
      automountServiceAccountToken: false
      topologySpreadConstraints:
      - {{maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway,
          labelSelector: {{matchLabels: {{app: {APP}}}}}}}
      containers:
      - name: {APP}
        image: localhost/busybox:latest
        imagePullPolicy: Never
        command: [sh, -c, "while [ -e /gate/slow ]; do sleep 1; done; touch /tmp/ready; exec sleep 1000000"]
        readinessProbe: {{exec: {{command: [cat, /tmp/ready]}}, periodSeconds: 1}}
        volumeMounts: [{{name: gate, mountPath: /gate}}]
      volumes:
      - {{name: gate, hostPath: {{path: /{GATE}, type: DirectoryOrCreate}}}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: {PDB}, namespace: {NS}}}
spec:
  minAvailable: {REPLICAS - 1}
  selector: {{matchLabels: {{app: {APP}}}}}
"""

_FAILED: dict[str, str] = {}
SEEN: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _steps_in_order(request: pytest.FixtureRequest) -> Iterator[None]:
    if "step" in _FAILED:
        pytest.fail(f"an earlier step failed: {_FAILED['step']}")
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        _FAILED["step"] = request.node.name


# ---- reading the cluster ----------------------------------------------------------------------

def get(cluster: KubeCluster, path: str) -> Any:
    assert cluster.cp is not None
    code, body = cluster.cp.call("GET", path)
    assert code == 200, f"GET {path}: {code} {body.get('message')}"
    return body


def nodes(cluster: KubeCluster) -> dict[str, dict[str, Any]]:
    return {n["metadata"]["name"]: n for n in get(cluster, "/api/v1/nodes")["items"]}


def pods(cluster: KubeCluster) -> list[dict[str, Any]]:
    return [p for p in get(cluster, f"/api/v1/namespaces/{NS}/pods")["items"]
            if not p["metadata"].get("deletionTimestamp")]


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def ready_on(cluster: KubeCluster) -> dict[str, int]:
    out: dict[str, int] = {}
    for pod in pods(cluster):
        if ready(pod):
            out[pod["spec"]["nodeName"]] = out.get(pod["spec"]["nodeName"], 0) + 1
    return out


def container_ids(cluster: KubeCluster) -> dict[str, str]:
    return {p["metadata"]["name"]: s.get("containerID", "")
            for p in pods(cluster) for s in (p.get("status") or {}).get("containerStatuses") or []}


def pool(cluster: KubeCluster) -> dict[str, Any]:
    return get(cluster, f"{MC}/machineconfigpools/worker")  # type: ignore[no-any-return]


def describe(cluster: KubeCluster) -> str:
    lines = []
    for name, node in nodes(cluster).items():
        a = node["metadata"].get("annotations", {})
        lines.append(f"{name}: current={a.get(CURRENT)} desired={a.get(DESIRED)} "
                     f"state={a.get(STATE)} unschedulable={node['spec'].get('unschedulable')} "
                     f"drainReason={a.get(DRAIN_REASON, '')[:300]!r}")
    lines.append(f"pods: {[(p['metadata']['name'], p['spec'].get('nodeName'), ready(p)) for p in pods(cluster)]}")
    lines.append("mcc:\n" + cluster.log_tail("mcc", 15))
    return "\n".join(lines)


def updated_on(cluster: KubeCluster, config: str) -> bool:
    for node in nodes(cluster).values():
        a = node["metadata"].get("annotations", {})
        if a.get(CURRENT) != config or a.get(DESIRED) != config or a.get(STATE) != "Done":
            return False
        if node["spec"].get("unschedulable"):
            return False
    return True


def mcn_mark(cluster: KubeCluster) -> str:
    """The resourceVersion of the MachineConfigNodes now: their history is replayed from it."""
    return str(get(cluster, f"{MC}/machineconfignodes")["metadata"]["resourceVersion"])


def followed_phases(cluster: KubeCluster, nodes_: list[KubeNode], since: str, config: str,
                    expected: list[tuple[str, str]]) -> None:
    """Each node's MachineConfigNode went through `expected` (its conditions turning True or
    Unknown, in this order; other writes may come between) since `since`, and now says the
    node is Updated in `config` with nothing else in progress."""
    assert cluster.cp is not None
    for node in nodes_:
        history = machine_config_node_history(cluster.cp, node.name, since)
        seen = phases([o["status"] for o in history if o.get("status")])
        rest = iter(seen)
        missing = [p for p in expected if p not in rest]  # an ordered subsequence
        assert not missing, f"{node.name}: {missing[0]} missing from {seen}"
        final = get(cluster, f"{MC}/machineconfignodes/{node.name}")
        assert final["spec"]["pool"]["name"] == "worker"
        assert final["spec"]["configVersion"]["desired"] == config
        assert final["status"]["configVersion"] == {"desired": config, "current": config}
        assert [t for t, c in by_type(final["status"]).items() if c["status"] != "False"] == \
            ["Updated"], (node.name, final["status"])


def main_pids(node: KubeNode) -> dict[str, str]:
    out = node.run(["systemctl", "show", "-p", "MainPID", "--value", "crio", "kubelet"]).stdout
    return dict(zip(("crio", "kubelet"), out.split()))


class Watch:
    """Samples nodes every 0.5 s: how many were unavailable at once, who was ever cordoned."""

    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster = cluster
        self.most_unavailable = 0
        self.cordoned: set[str] = set()
        self.reasons: dict[str, set[str]] = {}
        # per node: ready pods per node when its drain was acknowledged (lastAppliedDrain)
        self.drained_with: dict[str, dict[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kubenode-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                current = nodes(self.cluster)
            except Exception:  # noqa: BLE001 - a missed sample is no failure
                continue
            unavailable = 0
            for name, node in current.items():
                a = node["metadata"].get("annotations", {})
                if node["spec"].get("unschedulable"):
                    self.cordoned.add(name)
                if (node["spec"].get("unschedulable") or a.get(STATE) != "Done"
                        or a.get(CURRENT) != a.get(DESIRED)):
                    unavailable += 1
                if a.get(DRAIN_REASON):
                    self.reasons.setdefault(name, set()).add(a[DRAIN_REASON])
                if (a.get(A + "lastAppliedDrain", "").startswith("drain-")
                        and name not in self.drained_with and name in self.cordoned):
                    try:
                        self.drained_with[name] = ready_on(self.cluster)
                    except Exception:  # noqa: BLE001 - sampled again next time
                        pass
            self.most_unavailable = max(self.most_unavailable, unavailable)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


# ---- the steps --------------------------------------------------------------------------------

def test_workload_runs_on_both_nodes(kube_cluster: KubeCluster,
                                     kube_nodes: list[KubeNode]) -> None:
    for node in kube_nodes:
        units = node.run(["systemctl", "is-active", "crio", "kubelet",
                          "machine-config-daemon"], check=False).stdout.split()
        assert units == ["active"] * 3, (node.name, units)
        # what runs is what was served: the values file's failCgroupV1 and default_runtime
        assert "failCgroupV1: false" in (node.root / "etc/kubernetes/kubelet.conf").read_text()
        assert 'default_runtime = "runc"' in (
            node.root / "etc/crio/crio.conf.d/00-default").read_text()
    started = time.monotonic()
    kube_cluster.kubectl("apply", "--server-side", "-f", "-", input=WORKLOAD)
    for attempt in range(4):
        kube_cluster.wait_for(f"{REPLICAS} ready pods", lambda: sum(
            ready_on(kube_cluster).values()) == REPLICAS and len(pods(kube_cluster)) == REPLICAS,
            120, lambda: describe(kube_cluster))
        spread = ready_on(kube_cluster)
        if sorted(spread.values()) == [REPLICAS // 2] * 2:
            break
        # the spread is a preference: move one pod off the fuller node
        fuller = max(spread, key=lambda n: spread[n])
        victim = next(p for p in pods(kube_cluster) if p["spec"]["nodeName"] == fuller)
        kube_cluster.kubectl("-n", NS, "delete", "pod", victim["metadata"]["name"], "--wait=false")
    assert sorted(ready_on(kube_cluster).values()) == [REPLICAS // 2] * 2, describe(kube_cluster)
    SEEN["pods ready"] = time.monotonic() - started
    SEEN["config"] = pool(kube_cluster)["spec"]["configuration"]["name"]


def test_kubelet_config_rolls_out_through_a_blocking_budget(
        kube_cluster: KubeCluster, kube_nodes: list[KubeNode]) -> None:
    started = time.monotonic()
    supervisor = kube_cluster.supervisor
    boots = {n.name: n.boots for n in kube_nodes}
    # every replacement pod stays unready until its node's gate opens
    for node in kube_nodes:
        (node.root / GATE).mkdir(parents=True, exist_ok=True)
        (node.root / GATE / "slow").write_text("")
    mark = mcn_mark(kube_cluster)
    watch = Watch(kube_cluster)
    try:
        kube_cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump({
            "apiVersion": "machineconfiguration.openshift.io/v1", "kind": "KubeletConfig",
            "metadata": {"name": "worker-max-pods"},
            "spec": {"machineConfigPoolSelector": {"matchLabels": {
                "pools.operator.machineconfiguration.openshift.io/worker": ""}},
                "kubeletConfig": {"maxPods": MAX_PODS}}}))
        new = kube_cluster.wait_for("a new rendered worker config", lambda: (
            name if (name := pool(kube_cluster)["spec"]["configuration"]["name"]) != SEEN["config"]
            else None), 120, lambda: describe(kube_cluster))
        kube_cluster.wait_for("a node cordoned", lambda: watch.cordoned, 120,
                              lambda: describe(kube_cluster))
        first = next(iter(watch.cordoned))
        other = next(n.name for n in kube_nodes if n.name != first)
        # the budget blocks: the controller names it once its 90 s attempt is over
        reason = kube_cluster.wait_for(
            f"drainReason of {first} naming {PDB}",
            lambda: next((r for r in watch.reasons.get(first, ()) if PDB in r), None),
            200, lambda: describe(kube_cluster))
        events = get(kube_cluster, "/api/v1/namespaces/default/events")["items"]
        blocked = [e for e in events if e.get("reason") == "DrainBlocked"
                   and e["involvedObject"].get("name") == first]
        assert blocked and PDB in blocked[0]["message"], (blocked, reason)
        assert "disruption budget" in reason, reason
        assert nodes(kube_cluster)[first]["metadata"]["annotations"].get(A + "lastAppliedDrain",
                                                                        "") != f"drain-{new}"
        SEEN["blocked for"] = time.monotonic() - started
        # now the other node may hold the replacement: the drain goes on
        for node in kube_nodes:
            (node.root / GATE / "slow").unlink(missing_ok=True)
        kube_cluster.wait_for(f"{new} on every node", lambda: updated_on(kube_cluster, new),
                              ROLLOUT_TIMEOUT, lambda: describe(kube_cluster))
    finally:
        watch.stop()
    SEEN["rollout"] = time.monotonic() - started
    assert watch.most_unavailable == 1, f"maxUnavailable 1 broken: {watch.most_unavailable}"
    assert watch.cordoned == {n.name for n in kube_nodes}, watch.cordoned
    # the first node's drain finished only once the other node held the replacements
    assert watch.drained_with.get(first, {}).get(other, 0) >= REPLICAS - 1, watch.drained_with
    for node in kube_nodes:
        assert len(supervisor.reboots_of(node.name)) >= 1 and node.boots > boots[node.name], \
            f"{node.name} did not reboot"
        assert kube_cluster.cp is not None
        code, configz = kube_cluster.cp.call("GET", f"/api/v1/nodes/{node.name}/proxy/configz")
        assert code == 200, (code, configz)
        assert configz["kubeletconfig"]["maxPods"] == MAX_PODS, configz["kubeletconfig"]
        assert "drainReason" not in json.dumps(nodes(kube_cluster)[node.name]["metadata"]
                                               .get("annotations", {}))
    kube_cluster.wait_for(f"{REPLICAS} ready pods again",
                          lambda: sum(ready_on(kube_cluster).values()) == REPLICAS, 120,
                          lambda: describe(kube_cluster))
    # the MachineConfigNodes followed it: prepared, cordoned and drained, files written,
    # rebooted, resumed, uncordoned, updated
    followed_phases(kube_cluster, kube_nodes, mark, new, REBOOT_PHASES)
    SEEN["config"] = new


def test_registries_change_reloads_crio_only(kube_cluster: KubeCluster,
                                             kube_nodes: list[KubeNode]) -> None:
    started = time.monotonic()
    before_ids = container_ids(kube_cluster)
    pids = {n.name: main_pids(n) for n in kube_nodes}
    boots = {n.name: n.boots for n in kube_nodes}
    # a safe change (MCO's rule: search registries only appended): reload, no drain
    text = ('unqualified-search-registries = ["registry.access.redhat.com", "docker.io", '
            '"registry.example.com"]\nshort-name-mode = ""\n')
    mark = mcn_mark(kube_cluster)
    watch = Watch(kube_cluster)
    try:
        kube_cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump({
            "apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
            "metadata": {"name": "99-worker-registries",
                         "labels": {"machineconfiguration.openshift.io/role": "worker"}},
            "spec": {"config": {"ignition": {"version": "3.5.0"}, "storage": {"files": [{
                "path": "/etc/containers/registries.conf", "mode": 420, "overwrite": True,
                "contents": {"source": "data:text/plain;base64," +
                             base64.b64encode(text.encode()).decode()}}]}}}}))
        new = kube_cluster.wait_for("a new rendered worker config", lambda: (
            name if (name := pool(kube_cluster)["spec"]["configuration"]["name"]) != SEEN["config"]
            else None), 120, lambda: describe(kube_cluster))
        kube_cluster.wait_for(f"{new} on every node", lambda: updated_on(kube_cluster, new),
                              240, lambda: describe(kube_cluster))
    finally:
        watch.stop()
    SEEN["registries"] = time.monotonic() - started
    assert not watch.cordoned, f"drained for a registries.conf change: {watch.cordoned}"
    for node in kube_nodes:
        assert node.boots == boots[node.name], f"{node.name} rebooted"
        assert (node.root / "etc/containers/registries.conf").read_text() == text
        now = main_pids(node)
        assert now == pids[node.name], f"{node.name}: crio/kubelet restarted: {pids[node.name]} -> {now}"
        journal = node.run(["journalctl", "-u", "crio", "--no-pager", "-o", "cat"]).stdout
        assert "Reloading" in journal or "reload" in journal.lower(), journal[-2000:]
    assert container_ids(kube_cluster) == before_ids
    followed_phases(kube_cluster, kube_nodes, mark, new, REBOOTLESS_PHASES)
    for node in kube_nodes:
        post = by_type(get(kube_cluster, f"{MC}/machineconfignodes/{node.name}")["status"])[
            "UpdatePostActionComplete"]
        assert post["message"].endswith("Node has reloaded service crio.service"), post
    SEEN["config"] = new


def test_pull_secret_change_touches_nothing(kube_cluster: KubeCluster,
                                            kube_nodes: list[KubeNode]) -> None:
    started = time.monotonic()
    before_ids = container_ids(kube_cluster)
    pids = {n.name: main_pids(n) for n in kube_nodes}
    boots = {n.name: n.boots for n in kube_nodes}
    crio_journal = {n.name: len(n.run(["journalctl", "-u", "crio", "--no-pager", "-o", "cat"]
                                      ).stdout.splitlines()) for n in kube_nodes}
    secret = base64.b64encode(json.dumps({"auths": {"registry.example.com": {
        "auth": base64.b64encode(b"user:another-token").decode()}}}).encode()).decode()
    mark = mcn_mark(kube_cluster)
    watch = Watch(kube_cluster)
    try:
        kube_cluster.kubectl("-n", "openshift-config", "patch", "secret", "pull-secret",
                             "-p", json.dumps({"data": {".dockerconfigjson": secret}}))
        new = kube_cluster.wait_for("a new rendered worker config", lambda: (
            name if (name := pool(kube_cluster)["spec"]["configuration"]["name"]) != SEEN["config"]
            else None), 120, lambda: describe(kube_cluster))
        kube_cluster.wait_for(f"{new} on every node", lambda: updated_on(kube_cluster, new),
                              240, lambda: describe(kube_cluster))
    finally:
        watch.stop()
    SEEN["pull secret"] = time.monotonic() - started
    assert not watch.cordoned, f"drained for a pull-secret change: {watch.cordoned}"
    for node in kube_nodes:
        assert node.boots == boots[node.name], f"{node.name} rebooted"
        assert main_pids(node) == pids[node.name]
        # the file did change (the served config wrote it), and nothing acted on it
        assert base64.b64encode(b"user:another-token").decode() in (
            node.state_dir / "kubelet/config.json").read_text()
        journal = node.run(["journalctl", "-u", "crio", "--no-pager", "-o", "cat"]).stdout
        assert "Reloading" not in "\n".join(journal.splitlines()[crio_journal[node.name]:])
    assert container_ids(kube_cluster) == before_ids
    followed_phases(kube_cluster, kube_nodes, mark, new, REBOOTLESS_PHASES)
    SEEN["config"] = new
    SEEN["rss"] = kube_cluster.rss_mb()
    print("\nkubenode RSS (MB):", SEEN["rss"])
    print("\nkubenode timings (s):", {k: round(v, 1) for k, v in
                                      {**kube_cluster.timings, **{
                                          k: v for k, v in SEEN.items()
                                          if isinstance(v, float)}}.items()})


def test_host_checks_pass_on_both_nodes(kube_cluster: KubeCluster, kube_nodes: list[KubeNode],
                                        tmp_path: Path) -> None:
    """tests/hosts, with its Kubernetes facts, against both nodes on the pool's config."""
    rendered = tmp_path / "rendered.json"
    rendered.write_text(json.dumps(get(kube_cluster, f"{MC}/machineconfigs/{SEEN['config']}")))
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("".join(n.ssh_config.read_text() for n in kube_nodes))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider",
         str(Path(__file__).resolve().parents[1] / "hosts"),
         "--hosts=" + ",".join(f"ssh://{n.name}" for n in kube_nodes),
         f"--ssh-config={ssh_config}", f"--mc-config={rendered}",
         f"--mc-kubeconfig={kube_cluster.kubeconfig}"],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"tests/hosts failed on the nodes:\n{proc.stdout[-6000:]}"
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, summary
    ready_lines = [ln for ln in proc.stdout.splitlines()
                   if "test_node_is_ready" in ln and "PASSED" in ln]
    assert len(ready_lines) == len(kube_nodes), proc.stdout[-3000:]
