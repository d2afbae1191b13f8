"""The three programs as the cluster's own workloads, as the MCO runs them: the image built by
scripts/image loaded into each node's CRI-O, `kubectl apply -k` of an overlay of manifests/ (the
image set by kustomize's images transformer), then MachineConfigs rolled out by the pods.

The nodes join the way an OpenShift cluster's do: a bootstrap controller and server (the
harness's, host side) serve the first config; then the bootstrap programs stop, each node's
daemon service is held off by a node-local drop-in, and the Deployment and DaemonSets take over.
What the overlay adds, each a stand-in for what a real cluster or machine has:
- imagePullPolicy Never: the image is in the nodes' storage, there is no registry;
- KUBERNETES_SERVICE_HOST/PORT = the API server's own address: no kube-proxy runs here;
- the service-account token volume: the test API server runs without the ServiceAccount
  admission plugin (the fixture also turns on the DaemonSet and root-CA publisher controllers);
- the controller's --values (a ConfigMap): this machine's kubelet and CRI-O need the values
  the bootstrap controller rendered with, or the rollout would change them;
- the daemon: every capability but SYS_RESOURCE instead of `privileged`, and no critical
  priority: this machine has no CAP_SYS_RESOURCE to give, not even to the host's root.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

import tests.kube.controlplane as controlplane
from tests.image.build import TEMPLATES, Built, build
from tests.kubenode.conftest import RUNS_DIR, WORKERS, require_kubenode_prerequisites
from tests.kubenode.harness import DAEMON_DROPIN, MCO_NAMESPACE, VALUES, KubeCluster, KubeNode, \
    reap_stale_cgroups
from tests.node.harness import reap_stale
from tests.node.rootfs import CACHE_DIR

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/machine-config:incluster"
MCS_NODE = WORKERS[0]  # labelled control-plane: the server's DaemonSet runs there
# the controllers a cluster with DaemonSets and pods using service-account tokens needs on top
# of the harness's (kube-root-ca.crt is what every projected token volume mounts)
EXTRA_CONTROLLERS = "daemonset-controller,root-ca-certificate-publisher-controller"
MC_FILE = "/etc/containers/registries.d/99-machine-config-incluster.yaml"
MC_CONTENT = ("# rolled out by the in-cluster machine-config-daemon\n"
              "default-docker:\n  use-sigstore-attachments: false\n")
REBOOT_FILE = "/etc/machine-config-incluster/reboot.conf"
REBOOT_CONTENT = "# rolled out by the in-cluster machine-config-daemon, with a reboot\n"
STATE = "machineconfiguration.openshift.io/state"
CURRENT = "machineconfiguration.openshift.io/currentConfig"
DESIRED = "machineconfiguration.openshift.io/desiredConfig"
# node-local (not served): the rendered machine-config-daemon.service stays off, the pod is
# this node's daemon
HOLD_DAEMON_SERVICE = ("# node-local (not served): the machine-config-daemon DaemonSet's pod is this "
                       "node's daemon\n[Unit]\nConditionPathExists=/run/machine-config-daemon-service\n")


# every capability but SYS_RESOURCE, which this machine lacks
NODE_CAPABILITIES = [
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE",
    "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE"]
# what the ServiceAccount admission plugin adds to every pod (the test control plane runs
# without it): the account's token, the cluster CA and the namespace
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SA_VOLUME = {"name": "kube-api-access", "projected": {"defaultMode": 0o444, "sources": [
    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
    {"downwardAPI": {"items": [{"path": "namespace",
                                "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}


@dataclass
class InCluster:
    cluster: KubeCluster
    nodes: list[KubeNode]
    image: Built
    timings: dict[str, float] = field(default_factory=dict)

    def kubectl(self, *args: str, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, input=input, check=check)

    def node_object(self, name: str) -> dict[str, object]:
        assert self.cluster.cp is not None
        code, node = self.cluster.cp.call("GET", f"/api/v1/nodes/{name}")
        assert code == 200, node
        return node  # type: ignore[no-any-return]

    def annotations(self, name: str) -> dict[str, str]:
        return self.node_object(name)["metadata"].get("annotations", {})  # type: ignore[attr-defined,no-any-return]

    def workload_logs(self) -> str:
        """The three workloads' container logs (read on the nodes: the API server cannot
        resolve node names here), their pods and the namespace's events."""
        out = []
        for node in self.nodes:
            for path in sorted((node.root / "var/log/pods").glob(
                    f"{MCO_NAMESPACE}_machine-config-*/*/*.log")):
                tail = path.read_text(errors="replace").splitlines()[-30:]
                out.append(f"--- {node.name} {path.parent.parent.name} {path.name}")
                out += [line[:400] for line in tail]
        pods = self.kubectl("-n", MCO_NAMESPACE, "get", "pods", "-o", "wide", check=False)
        events = self.kubectl("-n", MCO_NAMESPACE, "get", "events", "--sort-by=.lastTimestamp",
                              check=False)
        return "\n".join([*out, pods.stdout, events.stdout[-4000:]])

    def daemon_log(self, node: KubeNode) -> str:
        """Everything the daemon pods on `node` logged (every restart's file, oldest first)."""
        paths = (node.root / "var/log/pods").glob(
            f"{MCO_NAMESPACE}_machine-config-daemon-*/machine-config-daemon/*.log")
        return "".join(p.read_text(errors="replace")
                       for p in sorted(paths, key=lambda p: p.stat().st_mtime))

    def workloads_ready(self) -> bool:
        assert self.cluster.cp is not None
        base = f"/apis/apps/v1/namespaces/{MCO_NAMESPACE}"
        code, deployment = self.cluster.cp.call(
            "GET", f"{base}/deployments/machine-config-controller")
        status = deployment.get("status", {})
        if code != 200 or status.get("availableReplicas") != 1 or \
                status.get("updatedReplicas") != 1:
            return False
        for name in ("machine-config-server", "machine-config-daemon"):
            code, ds = self.cluster.cp.call("GET", f"{base}/daemonsets/{name}")
            status = ds.get("status", {})
            want = status.get("desiredNumberScheduled", 0)
            if code != 200 or not want or status.get("numberReady") != want or \
                    status.get("updatedNumberScheduled") != want:
                return False
        return True


