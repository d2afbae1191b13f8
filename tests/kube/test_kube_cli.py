"""The three programs on the kube store: `mcc start --store kube --kubeconfig F` and
`mcs start --store kube:F` as processes against the real control plane (no state directory), and
`mcd start`'s connection (a store limited to its own node, the node registered by the kubelet).
The programs authenticate with a service-account token (bound to cluster-admin here; RBAC of the
real manifests is tested elsewhere)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from machineconfig import constants as C
from machineconfig.store import ForbiddenError, NotFoundError
from mcd.cluster import connect
from tests.kube.controlplane import ControlPlane
from tests.kube.kit import GROUP_PATH, add_pod, apply, call, eventually
from tests.support.clusterkit import machine_config
from tests.support.poolyaml import pool_yaml
from tests.support.procs import stop_all

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    stop_all(started)


def spawn(procs: list[subprocess.Popen[bytes]], log: Path, *cmd: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", *cmd], stdout=out, stderr=subprocess.STDOUT,
                                cwd=ROOT)
    procs.append(proc)
    return proc


@pytest.fixture
def token_kubeconfig(clean_cluster: ControlPlane, kube_namespace: str) -> Path:
    """A kubeconfig with a real token of a service account bound to cluster-admin."""
    cp = clean_cluster
    path = cp.service_account_kubeconfig(kube_namespace, "programs")
    code, out = call(cp, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
        "metadata": {"name": f"programs-{kube_namespace}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "programs",
                      "namespace": kube_namespace}]})
    assert code == 201, out
    return path


def token_of(kubeconfig: Path) -> str:
    return str(yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"])


def inputs(cp: ControlPlane) -> None:
    for text in (pool_yaml("worker", role="worker", node_role="worker"),
                 machine_config("00-worker", "/etc/motd", "hello\n")):
        apply(cp, yaml.safe_load(text))


def pool(cp: ControlPlane) -> dict[str, Any]:
    return call(cp, "GET", f"{GROUP_PATH}/machineconfigpools/worker")[1]


def test_mcc_start_once(clean_cluster: ControlPlane, kubeconfig: Path) -> None:
    cp = clean_cluster
    inputs(cp)
    done = subprocess.run([sys.executable, "-m", "mcc.cli", "start", "--store", "kube",
                           "--kubeconfig", str(kubeconfig), "--once"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    name = pool(cp)["spec"]["configuration"]["name"]
    assert name.startswith("rendered-worker-")
    code, rendered = call(cp, "GET", f"{GROUP_PATH}/machineconfigs/{name}")
    assert code == 200 and rendered["metadata"]["ownerReferences"][0]["kind"] == "MachineConfigPool"
    assert pool(cp)["status"]["conditions"]


def test_cli_errors(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)

    done = run("mcc.cli", "start", "--store", "local:x", "--kubeconfig", "k", "--once")
    assert done.returncode == 1 and "--kubeconfig goes with --store kube" in done.stderr
    done = run("mcc.cli", "start", "--store", f"kube:{tmp_path / 'none'}", "--once")
    assert done.returncode == 1 and "kubeconfig file not found" in done.stderr
    done = run("mcs.cli", "start", "--store", f"local:{tmp_path}", "--insecure-port", "0")
    assert done.returncode == 2 and "--state is required" in done.stderr


def test_controller_and_server_processes_on_kube(clean_cluster: ControlPlane,
                                                 token_kubeconfig: Path, tmp_path: Path,
                                                 procs: list[subprocess.Popen[bytes]]) -> None:
    cp, kubeconfig = clean_cluster, token_kubeconfig
    inputs(cp)
    mcc = spawn(procs, tmp_path / "mcc.log", "mcc.cli", "start", "--store", "kube",
                "--kubeconfig", str(kubeconfig), "--interval", "600")
    eventually(lambda: bool((pool(cp).get("spec") or {}).get("configuration")), 60)
    first = pool(cp)["spec"]["configuration"]["name"]

    mcs_log = tmp_path / "mcs.log"
    mcs = spawn(procs, mcs_log, "mcs.cli", "start", "--store", f"kube:{kubeconfig}",
                "--insecure-port", "0", "--secure-port", "-1", "--bind-address", "127.0.0.1")
    urls: list[str] = []

    def listening() -> bool:
        assert mcs.poll() is None, mcs_log.read_text()
        urls[:] = re.findall(r"listening on (http://[0-9.]+:[0-9]+)", mcs_log.read_text())
        return bool(urls)

    eventually(listening, 60)
    req = urllib.request.Request(urls[0] + "/config/worker",
                                 headers={"Accept": "application/vnd.coreos.ignition+json;version=3.4.0"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        served = json.loads(resp.read())
    paths = [f["path"] for f in served["storage"]["files"]]
    assert "/etc/motd" in paths
    assert C.NODE_CREDENTIALS_PATH not in paths  # no node API: daemons use the API server
    annotations = next(f for f in served["storage"]["files"]
                       if f["path"] == "/etc/machine-config-daemon/node-annotations.json")
    assert first in urllib.parse.unquote(annotations["contents"]["source"])

    # A node the kubelet registered, booted into the first config: the controller (woken by its
    # watch on nodes) counts it.
    call(cp, "POST", "/api/v1/nodes", {
        "metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/worker": ""},
                     "annotations": {C.CURRENT_CONFIG_ANNOTATION: first,
                                     C.DESIRED_CONFIG_ANNOTATION: first,
                                     C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: "Done"}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    eventually(lambda: (pool(cp).get("status") or {}).get("updatedMachineCount") == 1, 60)

    # A new MachineConfig: the controller, woken by its watch (its interval is 10 minutes),
    # renders it and targets the node.
    apply(cp, yaml.safe_load(machine_config("50-worker", "/etc/other", "x\n")))
    eventually(lambda: call(cp, "GET", "/api/v1/nodes/n1")[1]["metadata"]["annotations"][
        C.DESIRED_CONFIG_ANNOTATION] != first, 60)
    stop_all([mcc, mcs])
    assert mcc.returncode == 0, (tmp_path / "mcc.log").read_text()
    assert mcs.returncode == 0, mcs_log.read_text()
    for log in (mcs_log, tmp_path / "mcc.log"):
        text = log.read_text()
        assert token_of(kubeconfig) not in text  # the kubeconfig's bearer token
        assert "HTTP Request:" not in text  # no line per API request


def test_mcc_start_logs_the_stores_decisions(clean_cluster: ControlPlane, kube_namespace: str,
                                            kubeconfig: Path, tmp_path: Path,
                                            procs: list[subprocess.Popen[bytes]]) -> None:
    """The store's one-line decisions (here "evicted pod") are part of mcc start's log, not only
    the `mcc` loggers'."""
    cp, ns = clean_cluster, kube_namespace
    inputs(cp)
    call(cp, "POST", "/api/v1/nodes", {"metadata": {
        "name": "n1", "labels": {"node-role.kubernetes.io/worker": ""}}})
    add_pod(cp, ns, "web", "n1")
    log = tmp_path / "mcc.log"
    mcc = spawn(procs, log, "mcc.cli", "start", "--store", "kube", "--kubeconfig",
                str(kubeconfig), "--interval", "600")
    call(cp, "PATCH", "/api/v1/nodes/n1", {"metadata": {"annotations": {
        C.DESIRED_DRAIN_ANNOTATION: "drain-rendered-worker-x"}}}, "application/merge-patch+json")

    def drained() -> bool:
        assert mcc.poll() is None, log.read_text()
        annotations = call(cp, "GET", "/api/v1/nodes/n1")[1]["metadata"]["annotations"]
        return bool(annotations.get(C.LAST_APPLIED_DRAIN_ANNOTATION) == "drain-rendered-worker-x")

    eventually(drained, 60)
    stop_all([mcc])
    text = log.read_text()
    assert f"node n1: evicted pod {ns}/web" in text, text


