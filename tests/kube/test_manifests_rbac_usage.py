"""The RBAC in manifests/rbac allows every request the programs really make.

Each program runs against the fake API server (tests/kube/fakeapi), which records every request;
each request is then authorized the way kube-apiserver's RBAC authorizer does it (verb from the
method and query, API group, resource/subresource, namespace, the object's name, with a
`metadata.name` field selector counting as the name for list and watch) against the ClusterRoles
and Roles bound to that program's service account. So a grant missing from the manifests fails
here instead of on a cluster; test_manifests.py checks the other direction (no rule beyond the
table of what the programs use).

- controller: `mcc start --store kube --once` over the examples/cluster inputs, with a node to
  roll out to and a drain to carry out (cordon, list its pods, evict one);
- server: `mcs start --store kube`, serving /config/worker;
- daemon: the kube store limited to its node, doing what `mcd start` does through it (read its
  node and rendered configs, write its annotations, record events).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from machineconfig import constants as C
from tests.kube.conftest import install_crds
from tests.kube.fakeapi import FakeAPIServer
from tests.kube.kit import apply, call

REPO = Path(__file__).resolve().parents[2]
RBAC = REPO / "manifests" / "rbac"
NAMESPACE = "openshift-machine-config-operator"
VALUES = REPO / "examples" / "cluster-values.yaml"


# --------------------------------------------------------------------------------------------
# an RBAC authorizer over the manifests

def rbac_objects() -> list[dict[str, Any]]:
    return [d for p in sorted(RBAC.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


def rules_for(account: str) -> list[tuple[str | None, dict[str, Any]]]:
    """(namespace or None for cluster-wide, rule) of every role bound to the service account."""
    docs = rbac_objects()
    roles = {(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
             for d in docs if d["kind"] in ("ClusterRole", "Role")}
    subject = {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    out: list[tuple[str | None, dict[str, Any]]] = []
    for b in docs:
        if b["kind"] not in ("ClusterRoleBinding", "RoleBinding") or subject not in b["subjects"]:
            continue
        ns = b["metadata"].get("namespace") if b["kind"] == "RoleBinding" else None
        ref = b["roleRef"]
        role = roles[(ref["kind"], ns if ref["kind"] == "Role" else None, ref["name"])]
        out += [(ns, rule) for rule in role["rules"]]
    return out


PATH = re.compile(r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
                  r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?"
                  r"(?:/(?P<sub>[^/]+))?$")


def attributes(method: str, path: str, query: str) -> dict[str, Any] | None:
    """kube-apiserver's request info; None for a non-resource request (discovery, version)."""
    m = PATH.match(path)
    if m is None or (m["core"] is None and m["group"] is None):
        return None
    params = urllib.parse.parse_qs(query)
    name = m["name"]
    verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
    if method == "GET":
        if name is None:
            verb = "watch" if params.get("watch", ["false"])[0] in ("true", "1") else "list"
            for selector in params.get("fieldSelector", []):
                for term in selector.split(","):
                    if term.startswith("metadata.name="):
                        name = term.split("=", 1)[1]
        else:
            verb = "get"
    if method == "DELETE" and name is None:
        verb = "deletecollection"
    resource = m["resource"] + (f"/{m['sub']}" if m["sub"] else "")
    return {"verb": verb, "group": m["group"] or "", "resource": resource, "namespace": m["ns"],
            "name": name}


def allowed(account: str, attrs: dict[str, Any]) -> bool:
    for ns, rule in rules_for(account):
        if ns is not None and attrs["namespace"] != ns:
            continue
        if attrs["group"] not in rule["apiGroups"] or attrs["resource"] not in rule["resources"]:
            continue
        if attrs["verb"] not in rule["verbs"]:
            continue
        names = rule.get("resourceNames")
        if names and attrs["name"] not in names:
            continue
        return True
    return False


def denied(account: str, requests: list[tuple[str, str, str]]) -> list[str]:
    out = []
    for method, path, query in requests:
        attrs = attributes(method, path, query)
        if attrs is not None and not allowed(account, attrs):
            out.append(f"{attrs['verb']} {attrs['group'] or 'core'}/{attrs['resource']} "
                       f"ns={attrs['namespace']} name={attrs['name']}  ({method} {path}?{query})")
    return sorted(set(out))


def test_the_authorizer_itself() -> None:
    daemon = "machine-config-daemon"
    assert allowed(daemon, attributes("PATCH", "/api/v1/nodes/n1", ""))  # type: ignore[arg-type]
    assert not allowed(daemon, attributes("DELETE", "/api/v1/nodes/n1", ""))  # type: ignore[arg-type]
    assert not allowed(daemon, attributes("PATCH", "/api/v1/nodes/n1/status", ""))  # type: ignore[arg-type]
    controller = "machine-config-controller"
    secret = "/api/v1/namespaces/openshift-config/secrets"
    assert allowed(controller, attributes("GET", f"{secret}/pull-secret", ""))  # type: ignore[arg-type]
    assert not allowed(controller, attributes("GET", f"{secret}/other", ""))  # type: ignore[arg-type]
    assert not allowed(controller, attributes("GET", secret, ""))  # type: ignore[arg-type]
    assert allowed(controller, attributes(  # type: ignore[arg-type]
        "GET", secret, "watch=true&fieldSelector=metadata.name%3Dpull-secret"))
    assert allowed(controller, attributes(  # type: ignore[arg-type]
        "POST", "/api/v1/namespaces/default/pods/p1/eviction", ""))
    assert not allowed("machine-config-server", attributes(  # type: ignore[arg-type]
        "GET", "/api/v1/namespaces/openshift-config/secrets/pull-secret", ""))
    assert attributes("GET", "/apis", "") is None and attributes("GET", "/version", "") is None


