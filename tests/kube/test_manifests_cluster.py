"""manifests/ and examples/ on a real kube-apiserver (the session's control plane,
tests/kube/controlplane.py), with the real `kubectl`:

- `kubectl apply --server-side -k manifests/` (strict field validation) and the README's
  client-side `kubectl apply -k manifests/` and `kubectl apply -f examples/cluster/` succeed;
- RBAC: the real authorizer (SubjectAccessReview) grants each service account every rule of
  test_manifests.py's table and refuses a sample of what it must not do; and each program,
  run with a real token of its service account, does its work without one refused request;
- the daemon's admission policy, enforced by the server: a token bound to the daemon's pod on
  node n1 may change only n1's daemon annotations, and a request without the node-name extra
  (kubectl --as) gets the policy's 403, not a CEL error;
- the controller, restarted over unchanged inputs, writes nothing, logs no "stored" and adds no
  KubeletConfig/ContainerRuntimeConfig condition.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from machineconfig import constants as C
from tests.kube.controlplane import ControlPlane
from tests.kube.manifests_kit import (
    ACCOUNT_GROUPS,
    EXAMPLES,
    GROUP,
    NAMESPACE,
    NODE_NAME_EXTRA,
    REPO,
    VALUES,
    account,
    add_node,
    daemon_pod_token,
    delete_pod,
    impersonating,
    install_manifests,
    kubectl,
    uninstall_manifests,
)
from tests.kube.test_manifests import EXPECTED_ROLES, EXPECTED_RULES

CONTROLLER, SERVER, DAEMON = "machine-config-controller", "machine-config-server", "machine-config-daemon"
MC_PATH = f"/apis/{GROUP}/v1"


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane, kube_crds: list[str]) -> Iterator[ControlPlane]:
    install_manifests(control_plane)
    try:
        yield control_plane
    finally:
        uninstall_manifests(control_plane)


@pytest.fixture
def cluster(installed: ControlPlane, clean_cluster: ControlPlane) -> ControlPlane:
    """The manifests installed, cluster scope emptied, then examples/cluster applied as the
    README says (client-side `kubectl apply -f`)."""
    kubectl(installed, "apply", "-f", str(EXAMPLES))
    return installed


# --------------------------------------------------------------------------------------------
# applying


def test_readme_commands_apply(installed: ControlPlane, clean_cluster: ControlPlane) -> None:
    cp = installed
    # manifests/README.md: `kubectl apply -k manifests/` (client-side, over the server-side one)
    kubectl(cp, "apply", "-k", str(REPO / "manifests"))
    # README: `kubectl apply -f examples/cluster/` (the *.yaml.j2 template is not read), then
    # `kubectl get mcp` shows the printer columns.
    out = kubectl(cp, "apply", "-f", str(EXAMPLES)).stdout
    assert "controllerconfig.machineconfiguration.openshift.io/machine-config-controller" in out
    code, cc = cp.call("GET", f"{MC_PATH}/controllerconfigs/machine-config-controller")
    assert code == 200, cc
    header = kubectl(cp, "get", "mcp").stdout.splitlines()[0].split()
    assert header[:5] == ["NAME", "CONFIG", "UPDATED", "UPDATING", "DEGRADED"]
    # applied again: nothing changes
    again = kubectl(cp, "apply", "-f", str(EXAMPLES)).stdout
    assert all(line.endswith("unchanged") for line in again.splitlines()), again


def test_server_side_apply_is_strict(installed: ControlPlane, tmp_path: Path) -> None:
    """kubectl's server-side apply validates fields strictly: a misspelled field in a manifest
    is refused by the server, not dropped."""
    import shutil

    copy = tmp_path / "manifests"
    shutil.copytree(REPO / "manifests", copy)
    role = copy / "rbac" / "server.yaml"
    role.write_text(role.read_text().replace("  - apiGroups:", "  - apiGroup:", 1))
    proc = kubectl(installed, "apply", "--server-side", "--dry-run=server", "-k", str(copy),
                   check=False)
    assert proc.returncode != 0
    assert 'field not declared in schema' in proc.stderr or 'unknown field' in proc.stderr, proc.stderr


# --------------------------------------------------------------------------------------------
# RBAC, by the real authorizer


def can(cp: ControlPlane, user: str, verb: str, group: str, resource: str,
        namespace: str | None = None, name: str | None = None) -> bool:
    resource, _, sub = resource.partition("/")
    attrs = {"verb": verb, "group": group, "resource": resource}
    if sub:
        attrs["subresource"] = sub
    if namespace:
        attrs["namespace"] = namespace
    if name:
        attrs["name"] = name
    code, review = cp.call("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user, "groups": ACCOUNT_GROUPS, "resourceAttributes": attrs}})
    assert code == 201, review
    return bool(review["status"].get("allowed"))


# What each account must not do (a sample: the neighbours of what it may).
FORBIDDEN: dict[str, list[tuple[str, str, str, str | None, str | None]]] = {
    CONTROLLER: [
        ("delete", "", "pods", "default", "p"), ("update", "", "nodes", None, "n1"),
        ("delete", "", "nodes", None, "n1"), ("patch", "", "nodes/status", None, "n1"),
        ("get", "", "secrets", "openshift-config", "other"), ("list", "", "secrets", "openshift-config", None),
        ("get", "", "secrets", NAMESPACE, "pull-secret"),
        ("create", "", "events", "kube-system", None), ("create", "", "events", NAMESPACE, None),
        ("delete", GROUP, "machineconfigpools", None, "worker"),
        ("update", GROUP, "controllerconfigs", None, "machine-config-controller"),
        ("get", "policy", "poddisruptionbudgets", "default", "b"),
    ],
    SERVER: [
        ("get", "", "secrets", "openshift-config", "pull-secret"), ("list", "", "nodes", None, None),
        ("patch", GROUP, "machineconfigpools", None, "worker"), ("create", GROUP, "machineconfigs", None, None),
        ("create", "", "events", "default", None),
    ],
    DAEMON: [
        ("create", "", "nodes", None, None), ("delete", "", "nodes", None, "n1"),
        ("update", "", "nodes", None, "n1"), ("patch", "", "nodes/status", None, "n1"),
        ("create", GROUP, "machineconfigs", None, None), ("list", GROUP, "machineconfigpools", None, None),
        ("create", "", "events", "kube-system", None), ("get", "", "secrets", "openshift-config", "pull-secret"),
        ("create", "", "pods/eviction", "default", "p"),
        ("get", "", "configmaps", NAMESPACE, "other"), ("list", "", "configmaps", NAMESPACE, None),
        ("update", "", "configmaps", NAMESPACE, "kubeconfig-data"),
    ],
}


def test_rbac_grants_the_table_and_nothing_near_it(installed: ControlPlane) -> None:
    cp = installed
    problems = []
    for name, rules in EXPECTED_RULES.items():
        for group, resource, verb, names in sorted(rules):
            # a namespaced resource granted by a ClusterRole: in any namespace; a rule limited
            # to some objects: for the first of them
            if not can(cp, account(name), verb, group, resource, namespace="default"
                       if resource.startswith("pods") else None, name=names[0] if names else None):
                problems.append(f"{name}: {verb} {group}/{resource} refused")
    for (name, _), (namespace, role_rules) in EXPECTED_ROLES.items():
        for group, resource, verb, names in sorted(role_rules):
            if not can(cp, account(name), verb, group, resource, namespace, names[0] if names else None):
                problems.append(f"{name}: {verb} {group}/{resource} in {namespace} refused")
    for name, samples in FORBIDDEN.items():
        for verb, group, resource, where, obj in samples:
            if can(cp, account(name), verb, group, resource, where, obj):
                problems.append(f"{name}: {verb} {group}/{resource} ns={where} name={obj} allowed")
    assert problems == []


def run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def refused(output: str) -> list[str]:
    return [line for line in output.splitlines() if re.search(r"forbidden|\b403\b", line, re.I)]


def audited(cp: ControlPlane, since: int, name: str) -> set[tuple[str, str]]:
    """(verb, path pattern) of every request the account made since `since`, per the API
    server's audit log; fails listing those it refused."""
    records = cp.requests(since=since, user=account(name))
    denied = sorted({f"{r.code} {r.verb} {r.uri}" for r in records if r.code in (401, 403)})
    assert denied == [], "\n".join(denied)
    return {(r.verb, re.sub(r"/(nodes|pods|machineconfigs|machineconfigpools|events|secrets|"
                            r"kubeletconfigs|containerruntimeconfigs|controllerconfigs)/[^/]+",
                            r"/\1/NAME", r.path)) for r in records}


