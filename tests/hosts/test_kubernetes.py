"""Kubernetes facts of a node that runs the real kubelet and CRI-O (collected only with
--mc-kubeconfig): both units active and enabled, CRI-O's socket there, the Node Ready in the
API server that --mc-kubeconfig reaches.
"""
from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

CRIO_SOCKET = "/var/run/crio/crio.sock"


@pytest.mark.parametrize("unit", ["crio.service", "kubelet.service"])
def test_unit_is_active_and_enabled(host: Any, unit: str) -> None:
    service = host.service(unit)
    assert service.is_running, host.run(f"systemctl status --no-pager {unit}").stdout
    assert service.is_enabled


def test_crio_socket_is_there(host: Any) -> None:
    assert host.socket(f"unix://{CRIO_SOCKET}").is_listening or host.file(CRIO_SOCKET).is_socket


def test_node_is_ready(host: Any, request: pytest.FixtureRequest) -> None:
    name = host.check_output("hostname").strip()
    kubeconfig = request.config.getoption("mc_kubeconfig")
    proc = subprocess.run(["kubectl", f"--kubeconfig={kubeconfig}", "get", "node", name,
                           "-o", "json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    conditions = {c["type"]: c["status"] for c in json.loads(proc.stdout)["status"]["conditions"]}
    assert conditions.get("Ready") == "True", conditions
