"""The three programs on the kube store: `mcc start --store kube --kubeconfig F` and
`mcs start --store kube:F` as processes against the fake API server (no state directory), and
`mcd start`'s connection (a store limited to its own node, the node registered by the kubelet)."""
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
from tests.kube.fakeapi import FakeAPIServer
from tests.kube.kit import GROUP_PATH, apply, call, eventually
from tests.unit.clusterkit import machine_config
from tests.unit.poolyaml import pool_yaml
from tests.unit.procs import stop_all

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


def inputs(fakeapi: FakeAPIServer) -> None:
    for text in (pool_yaml("worker", role="worker", node_role="worker"),
                 machine_config("00-worker", "/etc/motd", "hello\n")):
        apply(fakeapi, yaml.safe_load(text))


def pool(fakeapi: FakeAPIServer) -> dict[str, Any]:
    return call(fakeapi, "GET", f"{GROUP_PATH}/machineconfigpools/worker")[1]


def test_mcc_start_once(fakeapi: FakeAPIServer, kubeconfig: Path, crds: list[str]) -> None:
    inputs(fakeapi)
    done = subprocess.run([sys.executable, "-m", "mcc.cli", "start", "--store", "kube",
                           "--kubeconfig", str(kubeconfig), "--once"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    name = pool(fakeapi)["spec"]["configuration"]["name"]
    assert name.startswith("rendered-worker-")
    code, rendered = call(fakeapi, "GET", f"{GROUP_PATH}/machineconfigs/{name}")
    assert code == 200 and rendered["metadata"]["ownerReferences"][0]["kind"] == "MachineConfigPool"
    assert pool(fakeapi)["status"]["conditions"]


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


def test_controller_and_server_processes_on_kube(fakeapi: FakeAPIServer, kubeconfig: Path,
                                                 crds: list[str], tmp_path: Path,
                                                 procs: list[subprocess.Popen[bytes]]) -> None:
    inputs(fakeapi)
    mcc = spawn(procs, tmp_path / "mcc.log", "mcc.cli", "start", "--store", "kube",
                "--kubeconfig", str(kubeconfig), "--interval", "600")
    eventually(lambda: bool((pool(fakeapi).get("spec") or {}).get("configuration")), 60)
    first = pool(fakeapi)["spec"]["configuration"]["name"]

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
    call(fakeapi, "POST", "/api/v1/nodes", {
        "metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/worker": ""},
                     "annotations": {C.CURRENT_CONFIG_ANNOTATION: first,
                                     C.DESIRED_CONFIG_ANNOTATION: first,
                                     C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: "Done"}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    eventually(lambda: (pool(fakeapi).get("status") or {}).get("updatedMachineCount") == 1, 60)

    # A new MachineConfig: the controller, woken by its watch (its interval is 10 minutes),
    # renders it and targets the node.
    apply(fakeapi, yaml.safe_load(machine_config("50-worker", "/etc/other", "x\n")))
    eventually(lambda: call(fakeapi, "GET", "/api/v1/nodes/n1")[1]["metadata"]["annotations"][
        C.DESIRED_CONFIG_ANNOTATION] != first, 60)
    stop_all([mcc, mcs])
    assert mcc.returncode == 0, (tmp_path / "mcc.log").read_text()
    assert mcs.returncode == 0, mcs_log.read_text()
    for log in (mcs_log, tmp_path / "mcc.log"):
        text = log.read_text()
        assert "fake-token" not in text  # the kubeconfig's bearer token
        assert "HTTP Request:" not in text  # no line per API request


def test_mcd_connects_to_its_own_node(fakeapi: FakeAPIServer, kubeconfig: Path, crds: list[str],
                                      tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):  # not registered by its kubelet yet: mcd start retries
        connect(f"kube:{kubeconfig}", None, "n1", tmp_path, tmp_path / "none.json", {})
    for name in ("n1", "n2"):
        call(fakeapi, "POST", "/api/v1/nodes", {"metadata": {"name": name}})
    api = connect(f"kube:{kubeconfig}", None, "n1", tmp_path, tmp_path / "none.json", {})
    try:
        api.patch_node_annotations("n1", {C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: "Done"})
        with pytest.raises(ForbiddenError):
            api.patch_node_annotations("n2", {C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: "Done"})
        api.wait_for_change(0, 0)  # starts its watch

        def node_reads() -> list[str]:
            return [q for m, p, q in fakeapi.state.requests if p == "/api/v1/nodes" and m == "GET"]

        eventually(lambda: any("watch=true" in q for q in node_reads()))
        watches = node_reads()
        # The daemon's requests name only its node.
        paths = {p for m, p, _ in fakeapi.state.requests if "/nodes" in p and m != "POST"}
        assert paths == {"/api/v1/nodes/n1", "/api/v1/nodes"}
        assert all("fieldSelector=metadata.name%3Dn1" in q for q in watches)
    finally:
        api.close()  # type: ignore[attr-defined]