def test_mcd_connects_to_its_own_node(clean_cluster: ControlPlane, kubeconfig: Path,
                                      tmp_path: Path) -> None:
    cp = clean_cluster
    with pytest.raises(NotFoundError):  # not registered by its kubelet yet: mcd start retries
        connect(f"kube:{kubeconfig}", None, "n1", tmp_path, tmp_path / "none.json", {})
    for name in ("n1", "n2"):
        call(cp, "POST", "/api/v1/nodes", {"metadata": {"name": name}})
    mark = cp.audit_mark()
    api = connect(f"kube:{kubeconfig}", None, "n1", tmp_path, tmp_path / "none.json", {})
    try:
        api.patch_node_annotations("n1", {C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: "Done"})
        with pytest.raises(ForbiddenError):
            api.patch_node_annotations("n2", {C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: "Done"})
        api.wait_for_change(0, 0)  # starts its watch

        def node_reads() -> list[str]:
            cp.audit_mark()
            return [r.uri for r in cp.requests(mark, user="admin")
                    if r.path == "/api/v1/nodes" and r.method == "GET"]

        eventually(lambda: any("watch=true" in q for q in node_reads()))
        watches = node_reads()
        # The daemon's requests name only its node.
        paths = {r.path for r in cp.requests(mark, user="admin")
                 if "/nodes" in r.path and r.method != "POST"}
        assert paths == {"/api/v1/nodes/n1", "/api/v1/nodes"}
        assert all("fieldSelector=metadata.name%3Dn1" in q for q in watches)
    finally:
        api.close()  # type: ignore[attr-defined]