def _stop_bootstrap_programs(cluster: KubeCluster) -> None:
    """The harness's host-side mcc and mcs did the bootstrap; the pods take over."""
    for name in ("mcc", "mcs"):
        proc = cluster.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)


def _hold_daemon_service(node: KubeNode) -> None:
    node.put(DAEMON_DROPIN, HOLD_DAEMON_SERVICE)
    node.run(["systemctl", "daemon-reload"])
    try:
        node.run(["systemctl", "stop", "machine-config-daemon.service"], timeout=120)
    except subprocess.TimeoutExpired:
        journal = node.run(["journalctl", "-u", "machine-config-daemon", "--no-pager", "-n",
                            "40", "-o", "short-monotonic"], check=False).stdout
        raise AssertionError(f"the daemon service on {node.name} did not stop in 120 s; its "
                             f"journal:\n{journal}") from None


def _overlay(directory: Path, api_host: str, api_port: str) -> Path:
    """manifests/ with the image, pull policy, API address and the controller's values."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "values.yaml").write_text(VALUES.read_text())
    api_env = [{"name": "KUBERNETES_SERVICE_HOST", "value": api_host},
               {"name": "KUBERNETES_SERVICE_PORT", "value": api_port}]

    def workload(kind: str, name: str, extra: dict[str, object] | None = None,
                 pod: dict[str, object] | None = None) -> dict[str, object]:
        container = {"name": name, "imagePullPolicy": "Never", "env": api_env,
                     **(extra or {})}
        container.setdefault("volumeMounts", []).append(  # type: ignore[attr-defined]
            {"name": "kube-api-access", "mountPath": SA_DIR, "readOnly": True})
        pod = dict(pod or {})
        pod.setdefault("volumes", []).append(SA_VOLUME)  # type: ignore[attr-defined]
        return {"patch": yaml.safe_dump({
            "apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": name, "namespace": MCO_NAMESPACE},
            "spec": {"template": {"spec": {"containers": [container], **pod}}}})}

    name, newtag = IMAGE.rsplit(":", 1)
    # manifests/kustomization.yaml already renames the workloads' "machine-config" to its
    # placeholder: an overlay's images transformer sees that name
    base_image = yaml.safe_load((REPO / "manifests/kustomization.yaml").read_text())["images"][0]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(REPO / "manifests", directory)],
        "images": [{"name": base_image["newName"], "newName": name, "newTag": newtag}],
        "configMapGenerator": [{"name": "machine-config-controller-values",
                                "namespace": MCO_NAMESPACE, "files": ["values.yaml"],
                                "options": {"disableNameSuffixHash": True}}],
        "patches": [
            workload("Deployment", "machine-config-controller", {
                "command": ["mcc", "start", "--store", "kube", "--templates", TEMPLATES,
                            "--values", "/etc/mcc/values/values.yaml"],
                "volumeMounts": [{"name": "values", "mountPath": "/etc/mcc/values",
                                  "readOnly": True}]},
                {"volumes": [{"name": "values",
                              "configMap": {"name": "machine-config-controller-values"}}]}),
            workload("DaemonSet", "machine-config-server"),
            # this machine has no CAP_SYS_RESOURCE to give (not even to root on the host): a
            # privileged container (every capability) and a critical pod (the kubelet lowers
            # its oom_score_adj) cannot start; every other capability, unconfined, can
            workload("DaemonSet", "machine-config-daemon", {"securityContext": {
                "privileged": False, "runAsUser": 0,
                "capabilities": {"add": NODE_CAPABILITIES},
                "seccompProfile": {"type": "Unconfined"}}}, {"priorityClassName": None}),
        ],
    }
    (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return directory


@pytest.fixture(scope="module")
def incluster() -> Iterator[InCluster]:
    require_kubenode_prerequisites()
    started = time.monotonic()
    image = build(CACHE_DIR / "image-layout-incluster", [IMAGE])
    timings = {"image build (cached layers)": time.monotonic() - started}
    reap_stale(RUNS_DIR)
    reap_stale_cgroups()
    cluster = KubeCluster(RUNS_DIR / f"incluster-{os.getpid()}")
    saved = controlplane.KCM_NODE_CONTROLLERS
    controlplane.KCM_NODE_CONTROLLERS = f"{saved},{EXTRA_CONTROLLERS}"
    try:
        cluster.start()
    except BaseException:
        controlplane.KCM_NODE_CONTROLLERS = saved
        raise
    controlplane.KCM_NODE_CONTROLLERS = saved
    env = InCluster(cluster, [], image, timings)
    try:
        env.nodes = cluster.add_nodes(WORKERS)
        cluster.wait_joined(WORKERS)
        timings["cluster and nodes joined"] = time.monotonic() - started
        yield env
    finally:
        for line in env.workload_logs().splitlines()[-200:]:
            log.info("%s", line)
        print("\nin-cluster timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
        cluster.close()


@pytest.fixture(scope="module")
def workloads(incluster: InCluster, tmp_path_factory: pytest.TempPathFactory) -> InCluster:
    """The image in both nodes' CRI-O, the bootstrap handed over, `kubectl apply -k` of the
    overlay, and the Deployment and both DaemonSets ready."""
    cluster, nodes, timings = incluster.cluster, incluster.nodes, incluster.timings
    assert cluster.cp is not None and cluster.network is not None
    work = tmp_path_factory.mktemp("incluster")

    started = time.monotonic()
    for node in nodes:
        cluster.load_image(node, incluster.image.layout, IMAGE)
    timings["image load into CRI-O (2 nodes)"] = time.monotonic() - started

    # the controller stops next: an update still in flight could not drain without it, and
    # the service would then finish that update before it stops
    for node in nodes:
        cluster.wait_for(f"daemon of {node.name} Done before the hand-over",
                         lambda n=node.name: cluster.daemon_done(n), 300)
    _stop_bootstrap_programs(cluster)
    for node in nodes:
        _hold_daemon_service(node)
        # what a pod network provides: the control plane reaches each node's pod subnet
        cluster.network.run(["ip", "route", "replace", node.pod_subnet, "via", node.address])
    incluster.kubectl("label", "node", MCS_NODE, "node-role.kubernetes.io/control-plane=")
    mcs_node = cluster.node(MCS_NODE)
    cert, key = cluster.cp.ca.issue(mcs_node.address, dns=("machine-config-server",),
                                    ips=(mcs_node.address,), server=True)
    (work / "tls.crt").write_bytes(cert)
    (work / "tls.key").write_bytes(key)
    incluster.kubectl("-n", MCO_NAMESPACE, "create", "secret", "tls",
                      "machine-config-server-tls", f"--cert={work / 'tls.crt'}",
                      f"--key={work / 'tls.key'}")

    api = urllib.parse.urlsplit(cluster.cp.internal_url)
    overlay = _overlay(work / "overlay", str(api.hostname), str(api.port))
    started = time.monotonic()
    incluster.kubectl("apply", "-k", str(overlay))
    cluster.wait_for("the controller Deployment and the server and daemon DaemonSets ready",
                     incluster.workloads_ready, 600, incluster.workload_logs)
    timings["workloads up"] = time.monotonic() - started
    return incluster


def _roll_out(env: InCluster, name: str, path: str, content: str, timeout: float) -> str:
    """Apply a worker MachineConfig writing `path`; wait until every node is Done on the new
    rendered config; check the file landed and the daemon pod applied it. Returns the
    rendered config's name."""
    cluster, nodes = env.cluster, env.nodes
    before = {node.name: env.annotations(node.name)[CURRENT] for node in nodes}
    mc = {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
          "metadata": {"name": name,
                       "labels": {"machineconfiguration.openshift.io/role": "worker"}},
          "spec": {"config": {"ignition": {"version": "3.5.0"}, "storage": {"files": [{
              "path": path, "mode": 0o644, "overwrite": True,
              "contents": {"source": "data:," + urllib.parse.quote(content)}}]}}}}
    started = time.monotonic()
    env.kubectl("apply", "-f", "-", input=yaml.safe_dump(mc))

    def rolled_out() -> bool:
        for node in nodes:
            notes = env.annotations(node.name)
            if not (notes.get(CURRENT) == notes.get(DESIRED) != before[node.name]
                    and notes.get(STATE) == "Done"):
                return False
        # the pool's status follows the nodes' annotations at the controller's next sync
        status = json.loads(env.kubectl("get", "mcp", "worker", "-o", "json").stdout)["status"]
        return bool(status.get("updatedMachineCount") == len(nodes) and
                    status.get("configuration", {}).get("name") ==
                    env.annotations(nodes[0].name).get(CURRENT))

    def describe() -> str:
        return "\n".join(f"{n.name}: {env.annotations(n.name)}" for n in nodes) + \
            "\n" + env.workload_logs()

    cluster.wait_for(f"MachineConfig {name} rolled out by the pods", rolled_out, timeout,
                     describe)
    env.timings[f"rollout of {name} (2 nodes)"] = time.monotonic() - started
    pool = json.loads(env.kubectl("get", "mcp", "worker", "-o", "json").stdout)
    rendered = str(pool["status"]["configuration"]["name"])
    assert pool["status"]["updatedMachineCount"] == len(nodes), pool["status"]
    for node in nodes:
        assert env.annotations(node.name)[CURRENT] == rendered
        assert (node.root / path.lstrip("/")).read_text() == content
        assert f"-> {rendered}" in env.daemon_log(node), env.daemon_log(node)[-3000:]
        # only the pod could have applied it: the node's own daemon service stayed off
        state = node.run(["systemctl", "is-active", "machine-config-daemon.service"],
                         check=False).stdout.strip()
        assert state == "inactive", (node.name, state)
    return rendered