def resource_versions(cp: ControlPlane, plural: str) -> dict[str, str]:
    code, items = cp.call("GET", f"{MC_PATH}/{plural}")
    assert code == 200, items
    return {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in items["items"]}


def test_controller_and_server_as_their_service_accounts(cluster: ControlPlane, kube_namespace: str) -> None:
    """`mcc start --store kube --once` with a real token of machine-config-controller renders the
    examples, rolls out to a node, drains it (cordon, list its pods, evict one) and records
    events; none of its requests is refused. Started again over the same inputs it writes no
    MachineConfig, logs no "stored" and adds no condition to the KubeletConfig or the
    ContainerRuntimeConfig. Then the server serves what it rendered."""
    cp = cluster
    add_node(cp, "n1", {C.DESIRED_DRAIN_ANNOTATION: "drain-rendered-worker-x",
                        C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: "Working"})
    code, pod = cp.call("POST", f"/api/v1/namespaces/{kube_namespace}/pods", {
        "metadata": {"name": "app"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}})
    assert code == 201, pod
    config = cp.service_account_kubeconfig(NAMESPACE, CONTROLLER)
    command = ["mcc.cli", "start", "--store", "kube", "--kubeconfig", str(config), "--once",
               "--values", str(VALUES)]
    mark = cp.audit_mark()
    first = run(command)
    assert first.returncode == 0, first.stderr
    assert refused(first.stdout + first.stderr) == []
    # the work whose permissions count was done
    code, pool = cp.call("GET", f"{MC_PATH}/machineconfigpools/worker")
    assert pool["spec"]["configuration"]["name"].startswith("rendered-worker-")
    assert "stored" in first.stderr
    code, node = cp.call("GET", "/api/v1/nodes/n1")
    assert node["spec"].get("unschedulable") is True
    assert node["metadata"]["annotations"][C.CORDONED_BY_MCC_ANNOTATION] == "true"
    code, pod = cp.call("GET", f"/api/v1/namespaces/{kube_namespace}/pods/app")
    assert code == 404 or pod["metadata"].get("deletionTimestamp"), "the pod was evicted"
    code, events = cp.call("GET", "/api/v1/namespaces/default/events")
    assert {e["reason"] for e in events["items"]} >= {"RenderedConfigGenerated"}
    requests = audited(cp, mark, CONTROLLER)
    assert {("create", f"{MC_PATH}/machineconfigs"), ("patch", f"{MC_PATH}/machineconfigpools/NAME"),
            ("update", f"{MC_PATH}/machineconfigpools/NAME/status"),
            ("update", f"{MC_PATH}/kubeletconfigs/NAME/status"),
            ("get", "/api/v1/namespaces/openshift-config/secrets/NAME"), ("patch", "/api/v1/nodes/NAME"),
            ("list", "/api/v1/pods"), ("create", f"/api/v1/namespaces/{kube_namespace}/pods/NAME/eviction"),
            ("create", "/api/v1/namespaces/default/events")} <= requests, sorted(requests)

    machine_configs = resource_versions(cp, "machineconfigs")
    second = run(command)
    assert second.returncode == 0, second.stderr
    assert [line for line in second.stderr.splitlines() if " stored" in line] == []
    assert resource_versions(cp, "machineconfigs") == machine_configs
    for plural, name in (("kubeletconfigs", "worker-max-pods"),
                         ("containerruntimeconfigs", "infra-pids-limit")):
        code, obj = cp.call("GET", f"{MC_PATH}/{plural}/{name}")
        assert len(obj["status"]["conditions"]) == 1, (name, obj["status"]["conditions"])
    serve_as_its_service_account(cp)


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