# --------------------------------------------------------------------------------------------
# the cluster the programs run against

@pytest.fixture
def cluster(fakeapi: FakeAPIServer) -> FakeAPIServer:
    from mcc.template import render_user_template

    install_crds(fakeapi)
    call(fakeapi, "POST", "/api/v1/namespaces", {"metadata": {"name": "openshift-config"}})
    values = yaml.safe_load(VALUES.read_text())
    for path in sorted((REPO / "examples" / "cluster").iterdir()):
        if path.name.endswith(".yaml.j2"):
            text = render_user_template(path, values)
        elif path.suffix == ".yaml":
            text = path.read_text()
        else:
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                apply(fakeapi, doc)
    return fakeapi


def add_node(server: FakeAPIServer, name: str, annotations: dict[str, str] | None = None) -> None:
    code, out = call(server, "POST", "/api/v1/nodes", {
        "metadata": {"name": name, "labels": {"node-role.kubernetes.io/worker": ""},
                     "annotations": annotations or {}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    assert code == 201, out


def test_controller_requests_are_granted(cluster: FakeAPIServer, kubeconfig: Path) -> None:
    # A node whose daemon asked for a drain, with a pod on it: the pass cordons, lists, evicts.
    add_node(cluster, "n1", {C.DESIRED_DRAIN_ANNOTATION: "drain-rendered-worker-x",
                             C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: "Working"})
    code, out = call(cluster, "POST", "/api/v1/namespaces/default/pods", {
        "metadata": {"name": "app", "namespace": "default"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}})
    assert code == 201, out
    cluster.state.requests.clear()
    done = subprocess.run(
        [sys.executable, "-m", "mcc.cli", "start", "--store", "kube", "--kubeconfig", str(kubeconfig),
         "--once", "--values", str(VALUES)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    requests = list(cluster.state.requests)
    # The pass did the work whose permissions are checked.
    verbs = {(a["verb"], a["resource"]) for r in requests if (a := attributes(*r))}
    assert {("create", "machineconfigs"), ("patch", "machineconfigpools"),
            ("update", "machineconfigpools/status"), ("get", "secrets"), ("patch", "nodes"),
            ("list", "pods"), ("create", "pods/eviction"), ("create", "events")} <= verbs, verbs
    problems = denied("machine-config-controller", requests)
    assert problems == [], "\n".join(problems)


def test_server_requests_are_granted(cluster: FakeAPIServer, kubeconfig: Path) -> None:
    subprocess.run([sys.executable, "-m", "mcc.cli", "start", "--store", "kube", "--kubeconfig",
                    str(kubeconfig), "--once", "--values", str(VALUES)],
                   cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
    cluster.state.requests.clear()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcs.cli", "start", "--store", f"kube:{kubeconfig}",
         "--insecure-port", "0", "--secure-port", "-1", "--bind-address", "127.0.0.1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = wait_listening(proc)
        req = urllib.request.Request(url + "/config/worker",
                                     headers={"Accept": "application/vnd.coreos.ignition+json;version=3.4.0"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert json.loads(resp.read())["ignition"]["version"] == "3.4.0"
        time.sleep(1.5)  # let its watches start: they are part of what it does
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    problems = denied("machine-config-server", list(cluster.state.requests))
    assert problems == [], "\n".join(problems)


def wait_listening(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        m = re.search(r"listening on (http://[0-9.]+:[0-9]+)", line)
        if m:
            return m.group(1)
    raise AssertionError("mcs did not start:\n" + "".join(seen))


def test_daemon_requests_are_granted(cluster: FakeAPIServer, kubeconfig: Path) -> None:
    from machineconfig.store import open_store

    subprocess.run([sys.executable, "-m", "mcc.cli", "start", "--store", "kube", "--kubeconfig",
                    str(kubeconfig), "--once", "--values", str(VALUES)],
                   cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
    add_node(cluster, "n1")
    rendered = call(cluster, "GET", "/apis/machineconfiguration.openshift.io/v1/machineconfigpools/worker")[1][
        "spec"]["configuration"]["name"]
    cluster.state.requests.clear()
    store = open_store(f"kube:{kubeconfig}", node="n1")
    try:
        store.get_node("n1")
        store.revision()  # its watch on its own node
        store.get_rendered(rendered)
        store.patch_node_annotations("n1", {C.CURRENT_CONFIG_ANNOTATION: rendered,
                                            C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: C.STATE_DONE})
        store.record_event("Node", "n1", "NodeDone", f"Setting node n1, currentConfig {rendered} to Done")
        store.record_event("Node", "n1", "NodeDone", f"Setting node n1, currentConfig {rendered} to Done")
        time.sleep(0.5)
    finally:
        store.close()  # type: ignore[attr-defined]
    requests = list(cluster.state.requests)
    verbs = {(a["verb"], a["resource"]) for r in requests if (a := attributes(*r))}
    assert {("get", "nodes"), ("watch", "nodes"), ("get", "machineconfigs"), ("patch", "nodes"),
            ("create", "events"), ("patch", "events")} <= verbs, verbs
    problems = denied("machine-config-daemon", requests)
    assert problems == [], "\n".join(problems)
