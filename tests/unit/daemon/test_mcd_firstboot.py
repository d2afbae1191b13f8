"""`mcd firstboot` against a real `mcs bootstrap` on 127.0.0.1 (TLS, bearer token): the full
config lands in a tmp root as Ignition's files stage would leave it; no reboot.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcd import firstboot
from mcd.cli import main
from tests.unit.server.test_mcs_layout import SSH_KEY, WORKER_CONFIG, ignition_config, write_layout
from tests.support.procs import stop_all, wait_for
from tests.unit.server.test_mcs_server import ROOT, TOKEN, Server, start_server


def worker_config() -> dict[str, Any]:
    config = ignition_config()
    config["storage"]["directories"] = [{"path": "/var/lib/example", "mode": 0o750}]
    config["storage"]["links"] = [{"path": "/etc/localtime", "target": "/usr/share/zoneinfo/UTC"}]
    config["systemd"]["units"] += [
        {"name": "masked.service", "mask": True},
        {"name": "off.service", "enabled": False,
         "contents": "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"},
        {"name": "kubelet.service", "dropins": [{"name": "10-x.conf", "contents": "[Service]\n"}]},
    ]
    return config


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("mcs")
    srv = start_server(tmp)
    write_layout(tmp, worker_config=worker_config())  # the server notices the new files
    yield srv
    srv.proc.send_signal(signal.SIGTERM)
    srv.proc.wait(timeout=15)


@pytest.fixture
def node_root(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\ncore:x:1000:1000::/home/core:/bin/sh\n")
    (tmp_path / "etc/group").write_text("root:x:0:\ncore:x:1000:\n")
    (tmp_path / "etc/shadow").write_text("root:*:1::::::\ncore:*:1::::::\n")
    (tmp_path / "home/core").mkdir(parents=True)
    return tmp_path


def test_firstboot_applies_the_served_config(server: Server, node_root: Path) -> None:
    code = main(["firstboot", "--url", server.https + "/config/worker", "--ca", str(server.ca_file),
                 "--token", TOKEN, "--root", str(node_root), "--no-reboot", "--retry-for", "20"])
    assert code == 0
    r = node_root
    assert (r / "etc/motd").read_text() == "hello <world> & more\n"
    assert (r / "etc/kubernetes/kubelet-ca.crt").read_bytes().startswith(b"-----BEGIN CERTIFICATE")
    assert (r / "etc/kubernetes/kubeconfig").exists()
    annotations = json.loads((r / "etc/machine-config-daemon/node-annotations.json").read_text())
    assert annotations["machineconfiguration.openshift.io/currentConfig"] == WORKER_CONFIG
    encapsulated = json.loads((r / "etc/ignition-machine-config-encapsulated.json").read_text())
    assert encapsulated["metadata"]["name"] == WORKER_CONFIG
    assert (r / "var/lib/example").is_dir() and (r / "var/lib/example").stat().st_mode & 0o777 == 0o750
    assert os.readlink(r / "etc/localtime") == "/usr/share/zoneinfo/UTC"
    assert (r / "etc/systemd/system/test.service").read_text().startswith("[Unit]")
    assert os.readlink(r / "etc/systemd/system/multi-user.target.wants/test.service") == \
        "/etc/systemd/system/test.service"
    assert not (r / "etc/systemd/system/multi-user.target.wants/off.service").exists()
    assert os.readlink(r / "etc/systemd/system/masked.service") == "/dev/null"
    assert (r / "etc/systemd/system/kubelet.service.d/10-x.conf").read_text() == "[Service]\n"
    preset = (r / "etc/systemd/system-preset/20-ignition.preset").read_text().splitlines()
    assert preset == ["enable test.service", "disable off.service"]
    keys = r / "home/core/.ssh/authorized_keys.d/ignition"
    assert keys.read_text() == SSH_KEY + "\n" and keys.stat().st_mode & 0o777 == 0o600
    assert (r / firstboot.DONE_STAMP.lstrip("/")).read_text().strip() == WORKER_CONFIG
    # the second step (the served machine-config-daemon-firstboot.service): encapsulated -> .bak
    assert main(["firstboot", "--root", str(r)]) == 0
    assert (r / "etc/ignition-machine-config-encapsulated.json.bak").exists()
    assert not (r / "etc/ignition-machine-config-encapsulated.json").exists()


def test_firstboot_from_a_pointer_config(server: Server, node_root: Path, tmp_path: Path) -> None:
    pointer = subprocess.run([sys.executable, "-m", "mcs.cli", "pointer", "--url", server.https + "/config/worker",
                              "--ca", str(server.ca_file), "--token", TOKEN],
                             capture_output=True, check=True, cwd=ROOT).stdout
    path = tmp_path / "pointer.ign"
    path.write_bytes(pointer)
    assert main(["firstboot", "--pointer", str(path), "--root", str(node_root), "--no-reboot",
                 "--retry-for", "20"]) == 0
    assert (node_root / "etc/motd").exists()


def test_firstboot_gives_up_after_retry_for(server: Server, node_root: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["firstboot", "--url", server.https + "/config/worker", "--ca", str(server.ca_file),
                 "--token", "wrong-token", "--root", str(node_root), "--no-reboot", "--retry-for", "1.5"])
    assert code == 1
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "wrong-token" not in err
    assert not (node_root / "etc/motd").exists()


def test_source_from_pointer_without_merge_is_an_error() -> None:
    with pytest.raises(firstboot.FirstbootError):
        firstboot.source_from_pointer({"ignition": {"version": "3.5.0"}})


# -- joining a running embedded cluster: mcc start + mcs start over a local store ----------------

POOLS = """apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfigPool
metadata: {name: worker}
spec:
  machineConfigSelector: {matchLabels: {machineconfiguration.openshift.io/role: worker}}
  nodeSelector: {matchLabels: {node-role.kubernetes.io/worker: ""}}