def serve_as_its_service_account(cp: ControlPlane) -> None:
    """`mcs start --store kube` with a real token of machine-config-server serves the worker
    pool's config (rendered by the controller before); none of its requests is refused."""
    config = cp.service_account_kubeconfig(NAMESPACE, SERVER)
    mark = cp.audit_mark()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcs.cli", "start", "--store", f"kube:{config}",
         "--insecure-port", "0", "--secure-port", "-1", "--bind-address", "127.0.0.1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = ""
    try:
        url = wait_listening(proc)
        req = urllib.request.Request(url + "/config/worker", headers={
            "Accept": "application/vnd.coreos.ignition+json;version=3.4.0"})
        with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - loopback
            assert json.loads(resp.read())["ignition"]["version"] == "3.4.0"
        time.sleep(0.3)  # its watches start: they are requests too
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert refused(output) == []
    requests = audited(cp, mark, SERVER)
    # (its watches end when it stops: the audit log may not have them yet)
    assert {("get", f"{MC_PATH}/machineconfigpools/NAME"), ("list", f"{MC_PATH}/machineconfigs")} <= requests, \
        sorted(requests)


# --------------------------------------------------------------------------------------------
# the daemon: RBAC and the admission policy, with the token its pod gets


@pytest.fixture
def two_nodes(installed: ControlPlane, clean_cluster: ControlPlane) -> Iterator[ControlPlane]:
    cp = installed
    for name in ("n1", "n2"):
        add_node(cp, name, {C.DESIRED_CONFIG_ANNOTATION: "rendered-worker-b",
                            C.CURRENT_CONFIG_ANNOTATION: "rendered-worker-a"})
    try:
        yield cp
    finally:
        delete_pod(cp, NAMESPACE, "daemon-n1")


