"""The daemon's own-node ValidatingAdmissionPolicy (manifests/admission/daemon-own-node.yaml),
evaluated with a CEL interpreter (cel-python) the way kube-apiserver evaluates it: the match
conditions, then the variables in order, then each validation and its messageExpression.

cel-python is a test dependency; without it this module fails as root (CI) and skips a
developer's non-root run, like the other prerequisites.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "manifests" / "admission" / "daemon-own-node.yaml"
DAEMON = "system:serviceaccount:openshift-machine-config-operator:machine-config-daemon"
CONTROLLER = "system:serviceaccount:openshift-machine-config-operator:machine-config-controller"
NODE_NAME_EXTRA = "authentication.kubernetes.io/node-name"
MCO = "machineconfiguration.openshift.io"

try:
    import celpy
except ImportError:  # pragma: no cover - depends on the environment
    celpy = None


def require_celpy() -> Any:
    if celpy is not None:
        return celpy
    if os.geteuid() != 0:
        pytest.skip("cel-python not installed (CI, as root, fails here instead)")
    pytest.fail("cel-python is missing: the admission policy test evaluates its CEL with it "
                "(pip install cel-python; it belongs in the test extra of pyproject.toml)")


class Policy:
    """One ValidatingAdmissionPolicy, compiled once."""

    def __init__(self, spec: dict[str, Any]) -> None:
        cel = require_celpy()
        self.env = cel.Environment()
        self.functions = {"join": lambda items, sep="": cel.celtypes.StringType(str(sep).join(items))}
        self.conditions = [self.compile(c["expression"]) for c in spec.get("matchConditions", [])]
        self.variables = [(v["name"], self.compile(v["expression"])) for v in spec.get("variables", [])]
        self.validations = [
            (self.compile(v["expression"]),
             self.compile(v["messageExpression"]) if "messageExpression" in v else None,
             v.get("message", ""))
            for v in spec["validations"]
        ]

    def compile(self, expression: str) -> Any:
        return self.env.program(self.env.compile(expression), functions=self.functions)

    def admit(self, user: str, extra: dict[str, list[str]], old: dict[str, Any], new: dict[str, Any]) -> list[str]:
        """The denial messages for an UPDATE of `old` to `new` (empty: admitted)."""
        cel = require_celpy()
        activation: dict[str, Any] = {
            "request": cel.json_to_cel({"operation": "UPDATE", "userInfo": {"username": user, "extra": extra}}),
            "object": cel.json_to_cel(new),
            "oldObject": cel.json_to_cel(old),
        }
        if not all(bool(c.evaluate(activation)) for c in self.conditions):
            return []
        # Each variable sees the ones before it (kube-apiserver evaluates them lazily, by name).
        variables = cel.celtypes.MapType({})
        for name, program in self.variables:
            activation["variables"] = variables
            variables = cel.celtypes.MapType({**variables, cel.celtypes.StringType(name): program.evaluate(activation)})
        activation["variables"] = variables
        denied = []
        for check, message_expr, message in self.validations:
            result = check.evaluate(activation)
            assert isinstance(result, cel.celtypes.BoolType), f"validation is not a bool: {result!r}"
            if not result:
                denied.append(str(message_expr.evaluate(activation)) if message_expr else message)
        return denied


@pytest.fixture(scope="module")
def policy() -> Policy:
    docs = list(yaml.safe_load_all(POLICY.read_text()))
    (vap,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
    return Policy(vap["spec"])


def node(name: str, annotations: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "node-role.kubernetes.io/worker": ""},
                     "annotations": {f"{MCO}/currentConfig": "rendered-worker-a",
                                     f"{MCO}/desiredConfig": "rendered-worker-a",
                                     f"{MCO}/state": "Done", "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                                     **(annotations or {})}},
        "spec": {"podCIDR": "10.128.2.0/24"},
    }
    obj.update(extra)
    return obj


def bound(node_name: str) -> dict[str, list[str]]:
    return {NODE_NAME_EXTRA: [node_name], "authentication.kubernetes.io/pod-name": ["machine-config-daemon-x7"]}


def changed(obj: dict[str, Any], **annotations: str | None) -> dict[str, Any]:
    new = copy.deepcopy(obj)
    for key, value in annotations.items():
        full = f"{MCO}/{key}"
        if value is None:
            new["metadata"]["annotations"].pop(full, None)
        else:
            new["metadata"]["annotations"][full] = value
    return new


def test_daemon_may_write_its_own_annotations_on_its_own_node(policy: Policy) -> None:
    old = node("worker-a")
    new = changed(old, state="Working", currentConfig="rendered-worker-b", desiredDrain="drain-rendered-worker-b",
                  reason="", **{"post-config-action": "Rebooting", "firstPivotConfig": "rendered-worker-a"})
    assert policy.admit(DAEMON, bound("worker-a"), old, new) == []
    assert policy.admit(DAEMON, bound("worker-a"), new, changed(new, reason=None)) == []


def test_daemon_may_not_touch_another_node(policy: Policy) -> None:
    old = node("worker-b")
    assert policy.admit(DAEMON, bound("worker-a"), old, changed(old, state="Working")) == [
        "machine-config-daemon on node worker-a may not change node worker-b"]


def test_a_token_not_bound_to_a_node_is_refused(policy: Policy) -> None:
    old = node("worker-a")
    assert policy.admit(DAEMON, {}, old, changed(old, state="Working")) == [
        "machine-config-daemon: the request carries no node-bound service account token"]
    two = {NODE_NAME_EXTRA: ["worker-a", "worker-b"]}
    assert policy.admit(DAEMON, two, old, changed(old, state="Working")) == [
        "machine-config-daemon: the request carries no node-bound service account token"]


def test_controller_owned_annotations_are_refused(policy: Policy) -> None:
    old = node("worker-a")
    new = changed(old, desiredConfig="rendered-worker-evil", lastAppliedDrain="drain-x")
    assert policy.admit(DAEMON, bound("worker-a"), old, new) == [
        f"machine-config-daemon may not change annotation(s) {MCO}/desiredConfig, {MCO}/lastAppliedDrain"]
    removed = changed(old, desiredConfig=None)
    assert policy.admit(DAEMON, bound("worker-a"), old, removed) == [
        f"machine-config-daemon may not change annotation(s) {MCO}/desiredConfig"]


def test_labels_spec_and_finalizers_are_refused(policy: Policy) -> None:
    old = node("worker-a")
    relabelled = copy.deepcopy(old)
    relabelled["metadata"]["labels"]["node-role.kubernetes.io/master"] = ""
    assert policy.admit(DAEMON, bound("worker-a"), old, relabelled) == [
        "the machine-config-daemon may not change node labels"]
    cordoned = copy.deepcopy(old)
    cordoned["spec"]["unschedulable"] = True
    assert policy.admit(DAEMON, bound("worker-a"), old, cordoned) == [
        "the machine-config-daemon may not change the node spec (cordon is the controller's job)"]
    finalized = copy.deepcopy(old)
    finalized["metadata"]["finalizers"] = ["example.com/keep"]
    assert policy.admit(DAEMON, bound("worker-a"), old, finalized) == [
        "the machine-config-daemon may not change node finalizers or owner references"]


def test_several_violations_are_all_reported(policy: Policy) -> None:
    old = node("worker-b")
    new = changed(old, desiredConfig="x")
    new["spec"]["unschedulable"] = True
    assert policy.admit(DAEMON, bound("worker-a"), old, new) == [
        "machine-config-daemon on node worker-a may not change node worker-b",
        f"machine-config-daemon may not change annotation(s) {MCO}/desiredConfig",
        "the machine-config-daemon may not change the node spec (cordon is the controller's job)",
    ]


def test_other_users_are_not_matched(policy: Policy) -> None:
    old = node("worker-b")
    new = changed(old, desiredConfig="rendered-worker-b")
    new["spec"]["unschedulable"] = True
    assert policy.admit(CONTROLLER, {}, old, new) == []
    assert policy.admit("kubernetes-admin", {}, old, new) == []


def test_nodes_without_annotations_or_labels(policy: Policy) -> None:
    bare = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "worker-a"}, "spec": {}}
    first = copy.deepcopy(bare)
    first["metadata"]["annotations"] = {f"{MCO}/state": "Done", f"{MCO}/currentConfig": "rendered-worker-a"}
    assert policy.admit(DAEMON, bound("worker-a"), bare, first) == []
    assert policy.admit(DAEMON, bound("worker-a"), first, bare) == []


def crd_rules(node: Any, path: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for rule in node.get("x-kubernetes-validations") or []:
            out.append((path, rule["rule"]))
        for key, value in node.items():
            out.extend(crd_rules(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.extend(crd_rules(value, f"{path}[{i}]"))
    return out


def test_crd_validation_rules_parse() -> None:
    cel = require_celpy()
    env = cel.Environment()
    rules = []
    for path in sorted((REPO / "manifests" / "crds").glob("*.yaml")):
        rules += [(f"{path.name}{where}", rule) for where, rule in crd_rules(yaml.safe_load(path.read_text()))]
    assert len(rules) == 7  # poolSynchronizersStatus (6) and osImageStream.name (1), as OpenShift's
    for where, rule in rules:
        env.compile(rule)  # raises CELParseError naming the position


def test_the_daemon_stores_own_writes_are_admitted(policy: Policy, fakeapi: Any, kubeconfig: Path) -> None:
    """What the daemon's kube store really sends (merge patches of its annotations, through the
    fake API server) passes the policy for its own node; the same changes to another node do not."""
    from machineconfig import constants as C
    from machineconfig.store import open_store
    from tests.kube.conftest import install_crds
    from tests.kube.kit import call

    install_crds(fakeapi)
    for name in ("n1", "n2"):
        code, out = call(fakeapi, "POST", "/api/v1/nodes", {"metadata": {
            "name": name, "labels": {"node-role.kubernetes.io/worker": ""},
            "annotations": {C.DESIRED_CONFIG_ANNOTATION: "rendered-worker-b",
                            C.CURRENT_CONFIG_ANNOTATION: "rendered-worker-a"}}})
        assert code == 201, out
    start = len(fakeapi.state.history)
    store = open_store(f"kube:{kubeconfig}", node="n1")
    try:
        store.patch_node_annotations("n1", {C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: C.STATE_WORKING,
                                            C.DESIRED_DRAIN_ANNOTATION: "drain-rendered-worker-b"})
        store.patch_node_annotations("n1", {C.POST_CONFIG_ACTION_ANNOTATION: "Rebooting"})
        store.patch_node_annotations("n1", {C.CURRENT_CONFIG_ANNOTATION: "rendered-worker-b",
                                            C.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION: C.STATE_DONE,
                                            C.MACHINE_CONFIG_DAEMON_REASON_ANNOTATION: "",
                                            C.POST_CONFIG_ACTION_ANNOTATION: None})
    finally:
        store.close()  # type: ignore[attr-defined]
    updates = [e for e in list(fakeapi.state.history)[start:]
               if e.type == "MODIFIED" and e.new["metadata"]["name"] == "n1"]
    assert len(updates) == 3
    for e in updates:
        assert policy.admit(DAEMON, bound("n1"), e.old, e.new) == []
        assert policy.admit(DAEMON, bound("n2"), e.old, e.new) == [
            "machine-config-daemon on node n2 may not change node n1"]