def test_workloads_run_from_the_image(workloads: InCluster) -> None:
    cluster = workloads.cluster
    pods = json.loads(workloads.kubectl("-n", MCO_NAMESPACE, "get", "pods", "-o", "json").stdout)
    placed = sorted((p["metadata"]["labels"]["k8s-app"], p["spec"]["nodeName"])
                    for p in pods["items"])
    assert [n for app, n in placed if app == "machine-config-server"] == [MCS_NODE]
    assert sorted(n for app, n in placed if app == "machine-config-daemon") == sorted(WORKERS)
    for pod in pods["items"]:
        assert pod["spec"]["containers"][0]["image"] == IMAGE
    # the server pod serves the pool, on its node's host network
    mcs_node = cluster.node(MCS_NODE)
    probe = cluster.network.run(["python3", "-c", (  # type: ignore[union-attr]
        "import ssl,sys,urllib.request as u;"
        f"c=ssl.create_default_context(cafile='{cluster.workdir / 'programs/ca.crt'}');"
        f"r=u.urlopen('https://{mcs_node.address}:22623/config/worker',context=c,timeout=10);"
        "sys.exit(0 if r.status==200 and b'ignition' in r.read() else 1)")], check=False,
        timeout=60)
    assert probe.returncode == 0, probe.stderr


