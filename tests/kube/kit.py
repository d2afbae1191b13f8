"""Helpers for the kube tests: raw HTTP calls against the fake (what kubectl would send), and
waiting for the store's watches to catch up."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from tests.kube.fakeapi import FakeAPIServer

GROUP_PATH = "/apis/machineconfiguration.openshift.io/v1"
PLURALS = {"MachineConfig": "machineconfigs", "MachineConfigPool": "machineconfigpools",
           "ControllerConfig": "controllerconfigs", "KubeletConfig": "kubeletconfigs",
           "ContainerRuntimeConfig": "containerruntimeconfigs"}


def call(server: FakeAPIServer, method: str, path: str, body: Any = None,
         ctype: str = "application/json") -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.url + path, data=data, method=method,
                                 headers={"Content-Type": ctype} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def object_path(obj: dict[str, Any]) -> str:
    kind = obj["kind"]
    if kind in PLURALS:
        return f"{GROUP_PATH}/{PLURALS[kind]}"
    if kind == "Secret":
        return f"/api/v1/namespaces/{obj['metadata'].get('namespace', 'default')}/secrets"
    if kind == "Namespace":
        return "/api/v1/namespaces"
    raise KeyError(kind)


def apply(server: FakeAPIServer, obj: dict[str, Any]) -> dict[str, Any]:
    """Create or replace, as `kubectl apply` does for the user's inputs (strict field
    validation, optimistic concurrency)."""
    base = object_path(obj)
    name = obj["metadata"]["name"]
    code, current = call(server, "GET", f"{base}/{name}")
    if code == 404:
        code, out = call(server, "POST", f"{base}?fieldValidation=Strict", obj)
        assert code == 201, out
        return out
    body = json.loads(json.dumps(obj))
    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    if "status" in current:
        body["status"] = current["status"]
    code, out = call(server, "PUT", f"{base}/{name}?fieldValidation=Strict", body)
    assert code == 200, out
    return out


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until `check()` holds (a correctness bound on asynchronous delivery, not a speed
    assertion: the watches usually catch up in milliseconds)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def examples(*files: str) -> list[dict[str, Any]]:
    """The objects of examples/cluster/<file> (the quick start's inputs)."""
    import yaml
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "examples" / "cluster"
    out: list[dict[str, Any]] = []
    for name in files:
        out += [d for d in yaml.safe_load_all((root / name).read_text()) if d]
    return out