---
apiVersion: machineconfiguration.openshift.io/v1
kind: ControllerConfig
metadata: {name: machine-config-controller}
spec:
  baseOSContainerImage: quay.io/example/os@sha256:1111111111111111111111111111111111111111111111111111111111111111
"""


def motd_mc(text: str) -> str:
    return f"""apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata:
  name: 50-worker-motd
  labels: {{machineconfiguration.openshift.io/role: worker}}
spec:
  config:
    ignition: {{version: 3.5.0}}
    storage:
      files:
      - path: /etc/containers/policy.json
        mode: 420
        contents: {{source: "data:,{text}"}}
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port




def test_join_and_roll_out_against_mcc_and_mcs(tmp_path: Path, node_root: Path) -> None:
    import threading

    from machineconfig import constants as C
    import time

    from machineconfig.store import ConflictError
    from mcd.cluster import connect
    from mcs.tokens import NodeTokens
    from tests.unit.server.test_mcs_server import write_tls
    from mcd.daemon import Daemon, Timeouts
    from tests.unit.daemon.test_mcd_update import FakeSystemd

    inputs, state = tmp_path / "inputs", tmp_path / "state"
    inputs.mkdir()
    state.mkdir()
    (inputs / "pools.yaml").write_text(POOLS)
    (inputs / "motd.yaml").write_text(motd_mc("v1"))
    (state / "tokens").write_text(f"worker {TOKEN}\n")
    (state / "tokens").chmod(0o600)
    port = free_port()
    store = f"local:{inputs}"
    # The node API is served over TLS only.
    _, cert, key, ca_file = write_tls(tmp_path, "127.0.0.1")
    procs = [subprocess.Popen([sys.executable, "-m", f"{prog}.cli", *args], cwd=ROOT,
                              stdout=open(tmp_path / f"{prog}.log", "wb"), stderr=subprocess.STDOUT)
             for prog, args in (
                 ("mcc", ["start", "--store", store, "--state", str(state), "--interval", "1"]),
                 ("mcs", ["start", "--store", store, "--state", str(state), "--secure-port", str(port),
                          "--insecure-port", "-1", "--bind-address", "127.0.0.1", "--cert", str(cert),
                          "--key", str(key), "--ca", str(ca_file)]))]
    daemon: Daemon | None = None
    thread: threading.Thread | None = None
    try:
        url = f"https://127.0.0.1:{port}/config/worker"
        assert main(["firstboot", "--url", url, "--token", TOKEN, "--root", str(node_root), "--ca", str(ca_file),
                     "--no-reboot", "--retry-for", "60"]) == 0
        creds = json.loads((node_root / "etc/machine-config-daemon/node-credentials.json").read_text())
        assert creds["server"] == f"https://127.0.0.1:{port}" and creds["pool"] == "worker"
        assert (node_root / "etc/containers/policy.json").read_text() == "v1"
        api = connect(None, None, "node-a", node_root,
                      node_root / "etc/machine-config-daemon/node-credentials.json", {})
        assert (node_root / "etc/machine-config-daemon/node-token").stat().st_mode & 0o777 == 0o600
        systemd = FakeSystemd()
        daemon = Daemon(api, "node-a", systemd, root=node_root,
                        timeouts=Timeouts(watch=1.0, drift_poll=0.2))
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()

        def annotations() -> dict[str, str]:
            return api.get_node("node-a").annotations

        wait_for(lambda: annotations().get(C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION) == "Done",
                 60, "Done after joining")
        if C.DESIRED_CONFIG_ANNOTATION not in annotations():
            # MCO's daemon sets desiredConfig from node-annotations.json at bootstrap; without it
            # the node controller counts the new node unavailable and never targets it
            pytest.xfail("the node API refuses desiredConfig at bootstrap")
        first = annotations()[C.CURRENT_CONFIG_ANNOTATION]
        assert api.get_node("node-a").labels == {"node-role.kubernetes.io/worker": ""}
        # a policy.json change rolls out with a crio reload and no reboot
        (inputs / "motd.yaml").write_text(motd_mc("v2"))
        wait_for(lambda: annotations().get(C.CURRENT_CONFIG_ANNOTATION) not in (None, first)
                 and annotations().get(C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION) == "Done",
                 60, "the v2 rollout")
        assert (node_root / "etc/containers/policy.json").read_text() == "v2"
        assert ("ReloadUnit", "crio.service") in systemd.calls
        assert not any(call[0] == "Reboot" for call in systemd.calls)
        # a restarted daemon keeps its name with its stored token (renewed at once)
        token_file = node_root / "etc/machine-config-daemon/node-token"
        before = token_file.read_text()
        again = connect(None, None, "node-a", node_root,
                        node_root / "etc/machine-config-daemon/node-credentials.json", {})
        assert again.get_node("node-a").annotations[C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION] == "Done"
        assert token_file.read_text() != before
        # a token that is not the node's own does not take the name over (409) ...
        token_file.write_text("stale-token\n")
        with pytest.raises(ConflictError, match="mcs node revoke node-a"):
            connect(None, None, "node-a", node_root,
                    node_root / "etc/machine-config-daemon/node-credentials.json", {})
        # ... until the admin revokes the node's tokens: then the pool token registers it again
        # (the server re-reads the token file within a second)
        assert NodeTokens(state).revoke("node-a")
        time.sleep(1.5)
        again = connect(None, None, "node-a", node_root,
                        node_root / "etc/machine-config-daemon/node-credentials.json", {})
        assert again.get_node("node-a").annotations[C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION] == "Done"
        assert token_file.read_text().strip() not in ("stale-token", "")
    finally:
        if daemon is not None:
            daemon.stop_requested.set()
        if thread is not None:
            thread.join(timeout=10)
        stop_all(procs)
    for prog in ("mcc", "mcs"):
        assert TOKEN not in (tmp_path / f"{prog}.log").read_text()
