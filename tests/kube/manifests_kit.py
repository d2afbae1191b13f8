"""What the manifests tests on the real control plane share: `kubectl` against it (as admin or
as anyone), `kubectl apply -k manifests/` once per session, kubeconfigs impersonating a
service account, and a daemon token bound to a pod on a node (the kind of token the daemon's
pod really has)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
EXAMPLES = REPO / "examples" / "cluster"
VALUES = REPO / "examples" / "cluster-values.yaml"
NAMESPACE = "openshift-machine-config-operator"
GROUP = "machineconfiguration.openshift.io"
NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"


def account(name: str) -> str:
    return f"system:serviceaccount:{NAMESPACE}:{name}"


ACCOUNT_GROUPS = ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}",
                  "system:authenticated"]


def kubectl_path() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is missing: the manifests tests apply manifests/ and examples/ with it "
                    "(install kubectl; this machine kind has /usr/bin/kubectl)", pytrace=False)
    return path


def kubectl(cp: ControlPlane, *args: str, kubeconfig: Path | None = None, check: bool = True,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig or cp.kubeconfig)}
    proc = subprocess.run([kubectl_path(), *args], capture_output=True, text=True, env=env,
                          input=stdin, timeout=120, cwd=REPO)
    if check:
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc


def install_manifests(cp: ControlPlane) -> None:
    """`kubectl apply --server-side -k manifests/` (strict field validation: kubectl's default
    for server-side apply)."""
    kubectl(cp, "apply", "--server-side", "--field-manager=machine-config-tests", "-k",
            str(MANIFESTS))


def uninstall_manifests(cp: ControlPlane) -> None:
    """Take back what would change other tests' requests (the admission policy, the roles,
    the workloads); the CRDs, namespaces and service accounts stay, as the session's."""
    kubectl(cp, "delete", "--ignore-not-found", "--wait=false",
            "validatingadmissionpolicybinding,validatingadmissionpolicy,clusterrolebinding,"
            "clusterrole", "-l", "app.kubernetes.io/part-of=machine-config")
    for namespace in (NAMESPACE, "openshift-config", "default"):
        kubectl(cp, "delete", "--ignore-not-found", "--wait=false", "-n", namespace,
                "rolebinding,role,deployment,daemonset",
                "-l", "app.kubernetes.io/part-of=machine-config")


def impersonating(cp: ControlPlane, path: Path, user: str, groups: list[str],
                  extra: dict[str, list[str]] | None = None) -> Path:
    """A copy of the admin kubeconfig that impersonates `user` (kubectl's --as, plus the
    Impersonate-Extra-* headers it sends for `as-user-extra`)."""
    config: dict[str, Any] = yaml.safe_load(cp.kubeconfig.read_text())
    who = config["users"][0]["user"]
    who["as"] = user
    who["as-groups"] = groups
    if extra:
        who["as-user-extra"] = extra
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def add_node(cp: ControlPlane, name: str, annotations: dict[str, str] | None = None,
             labels: dict[str, str] | None = None) -> dict[str, Any]:
    code, node = cp.call("POST", "/api/v1/nodes", {"metadata": {
        "name": name, "labels": labels or {"node-role.kubernetes.io/worker": ""},
        "annotations": annotations or {}}})
    assert code == 201, node
    return node  # type: ignore[no-any-return]


def daemon_pod_token(cp: ControlPlane, node: str, path: Path) -> Path:
    """A kubeconfig holding the daemon's token as its pod on `node` gets it: a TokenRequest
    bound to a pod of the machine-config-daemon service account scheduled there, so the API
    server puts the node's name into the user's extra (authentication.kubernetes.io/node-name).
    The pod never runs (no kubelet); the caller deletes it (`daemon-<node>` in NAMESPACE)."""
    pod_name = f"daemon-{node}"
    code, pod = cp.call("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", {
        "metadata": {"name": pod_name},
        "spec": {"nodeName": node, "serviceAccountName": "machine-config-daemon",
                 "containers": [{"name": "mcd", "image": "machine-config"}]}})
    assert code == 201, pod
    code, answer = cp.call(
        "POST", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/machine-config-daemon/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": 3600, "boundObjectRef": {
             "apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": pod["metadata"]["uid"]}}})
    assert code == 201, answer
    config: dict[str, Any] = yaml.safe_load(cp.kubeconfig.read_text())
    config["users"][0]["user"] = {"token": answer["status"]["token"]}
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def delete_pod(cp: ControlPlane, namespace: str, name: str) -> None:
    cp.call("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}?gracePeriodSeconds=0")