def test_reload_change_applied_by_the_daemon_pods(workloads: InCluster) -> None:
    """registries.d: CRI-O is reloaded through the host's systemd, no drain, no reboot."""
    reboots = {n.name: len(workloads.cluster.supervisor.reboots_of(n.name))
               for n in workloads.nodes}
    _roll_out(workloads, "99-worker-incluster-reload", MC_FILE, MC_CONTENT, timeout=600)
    for node in workloads.nodes:
        assert "post-config action: reload crio.service" in workloads.daemon_log(node)
        assert len(workloads.cluster.supervisor.reboots_of(node.name)) == reboots[node.name]


def test_reboot_change_drains_and_reboots_each_node(workloads: InCluster) -> None:
    """Any other file: each node in turn is drained (the controller's own pod moves), rebooted
    by the daemon pod through the host's systemd, and its daemon pod reports Done after boot."""
    reboots = {n.name: len(workloads.cluster.supervisor.reboots_of(n.name))
               for n in workloads.nodes}
    _roll_out(workloads, "99-worker-incluster-reboot", REBOOT_FILE, REBOOT_CONTENT,
              timeout=1200)
    for node in workloads.nodes:
        assert len(workloads.cluster.supervisor.reboots_of(node.name)) == reboots[node.name] + 1
    for node in workloads.nodes:  # uncordoned again
        assert not workloads.node_object(node.name)["spec"].get("unschedulable")  # type: ignore[attr-defined]