def patch_node(cp: ControlPlane, config: Path, node: str, patch: dict[str, Any]) -> tuple[int, str]:
    code, answer = cp.call("PATCH", f"/api/v1/nodes/{node}", patch, "application/merge-patch+json",
                           kubeconfig=config)
    return code, str(answer.get("message", ""))


def annotate(values: dict[str, str | None]) -> dict[str, Any]:
    return {"metadata": {"annotations": values}}


DAEMON_STORE_SCRIPT = """
import sys
from machineconfig import constants as C
from machineconfig.store import open_store

store = open_store("kube:" + sys.argv[1], node="n1")
try:
    assert store.get_node("n1") is not None
    store.revision()
    assert store.get_rendered("rendered-worker-b") is not None
    store.patch_node_annotations("n1", {C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: C.STATE_WORKING,
                                        C.DESIRED_DRAIN_ANNOTATION: "drain-rendered-worker-b"})
    store.patch_node_annotations("n1", {C.POST_CONFIG_ACTION_ANNOTATION: "Rebooting"})
    store.patch_node_annotations("n1", {C.CURRENT_CONFIG_ANNOTATION: "rendered-worker-b",
                                        C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: C.STATE_DONE,
                                        C.MACHINE_CONFIG_DAEMON_REASON_ANNOTATION: "",
                                        C.POST_CONFIG_ACTION_ANNOTATION: None})
    message = "Setting node n1, currentConfig rendered-worker-b to Done"
    store.record_event("Node", "n1", "NodeDone", message)
    store.record_event("Node", "n1", "NodeDone", message)  # a repeat: patched
    # the service-CA rotation: the published bundle, and the record of having observed it
    ca = store.node_kubeconfig_ca()
    assert ca == b"BUNDLE\\n", ca
    store.patch_node_annotations("n1", {C.LAST_OBSERVED_SERVER_CA_ANNOTATION: "true"})
finally:
    store.close()
"""


