"""Helpers for the kube tests on the real control plane (tests/kube/controlplane.py): raw HTTP
calls as kubectl would make them, the workloads a drain meets (pods bound to a node with the
status a kubelet would report, their ReplicaSets and DaemonSets, PodDisruptionBudgets whose status
the real disruption controller computes), the audit log as the list of requests made, and waiting
for asynchronous delivery."""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tests.kube.controlplane import AuditRecord, ControlPlane

GROUP_PATH = "/apis/machineconfiguration.openshift.io/v1"
PLURALS = {"MachineConfig": "machineconfigs", "MachineConfigPool": "machineconfigpools",
           "ControllerConfig": "controllerconfigs", "KubeletConfig": "kubeletconfigs",
           "ContainerRuntimeConfig": "containerruntimeconfigs"}
MERGE = "application/merge-patch+json"


def call(cp: ControlPlane, method: str, path: str, body: Any = None,
         ctype: str = "application/json") -> tuple[int, dict[str, Any]]:
    code, answer = cp.call(method, path, body, ctype)
    return code, answer


def object_path(obj: dict[str, Any]) -> str:
    kind = obj["kind"]
    if kind in PLURALS:
        return f"{GROUP_PATH}/{PLURALS[kind]}"
    if kind == "Secret":
        return f"/api/v1/namespaces/{obj['metadata'].get('namespace', 'default')}/secrets"
    if kind == "Namespace":
        return "/api/v1/namespaces"
    raise KeyError(kind)


def apply(cp: ControlPlane, obj: dict[str, Any]) -> dict[str, Any]:
    """Create or replace, as `kubectl apply` does for the user's inputs (strict field
    validation, optimistic concurrency)."""
    import json

    base = object_path(obj)
    name = obj["metadata"]["name"]
    code, current = call(cp, "GET", f"{base}/{name}")
    if code == 404:
        code, out = call(cp, "POST", f"{base}?fieldValidation=Strict", obj)
        assert code == 201, out
        return out
    body = json.loads(json.dumps(obj))
    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    if "status" in current:
        body["status"] = current["status"]
    code, out = call(cp, "PUT", f"{base}/{name}?fieldValidation=Strict", body)
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

    root = Path(__file__).resolve().parents[2] / "examples" / "cluster"
    out: list[dict[str, Any]] = []
    for name in files:
        out += [d for d in yaml.safe_load_all((root / name).read_text()) if d]
    return out


def controller_config() -> dict[str, Any]:
    """The example ControllerConfig, with a newline ("Cg==") instead of an empty string in its
    required `format: byte` fields (kube-apiserver refuses "": a byte string is base64, at
    least 4 characters)."""
    cc = examples("controllerconfig.yaml")[0]
    for key in ("additionalTrustBundle", "cloudProviderCAData"):
        if cc["spec"].get(key) in ("", None):
            cc["spec"][key] = "Cg=="
    return cc


def writes(cp: ControlPlane, since: int) -> list[tuple[str, str]]:
    """(method, path) of every create/update/patch/delete made by the admin since `since`
    (cp.audit_mark()), waiting for the log to hold all answered requests."""
    cp.audit_mark()
    return [(r.method, r.path) for r in cp.requests(since, user="admin", writes_only=True)]


def evictions(cp: ControlPlane, since: int = 0) -> list[tuple[str, int]]:
    """("namespace/pod", HTTP code) of every eviction request since `since`, in order."""
    cp.audit_mark()
    return [(_pod_key(r), r.code) for r in cp.requests(since)
            if r.verb == "create" and r.path.endswith("/eviction")]


def _pod_key(r: AuditRecord) -> str:
    parts = r.path.split("/")  # /api/v1/namespaces/<ns>/pods/<name>/eviction
    return f"{parts[4]}/{parts[6]}"


# ----- workloads


