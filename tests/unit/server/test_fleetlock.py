"""FleetLock on `mcs start` (a real subprocess over real HTTPS on loopback), driven by a client
written from the protocol document (coreos/zincati docs/development/fleetlock/protocol.md):
POST {base}/v1/pre-reboot and {base}/v1/steady-state, header `fleet-lock-protocol: true`, body
{"client_params": {"id", "group"}}, 200 on success, errors as JSON {kind, value}.

The worker pool has maxUnavailable 1 (the default): one slot. Slots are recursive and owned,
survive a server restart, are shared with the controller's rollout, and `mcs fleetlock`
lists and releases them.
"""
from __future__ import annotations

import http.client
import json
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from machineconfig.constants import (
    CURRENT_CONFIG_ANNOTATION, DESIRED_CONFIG_ANNOTATION, MACHINE_CONFIG_DAEMON_STATE_ANNOTATION,
)
from mcc.node_controller import reconcile_pool
from tests.unit.server.test_node_api_security import ROOT, running

WORKER_LABEL = {"node-role.kubernetes.io/worker": ""}


@dataclass
class FleetLockClient:
    """What Zincati does, per the protocol document."""

    base: str  # the deployment-specific base URL, e.g. https://host:22623/fleetlock
    ca_file: Path
    id: str
    group: str = "default"

    def _post(self, endpoint: str, header: bool = True, body: Any = None) -> tuple[int, Any]:
        parts = urlsplit(self.base)
        assert parts.hostname is not None and parts.port is not None
        conn = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=30,
            context=ssl.create_default_context(cafile=str(self.ca_file)))
        payload = body if body is not None else \
            {"client_params": {"group": self.group, "id": self.id}}
        headers = {"Content-Type": "application/json"}
        if header:
            headers["fleet-lock-protocol"] = "true"
        try:
            conn.request("POST", parts.path + endpoint, body=json.dumps(payload).encode(),
                         headers=headers)
            resp = conn.getresponse()
            text = resp.read().decode()
        finally:
            conn.close()
        return resp.status, json.loads(text) if text.strip() else None

    def lock(self) -> tuple[int, Any]:
        return self._post("/v1/pre-reboot")

    def unlock(self) -> tuple[int, Any]:
        return self._post("/v1/steady-state")


def mcs_fleetlock(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mcs.cli", "fleetlock", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_the_semaphore_is_owned_recursive_full_and_survives_a_restart(tmp_path: Path) -> None:
    with running(tmp_path) as srv:
        base = srv.https + "/fleetlock"
        a = FleetLockClient(base, srv.ca_file, "c988d2509fdf4cdcbed39037c56406fb")
        b = FleetLockClient(base, srv.ca_file, "fcos-2")
        assert a.lock() == (200, {})
        assert a.lock() == (200, {})  # recursive: held already
        status, error = b.lock()
        assert status == 409 and error["kind"] == "failed_lock_semaphore_full", error
        assert "all 1 reboot slots of pool worker are taken" in error["value"]
        assert "c988d2509fdf4cdcbed39037c56406fb" in error["value"]
        assert b.unlock() == (200, {})  # UnlockIfHeld: fine when not held, frees nothing
        assert b.lock()[0] == 409
    # a restart of the server keeps the slot (it is in the store) and its owner
    (tmp_path / "notify.sock").unlink()
    with running(tmp_path) as srv:
        base = srv.https + "/fleetlock"
        a = FleetLockClient(base, srv.ca_file, "c988d2509fdf4cdcbed39037c56406fb")
        b = FleetLockClient(base, srv.ca_file, "fcos-2")
        assert b.lock()[0] == 409
        assert a.lock() == (200, {})
        assert a.unlock() == (200, {})
        assert b.lock() == (200, {})
        reasons = [e.reason for e in srv.store.list_events("MachineConfigPool", "worker")]
        assert reasons.count("RebootSlotTaken") == 2 and "RebootSlotReleased" in reasons


def test_protocol_errors_are_json_kind_and_value(tmp_path: Path) -> None:
    with running(tmp_path) as srv:
        base = srv.https + "/fleetlock"
        client = FleetLockClient(base, srv.ca_file, "host-1")
        status, error = client._post("/v1/pre-reboot", header=False)
        assert (status, error["kind"]) == (400, "missing_header"), error
        status, error = client._post("/v1/pre-reboot", body={"client_params": {"id": "x"}})
        assert (status, error["kind"]) == (400, "bad_request")
        assert "group" in error["value"]
        status, error = client._post("/v1/pre-reboot",
                                     body={"client_params": {"id": "", "group": "default"}})
        assert (status, error["kind"]) == (400, "bad_request")
        status, error = FleetLockClient(base, srv.ca_file, "h", "no.such-pool").lock()
        assert (status, error["kind"]) == (404, "unknown_group")
        status, error = client._post("/v1/pre-reboot", body=[1, 2])
        assert (status, error["kind"]) == (400, "bad_request")
        # the plain port does not serve it
        parts = urlsplit(srv.http)
        assert parts.hostname is not None
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        conn.request("POST", "/fleetlock/v1/pre-reboot", body=b"{}",
                     headers={"fleet-lock-protocol": "true"})
        assert conn.getresponse().status == 404
        conn.close()


def test_slots_are_shared_with_the_rollout_and_released_by_the_admin(tmp_path: Path) -> None:
    with running(tmp_path) as srv:
        base = srv.https + "/fleetlock"
        store = srv.store
        # two of our own nodes on rendered-a; the pool moves to rendered-b
        for name in ("n1", "n2"):
            store.register_node(name, WORKER_LABEL)
            store.patch_node_annotations(name, {
                CURRENT_CONFIG_ANNOTATION: "rendered-worker-a",
                DESIRED_CONFIG_ANNOTATION: "rendered-worker-a",
                MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: "Done"})
        # n1 is updating: it takes the only slot, a Zincati host is refused
        store.patch_node_annotations("n1", {DESIRED_CONFIG_ANNOTATION: "rendered-worker-b"})
        zincati = FleetLockClient(base, srv.ca_file, "fcos-1")
        status, error = zincati.lock()
        assert status == 409 and "updating n1" in error["value"], error
        # n1 done: the host gets the slot ...
        store.patch_node_annotations("n1", {CURRENT_CONFIG_ANNOTATION: "rendered-worker-b"})
        assert zincati.lock() == (200, {})
        # ... and the controller's rollout sees it as an unavailable machine: n2 must wait
        pool = {"metadata": {"name": "worker"},
                "spec": {"configuration": {"name": "rendered-worker-b"},
                         "nodeSelector": {"matchLabels": WORKER_LABEL}}}
        nodes = store.list_nodes()
        assert reconcile_pool(pool, nodes, lock_holders=1).targeted == []
        assert reconcile_pool(pool, nodes, lock_holders=0).targeted == ["n2"]
        events = [e.reason for e in store.list_events("MachineConfigPool", "worker")]
        assert "RebootSlotTaken" in events

        inputs = f"local:{srv.sdir.parent / 'inputs'}"
        listed = mcs_fleetlock("list", "--store", inputs, "--state", str(srv.sdir))
        assert listed.returncode == 0 and listed.stdout.startswith("default\tfcos-1\t"), listed
        released = mcs_fleetlock("release", "fcos-1", "--store", inputs, "--state", str(srv.sdir))
        assert released.returncode == 0, released.stderr
        again = mcs_fleetlock("release", "fcos-1", "--store", inputs, "--state", str(srv.sdir))
        assert again.returncode == 1 and "holds no slot" in again.stderr
        assert FleetLockClient(base, srv.ca_file, "fcos-2").lock() == (200, {})