def test_daemon_store_with_its_pod_token(two_nodes: ControlPlane, tmp_path: Path) -> None:
    """What `mcd start --store kube` does through its store, with the token of its pod on n1:
    read its node and rendered config, watch the node, write its annotations, record events.
    The same writes aimed at n2 are refused by the admission policy."""
    cp = two_nodes
    config = daemon_pod_token(cp, "n1", tmp_path / "daemon.kubeconfig")
    cp.call("POST", f"{MC_PATH}/machineconfigs", {
        "apiVersion": f"{GROUP}/v1", "kind": "MachineConfig",
        "metadata": {"name": "rendered-worker-b"}, "spec": {"config": {"ignition": {"version": "3.5.0"}}}})
    cp.call("DELETE", f"/api/v1/namespaces/{NAMESPACE}/configmaps/kubeconfig-data")
    cp.call("POST", f"/api/v1/namespaces/{NAMESPACE}/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kubeconfig-data"},
        "binaryData": {"ca-bundle.crt": base64.b64encode(b"BUNDLE\n").decode()}})
    mark = cp.audit_mark()
    # a process of its own, as the daemon is
    done = subprocess.run([sys.executable, "-c", DAEMON_STORE_SCRIPT, str(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    code, node = cp.call("GET", "/api/v1/nodes/n1")
    assert node["metadata"]["annotations"][C.CURRENT_CONFIG_ANNOTATION] == "rendered-worker-b"
    assert node["metadata"]["annotations"][C.LAST_OBSERVED_SERVER_CA_ANNOTATION] == "true"
    assert C.POST_CONFIG_ACTION_ANNOTATION not in node["metadata"]["annotations"]
    code, events = cp.call("GET", "/api/v1/namespaces/default/events")
    assert [e["count"] for e in events["items"] if e["reason"] == "NodeDone"] == [2]
    requests = audited(cp, mark, DAEMON)
    assert {("get", "/api/v1/nodes/NAME"), ("list", "/api/v1/nodes"), ("get", f"{MC_PATH}/machineconfigs/NAME"),
            ("patch", "/api/v1/nodes/NAME"), ("create", "/api/v1/namespaces/default/events"),
            ("patch", "/api/v1/namespaces/default/events/NAME")} <= requests, sorted(requests)
    # the same change on the other node: refused by the policy, naming both nodes
    code, message = patch_node(cp, config, "n2", annotate({C.CURRENT_CONFIG_ANNOTATION: "rendered-worker-b"}))
    assert code == 403 and message.endswith("machine-config-daemon on node n1 may not change node n2"), message


def test_admission_policy_on_its_own_node(two_nodes: ControlPlane, tmp_path: Path) -> None:
    cp = two_nodes
    config = daemon_pod_token(cp, "n1", tmp_path / "daemon.kubeconfig")
    ok = annotate({C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: C.STATE_WORKING})
    assert patch_node(cp, config, "n1", ok)[0] == 200
    cases = [
        (annotate({C.DESIRED_CONFIG_ANNOTATION: "rendered-worker-c"}),
         f"machine-config-daemon may not change annotation(s) {C.DESIRED_CONFIG_ANNOTATION}"),
        (annotate({C.DESIRED_CONFIG_ANNOTATION: None}),
         f"machine-config-daemon may not change annotation(s) {C.DESIRED_CONFIG_ANNOTATION}"),
        ({"metadata": {"labels": {"node-role.kubernetes.io/infra": ""}}},
         "the machine-config-daemon may not change node labels"),
        ({"spec": {"unschedulable": True}},
         "the machine-config-daemon may not change the node spec (cordon is the controller's job)"),
        ({"metadata": {"finalizers": ["x/y"]}},
         "the machine-config-daemon may not change node finalizers or owner references"),
    ]
    for patch, expected in cases:
        code, message = patch_node(cp, config, "n1", patch)
        assert code == 403 and message.endswith(expected), (patch, code, message)


@pytest.mark.parametrize("extra", [None, {"authentication.kubernetes.io/credential-id": ["x"]}],
                         ids=["no-extra", "other-extra"])
def test_admission_policy_without_a_node_name(two_nodes: ControlPlane, tmp_path: Path,
                                              extra: dict[str, list[str]] | None) -> None:
    """A request as the daemon's account with no node name (kubectl --as; a token not bound to
    a pod) gets the policy's 403, whether userInfo.extra is absent or lacks the key."""
    cp = two_nodes
    config = impersonating(cp, tmp_path / "as.kubeconfig", account(DAEMON), ACCOUNT_GROUPS, extra)
    proc = kubectl(cp, "patch", "node", "n1", "--type", "merge", "-p",
                   json.dumps(annotate({C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: C.STATE_DONE})),
                   kubeconfig=config, check=False)
    assert proc.returncode != 0
    assert "Error from server (Forbidden)" in proc.stderr, proc.stderr
    assert proc.stderr.strip().endswith(
        "machine-config-daemon: the request carries no node-bound service account token"), proc.stderr


def test_admission_policy_with_impersonated_node_name(two_nodes: ControlPlane, tmp_path: Path) -> None:
    """The node-name extra decides, however it arrives (here Impersonate-Extra-*)."""
    cp = two_nodes
    config = impersonating(cp, tmp_path / "as.kubeconfig", account(DAEMON), ACCOUNT_GROUPS,
                           {NODE_NAME_EXTRA: ["n1"]})
    patch = json.dumps(annotate({C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: C.STATE_DONE}))
    kubectl(cp, "patch", "node", "n1", "--type", "merge", "-p", patch, kubeconfig=config)
    proc = kubectl(cp, "patch", "node", "n2", "--type", "merge", "-p", patch, kubeconfig=config,
                   check=False)
    assert proc.stderr.strip().endswith("machine-config-daemon on node n1 may not change node n2"), proc.stderr
    # other users are not matched by the policy (RBAC alone decides): the admin may
    code, message = patch_node(cp, cp.kubeconfig, "n2", annotate({C.DESIRED_CONFIG_ANNOTATION: "x"}))
    assert code == 200, message


# --------------------------------------------------------------------------------------------
# a daemon and the MachineConfigNodes: its own, never another node's

def test_a_node_credential_writes_only_its_own_machineconfignode(two_nodes: ControlPlane,
                                                                 tmp_path: Path) -> None:
    """With the token its pod on n1 gets, the daemon reads and writes the status of n1's
    MachineConfigNode (through its store, as `mcd start --store kube` does); n2's is refused by
    the admission policy with MCO's message, the spec of its own by RBAC, and a request
    without a node name by the policy."""
    from machineconfig import machine_config_node as mcn
    from machineconfig.machine_config_node import Condition
    from machineconfig.store import open_store

    cp = two_nodes
    for name in ("n1", "n2"):
        code, answer = cp.call("POST", f"{MC_PATH}/machineconfignodes",
                               mcn.new_object(name, "worker", "rendered-worker-b"))
        assert code == 201, answer
    config = daemon_pod_token(cp, "n1", tmp_path / "daemon.kubeconfig")
    store = open_store(f"kube:{config}", node="n1")
    try:
        own = store.get_machine_config_node("n1")  # type: ignore[attr-defined]
        status = mcn.transition(own, Condition(mcn.UPDATE_PREPARED, "True", "UpdatePrepared",
                                               "Update Compatible."), None,
                                desired_config="rendered-worker-b",
                                current_config="rendered-worker-a", now="2026-01-01T00:00:00Z")
        store.set_machine_config_node_status("n1", status)  # type: ignore[attr-defined]
    finally:
        store.close()  # type: ignore[attr-defined]
    code, got = cp.call("GET", f"{MC_PATH}/machineconfignodes/n1")
    assert got["status"]["conditions"][0]["type"] == "UpdatePrepared"

    merge = "application/merge-patch+json"
    code, answer = cp.call("PATCH", f"{MC_PATH}/machineconfignodes/n2/status", {"status": status},
                           merge, kubeconfig=config)
    assert code == 403 and answer["message"].endswith(
        "updates to MCN n2 can only be done from the MCN's owner node"), answer
    assert "status" not in cp.call("GET", f"{MC_PATH}/machineconfignodes/n2")[1]
    spec = {"spec": {"configVersion": {"desired": "rendered-worker-test"}}}
    for name in ("n1", "n2"):
        code, answer = cp.call("PATCH", f"{MC_PATH}/machineconfignodes/{name}", spec, merge,
                               kubeconfig=config)
        assert code == 403, answer  # RBAC: the spec is the controller's
    for verb, path in (("DELETE", "n1"), ("POST", "")):
        code, answer = cp.call(verb, f"{MC_PATH}/machineconfignodes/{path}".rstrip("/"),
                               mcn.new_object("n3", "worker", "x") if verb == "POST" else None,
                               kubeconfig=config)
        assert code == 403, (verb, answer)
    # without the node name the token's pod gives (impersonation, as kubectl --as): the
    # policy's refusal
    request = urllib.request.Request(
        cp.url + f"{MC_PATH}/machineconfignodes/n1/status", method="PATCH",
        data=json.dumps({"status": status}).encode(),
        headers={"Content-Type": merge, "Impersonate-User": account(DAEMON)})
    try:
        urllib.request.urlopen(request, timeout=30, context=cp.ssl_context())  # noqa: S310
        raise AssertionError("an impersonated daemon wrote a MachineConfigNode")
    except urllib.error.HTTPError as e:
        message = json.loads(e.read())["message"]
        assert e.code == 403 and message.endswith(
            "machine-config-daemon: the request carries no node-bound service account token"), \
            message