def add_owner(cp: ControlPlane, namespace: str, kind: str, name: str, replicas: int = 1,
              labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A ReplicaSet or DaemonSet object (no controller runs it: pods are made by the test);
    returns it (its uid is what an ownerReference names)."""
    labels = dict(labels or {"owner": name})
    template = {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "localhost/pause:3.10"}]}}
    spec: dict[str, Any] = {"selector": {"matchLabels": labels}, "template": template}
    if kind == "ReplicaSet":
        spec["replicas"] = replicas
    plural = {"ReplicaSet": "replicasets", "DaemonSet": "daemonsets"}[kind]
    code, out = call(cp, "POST", f"/apis/apps/v1/namespaces/{namespace}/{plural}",
                     {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name},
                      "spec": spec})
    assert code == 201, out
    return out


def add_pod(cp: ControlPlane, namespace: str, name: str, node: str,
            owner: Mapping[str, Any] | None = None, labels: Mapping[str, str] | None = None,
            annotations: Mapping[str, str] | None = None, phase: str = "Running",
            ready: bool = True, volumes: list[dict[str, Any]] | None = None,
            grace: int = 0) -> dict[str, Any]:
    """A pod bound to `node` (spec.nodeName) with the status its kubelet would report: `phase`,
    Ready when `ready`. `owner` is an object from add_owner. `grace` is its
    terminationGracePeriodSeconds: 0 makes an accepted eviction delete it at once; otherwise
    it stays Terminating until `finish_deletions` (no kubelet here)."""
    meta: dict[str, Any] = {"name": name, "labels": dict(labels or {}),
                            "annotations": dict(annotations or {})}
    if owner is not None:
        meta["ownerReferences"] = [{
            "apiVersion": owner["apiVersion"], "kind": owner["kind"],
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}]
    spec: dict[str, Any] = {"nodeName": node, "terminationGracePeriodSeconds": grace,
                            "containers": [{"name": "c", "image": "localhost/pause:3.10"}]}
    if volumes:
        spec["volumes"] = volumes
    code, pod = call(cp, "POST", f"/api/v1/namespaces/{namespace}/pods",
                     {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
    assert code == 201, pod
    if phase == "Running":
        return cp.set_pod_ready(namespace, name, ready)
    if phase != "Pending":
        code, pod = call(cp, "PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}/status",
                         {"status": {"phase": phase}}, MERGE)
        assert code == 200, pod
    return pod


def add_budget(cp: ControlPlane, namespace: str, name: str, selector: Mapping[str, str],
               min_available: int | str | None = None,
               max_unavailable: int | str | None = None,
               policy: str | None = None) -> dict[str, Any]:
    """A PodDisruptionBudget; returns once the disruption controller has computed its status."""
    spec: dict[str, Any] = {"selector": {"matchLabels": dict(selector)}}
    if min_available is not None:
        spec["minAvailable"] = min_available
    if max_unavailable is not None:
        spec["maxUnavailable"] = max_unavailable
    if policy is not None:
        spec["unhealthyPodEvictionPolicy"] = policy
    code, out = call(cp, "POST", f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets",
                     {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                      "metadata": {"name": name}, "spec": spec})
    assert code == 201, out
    return settle_budget(cp, namespace, name)


def budget(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    code, out = call(cp, "GET", f"/apis/policy/v1/namespaces/{namespace}/"
                     f"poddisruptionbudgets/{name}")
    assert code == 200, out
    return out


def settle_budget(cp: ControlPlane, namespace: str, name: str,
                  timeout: float = 30.0) -> dict[str, Any]:
    """Wait until the disruption controller's status of the budget reflects the pods as they are
    now (latest spec observed, healthy count = the Ready, not terminating pods it selects, no
    eviction still pending); returns the budget."""
    found: dict[str, Any] = {}

    def settled() -> bool:
        pdb = budget(cp, namespace, name)
        status = pdb.get("status") or {}
        selector = pdb["spec"]["selector"].get("matchLabels") or {}
        _, pods = call(cp, "GET", f"/api/v1/namespaces/{namespace}/pods")
        healthy = sum(
            1 for p in pods["items"]
            if all(p["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())
            and not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True"
                    for c in (p.get("status") or {}).get("conditions", [])))
        found.update(pdb)
        return (status.get("observedGeneration") == pdb["metadata"]["generation"]
                and status.get("currentHealthy") == healthy
                and not status.get("disruptedPods"))

    cp.wait_for(f"PodDisruptionBudget {namespace}/{name} status", settled, timeout)
    return found


def node_pods(cp: ControlPlane, node: str) -> list[str]:
    """"namespace/name" of the pods bound to `node` (terminating ones included), sorted."""
    code, pods = call(cp, "GET", f"/api/v1/pods?fieldSelector=spec.nodeName%3D{node}")
    assert code == 200, pods
    return sorted(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods["items"])


def finish_deletions(cp: ControlPlane) -> list[str]:
    """What a kubelet does when a pod's containers stopped: remove every pod being deleted
    (grace period 0); returns them."""
    _, pods = call(cp, "GET", "/api/v1/pods")
    gone = []
    for pod in pods["items"]:
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            call(cp, "DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                 {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0})
            gone.append(f"{meta['namespace']}/{meta['name']}")
    return sorted(gone)


def post_eviction(cp: ControlPlane, namespace: str, name: str, body_name: str | None = None
                  ) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST an Eviction (status, body, response headers)."""
    import json
    import urllib.error
    import urllib.request

    body = {"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": body_name or name, "namespace": namespace}}
    req = urllib.request.Request(
        f"{cp.url}/api/v1/namespaces/{namespace}/pods/{name}/eviction",
        data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10,  # noqa: S310 - loopback
                                    context=cp.ssl_context()) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def machine_config_node_history(cp: ControlPlane, name: str, since: str) -> list[dict[str, Any]]:
    """Every version of MachineConfigNode `name` written after resourceVersion `since`, oldest
    first, as the API server's watch replays them (a watch from a resourceVersion starts with
    the changes made since)."""
    import json

    code, text = cp.call("GET", f"{GROUP_PATH}/machineconfignodes?watch=1&resourceVersion={since}"
                                f"&timeoutSeconds=2&fieldSelector=metadata.name%3D{name}",
                         raw=True)
    assert code == 200, text
    out = []
    for line in str(text).splitlines():
        if line.strip():
            event = json.loads(line)
            assert event["type"] in ("ADDED", "MODIFIED", "DELETED"), event
            out.append(event["object"])
    return out
