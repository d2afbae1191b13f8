"""manifests/: what `kubectl apply -k manifests/` sends to a cluster, read without one (the real
server's verdict on the same documents: test_manifests_cluster.py).

Rendered with the real `kubectl kustomize` (a missing kubectl fails the run as root, where CI
runs, and skips a developer's non-root run, like the node tests' prerequisites); then every
document is checked for what the cluster and the programs need: known kinds, namespaces,
least-privilege RBAC (exactly the rules each program uses, no wildcards), the workloads' commands
parsed by the programs' own argument parsers, and the daemon's admission policy naming exactly
the annotations the daemon owns.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
NAMESPACE = "openshift-machine-config-operator"
GROUP = "machineconfiguration.openshift.io"

# (apiVersion, kind) -> namespaced?
KNOWN_KINDS = {
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): False,
    ("v1", "Namespace"): False,
    ("v1", "ServiceAccount"): True,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): False,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): False,
    ("rbac.authorization.k8s.io/v1", "Role"): True,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): True,
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"): False,
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding"): False,
    ("apps/v1", "Deployment"): True,
    ("apps/v1", "DaemonSet"): True,
}


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path:
        return path
    if os.geteuid() != 0:
        pytest.skip("kubectl not installed (CI, as root, fails here instead)")
    pytest.fail("kubectl is missing: the manifests test renders manifests/ with `kubectl kustomize` "
                "(install kubectl; it ships with this machine kind at /usr/bin/kubectl)")


def kustomize(directory: Path) -> list[dict[str, Any]]:
    proc = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"kubectl kustomize {directory} failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d is not None]


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return kustomize(MANIFESTS)


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected one {kind} {name}, found {len(hits)}"
    return hits[0]


def test_renders_every_kind_once(docs: list[dict[str, Any]]) -> None:
    kinds = Counter(d["kind"] for d in docs)
    assert kinds == {
        "CustomResourceDefinition": 6,
        "Namespace": 2,
        "ServiceAccount": 3,
        "ClusterRole": 3,
        "ClusterRoleBinding": 3,
        "Role": 4,
        "RoleBinding": 4,
        "ValidatingAdmissionPolicy": 2,
        "ValidatingAdmissionPolicyBinding": 2,
        "Deployment": 1,
        "DaemonSet": 2,
    }
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), "duplicate objects"


def test_documents_are_well_formed(docs: list[dict[str, Any]]) -> None:
    for d in docs:
        key = (d.get("apiVersion"), d.get("kind"))
        assert key in KNOWN_KINDS, f"unknown kind {key}"
        meta = d["metadata"]
        assert meta.get("name"), f"{key} without a name"
        where = f"{d['kind']} {meta['name']}"
        if KNOWN_KINDS[key]:
            assert meta.get("namespace") in (NAMESPACE, "openshift-config", "default"), f"{where}: namespace"
        else:
            assert "namespace" not in meta, f"{where} is cluster-scoped but has a namespace"
        assert meta.get("labels", {}).get("app.kubernetes.io/part-of") == "machine-config", where


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    # openshift-crds/ is a kustomization of its own, for plain Kubernetes clusters only
    on_disk = {str(p.relative_to(MANIFESTS)) for p in MANIFESTS.rglob("*.yaml")
               if not p.relative_to(MANIFESTS).parts[0] == "openshift-crds"} - {"kustomization.yaml"}
    assert listed == on_disk
    # CRDs first, so the API server knows the kinds before anything else is applied.
    crds = [r for r in kustomization["resources"] if r.startswith("crds/")]
    assert kustomization["resources"][: len(crds)] == crds


def test_image_is_one_overridable_name(docs: list[dict[str, Any]], tmp_path: Path) -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    (entry,) = kustomization["images"]
    assert entry["name"] == "machine-config"
    expected = f"{entry['newName']}:{entry['newTag']}"
    images = {c["image"] for d in docs if d["kind"] in ("Deployment", "DaemonSet")
              for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {expected}
    # What a user does to point at their own build: the override reaches every workload.
    copy = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, copy)
    entry.update(newName="registry.test/me/machine-config", newTag="v9")
    (copy / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    images = {c["image"] for d in kustomize(copy) if d["kind"] in ("Deployment", "DaemonSet")
              for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {"registry.test/me/machine-config:v9"}


# --------------------------------------------------------------------------------------------
# RBAC: exactly what each program uses

def rules_of(role: dict[str, Any]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    out = set()
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb, tuple(rule.get("resourceNames", ()))))
    return out


def expand(group: str, resources: list[str], verbs: list[str]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    return {(group, r, v, ()) for r in resources for v in verbs}


READ = ["get", "list", "watch"]
# What each program's requests need (test_manifests_cluster.py runs each program with its
# service account's token on the real API server: nothing it asks is refused).
EXPECTED_RULES = {
    "machine-config-controller": (
        expand(GROUP, ["machineconfigs"], READ + ["create", "update", "delete"])
        | expand(GROUP, ["machineconfigpools"], READ + ["patch"])
        | expand(GROUP, ["kubeletconfigs", "containerruntimeconfigs", "controllerconfigs"], READ)
        | expand(GROUP, ["machineconfignodes"], ["list", "create", "patch", "delete"])
        | expand(GROUP, ["machineconfigpools/status", "kubeletconfigs/status",
                         "containerruntimeconfigs/status"], ["update"])
        | expand("", ["nodes"], READ + ["patch"])
        | expand("", ["pods"], ["list"])
        | expand("", ["pods/eviction"], ["create"])
        | expand("config.openshift.io", ["images", "imagedigestmirrorsets", "imagetagmirrorsets",
                                         "featuregates", "nodes"], READ)
        | expand("operator.openshift.io", ["imagecontentsourcepolicies",
                                           "machineconfigurations"], READ)
        | expand("operator.openshift.io", ["machineconfigurations/status"], ["update"])
    ),
    "machine-config-server": expand(GROUP, ["machineconfigs", "machineconfigpools", "controllerconfigs"], READ),
    "machine-config-daemon": (
        expand("", ["nodes"], READ + ["patch"])
        | expand(GROUP, ["machineconfigs"], READ)
        | expand(GROUP, ["machineconfignodes"], ["get"])
        | expand(GROUP, ["machineconfignodes/status"], ["patch"])
        | {("operator.openshift.io", "machineconfigurations", "get", ("cluster",))}
        | {(GROUP, "controllerconfigs", v, ("machine-config-controller",)) for v in READ}
    ),
}
# The namespaced grants: (service account, role name suffix) -> (namespace, rules). The controller
# reads the pull secret, by name only; the controller and daemon record events in `default`.
Rule = tuple[str, str, str, tuple[str, ...]]
EVENTS: set[Rule] = {("", "events", v, ()) for v in ("create", "patch")}
EXPECTED_ROLES: dict[tuple[str, str], tuple[str, set[Rule]]] = {
    ("machine-config-controller", "pull-secret"): (
        "openshift-config", {("", "secrets", v, ("pull-secret",)) for v in READ}),
    ("machine-config-controller", "events"): ("default", EVENTS),
    ("machine-config-daemon", "events"): ("default", EVENTS),
    ("machine-config-daemon", "kubeconfig-data"): (
        NAMESPACE, {("", "configmaps", "get", ("kubeconfig-data",))}),
}


def test_rbac_is_exactly_what_each_program_uses(docs: list[dict[str, Any]]) -> None:
    for name, expected in EXPECTED_RULES.items():
        role = find(docs, "ClusterRole", name)
        assert rules_of(role) == expected, name
        binding = find(docs, "ClusterRoleBinding", name)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}]
        find(docs, "ServiceAccount", name)
    for (account, suffix), (namespace, expected_rules) in EXPECTED_ROLES.items():
        name = f"{account}-{suffix}"
        role = find(docs, "Role", name)
        assert role["metadata"]["namespace"] == namespace
        assert rules_of(role) == expected_rules, name
        binding = find(docs, "RoleBinding", name)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    assert len([d for d in docs if d["kind"] == "Role"]) == len(EXPECTED_ROLES)


def test_no_role_grants_wildcards_or_escalation(docs: list[dict[str, Any]]) -> None:
    for d in docs:
        if d["kind"] not in ("ClusterRole", "Role"):
            continue
        for group, resource, verb, _ in rules_of(d):
            assert "*" not in (group, resource, verb), d["metadata"]["name"]
            assert verb not in ("escalate", "bind", "impersonate", "deletecollection"), d["metadata"]["name"]
            assert resource not in ("secrets",) or d["kind"] == "Role", "secrets only through the named Role"
    # The daemon can only read MachineConfigs, never delete or create a node.
    daemon = rules_of(find(docs, "ClusterRole", "machine-config-daemon"))
    assert not {v for g, r, v, _ in daemon if r == "nodes"} & {"create", "delete", "update"}


# --------------------------------------------------------------------------------------------
# workloads

def pod_spec(d: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = d["spec"]["template"]["spec"]
    return spec


def container(d: dict[str, Any]) -> dict[str, Any]:
    (c,) = pod_spec(d)["containers"]
    return dict(c)


def parse_command(command: list[str]) -> Any:
    """The program's own argparse accepts the manifest's command line."""
    from mcc.cli import build_parser as mcc_parser
    from mcd.cli import build_parser as mcd_parser
    from mcs.cli import _parser as mcs_parser

    parsers = {"mcc": mcc_parser, "mcs": mcs_parser, "mcd": mcd_parser}
    args = [a.replace("$(NODE_NAME)", "node-a") for a in command[1:]]
    return parsers[command[0]]().parse_args(args)


def test_controller_deployment(docs: list[dict[str, Any]]) -> None:
    d = find(docs, "Deployment", "machine-config-controller")
    assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"] == {"type": "Recreate"}
    spec = pod_spec(d)
    assert spec["serviceAccountName"] == "machine-config-controller"
    c = container(d)
    assert c["command"][:4] == ["mcc", "start", "--store", "kube"]
    args = parse_command(c["command"])
    templates = Path(args.templates)
    assert templates.is_absolute()
    containerfile = (MANIFESTS / "Containerfile").read_text()
    assert f"COPY ignition-templates {templates}" in containerfile
    assert c["resources"]["requests"].keys() == {"cpu", "memory"}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert d["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()


def test_server_daemonset(docs: list[dict[str, Any]]) -> None:
    d = find(docs, "DaemonSet", "machine-config-server")
    spec = pod_spec(d)
    assert spec["serviceAccountName"] == "machine-config-server"
    assert spec["hostNetwork"] is True
    assert spec["nodeSelector"]["node-role.kubernetes.io/control-plane"] == ""
    tolerated = {(t.get("key"), t.get("effect")) for t in spec["tolerations"]}
    assert {("node-role.kubernetes.io/control-plane", "NoSchedule"),
            ("node-role.kubernetes.io/master", "NoSchedule")} <= tolerated
    c = container(d)
    assert c["command"][:4] == ["mcs", "start", "--store", "kube"]
    args = parse_command(c["command"])
    assert (args.secure_port, args.insecure_port) == (22623, 22624)
    ports = {(p["containerPort"], p.get("hostPort")) for p in c["ports"]}
    assert ports == {(22623, 22623), (22624, 22624)}
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": 22624}
    # The TLS pair comes from the Secret's tls.crt/tls.key keys, mounted where --cert/--key point.
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "machine-config-server-tls"
    assert str(args.cert) == f"{mounts['tls']}/tls.crt" and str(args.key) == f"{mounts['tls']}/tls.key"
    # No state directory on the kube store: it would turn on bootstrap tokens and the node API.
    assert args.state is None
    assert c["resources"]["requests"].keys() == {"cpu", "memory"}


def test_daemon_daemonset(docs: list[dict[str, Any]]) -> None:
    d = find(docs, "DaemonSet", "machine-config-daemon")
    spec = pod_spec(d)
    assert spec["serviceAccountName"] == "machine-config-daemon"
    assert spec["hostPID"] is True and spec["hostNetwork"] is True
    assert spec["tolerations"] == [{"operator": "Exists"}], "tolerates every taint"
    assert spec["terminationGracePeriodSeconds"] == 600
    c = container(d)
    assert c["securityContext"]["privileged"] is True
    assert c["command"][:6] == ["mcd", "start", "--store", "kube", "--node", "$(NODE_NAME)"]
    args = parse_command(c["command"])
    assert args.node == "node-a"
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    # The host root at /rootfs, and the host's system bus reachable through it.
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["rootfs"]["hostPath"]["path"] == "/"
    assert mounts["rootfs"]["mountPath"] == "/rootfs" == str(args.root)
    assert env["DBUS_SYSTEM_BUS_ADDRESS"]["value"] == "unix:path=/rootfs/run/dbus/system_bus_socket"
    # The liveness probe asks the daemon's metrics listener.
    host, port = args.metrics_listen.rsplit(":", 1)
    assert c["livenessProbe"]["httpGet"] == {"host": host, "path": "/metrics", "port": int(port)}
    assert c["resources"]["requests"].keys() == {"cpu", "memory"}


def test_namespace_admits_the_privileged_daemon(docs: list[dict[str, Any]]) -> None:
    ns = find(docs, "Namespace", NAMESPACE)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


# --------------------------------------------------------------------------------------------
# the daemon's own-node admission policy

def test_admission_policy_covers_the_daemon_and_its_annotations(docs: list[dict[str, Any]]) -> None:
    from machineconfig.constants import DAEMON_OWNED_ANNOTATIONS

    policy = find(docs, "ValidatingAdmissionPolicy", "machine-config-daemon-own-node")
    spec = policy["spec"]
    assert spec["failurePolicy"] == "Fail"
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert rule == {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["nodes"]}
    (cond,) = spec["matchConditions"]
    assert f"'system:serviceaccount:{NAMESPACE}:machine-config-daemon'" in cond["expression"]
    variables = {v["name"]: v["expression"] for v in spec["variables"]}
    owned = yaml.safe_load(variables["ownedAnnotations"])
    assert set(owned) == set(DAEMON_OWNED_ANNOTATIONS)
    assert "request.userInfo.extra['authentication.kubernetes.io/node-name']" in variables["tokenNode"]
    assert all(v.get("reason") == "Forbidden" for v in spec["validations"])
    binding = find(docs, "ValidatingAdmissionPolicyBinding", "machine-config-daemon-own-node")
    assert binding["spec"] == {"policyName": "machine-config-daemon-own-node", "validationActions": ["Deny"]}


def test_admission_policy_keeps_each_daemon_to_its_own_machineconfignode(
        docs: list[dict[str, Any]]) -> None:
    name = "machine-config-daemon-own-machineconfignode"
    spec = find(docs, "ValidatingAdmissionPolicy", name)["spec"]
    assert spec["failurePolicy"] == "Fail"
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert rule["apiGroups"] == [GROUP] and set(rule["operations"]) >= {"UPDATE"}
    assert set(rule["resources"]) == {"machineconfignodes", "machineconfignodes/status"}
    (cond,) = spec["matchConditions"]
    assert f"'system:serviceaccount:{NAMESPACE}:machine-config-daemon'" in cond["expression"]
    (validation,) = spec["validations"]
    assert "object.metadata.name == variables.tokenNode" in validation["expression"]
    binding = find(docs, "ValidatingAdmissionPolicyBinding", name)
    assert binding["spec"] == {"policyName": name, "validationActions": ["Deny"]}


# --------------------------------------------------------------------------------------------
# the CRDs: names, scope, subresources and columns as OpenShift has them

CRD_FACTS = {
    # kind: (plural, short names, status subresource, printer columns (name, type, jsonPath))
    "MachineConfig": ("machineconfigs", ["mc"], False, [
        ("GeneratedByController", "string",
         r".metadata.annotations.machineconfiguration\.openshift\.io/generated-by-controller-version"),
        ("IgnitionVersion", "string", ".spec.config.ignition.version"),
        ("Age", "date", ".metadata.creationTimestamp")]),
    "MachineConfigPool": ("machineconfigpools", ["mcp"], True, [
        ("Config", "string", ".status.configuration.name"),
        ("Updated", "string", '.status.conditions[?(@.type=="Updated")].status'),
        ("Updating", "string", '.status.conditions[?(@.type=="Updating")].status'),
        ("Degraded", "string", '.status.conditions[?(@.type=="Degraded")].status'),
        ("MachineCount", "number", ".status.machineCount"),
        ("ReadyMachineCount", "number", ".status.readyMachineCount"),
        ("UpdatedMachineCount", "number", ".status.updatedMachineCount"),
        ("DegradedMachineCount", "number", ".status.degradedMachineCount"),
        ("Age", "date", ".metadata.creationTimestamp")]),
    "ControllerConfig": ("controllerconfigs", None, True, []),
    "KubeletConfig": ("kubeletconfigs", None, True, []),
    "ContainerRuntimeConfig": ("containerruntimeconfigs", ["ctrcfg"], True, []),
    "MachineConfigNode": ("machineconfignodes", None, True, [
        ("PoolName", "string", ".spec.pool.name"),
        ("DesiredConfig", "string", ".spec.configVersion.desired"),
        ("CurrentConfig", "string", ".status.configVersion.current"),
        ("Updated", "string", '.status.conditions[?(@.type=="Updated")].status'),
        ("Age", "date", ".metadata.creationTimestamp"),
        *[(column, "string", f'.status.conditions[?(@.type=="{ctype}")].status') for column, ctype in (
            ("UpdatePrepared", "UpdatePrepared"), ("UpdateExecuted", "UpdateExecuted"),
            ("UpdatePostActionComplete", "UpdatePostActionComplete"),
            ("UpdateComplete", "UpdateComplete"), ("Resumed", "Resumed"),
            ("UpdatedFilesAndOS", "AppliedFilesAndOS"), ("CordonedNode", "Cordoned"),
            ("DrainedNode", "Drained"), ("RebootedNode", "RebootedNode"),
            ("UncordonedNode", "Uncordoned"))]]),
}


def test_crd_names_scope_subresources_and_columns(docs: list[dict[str, Any]]) -> None:
    crds = {d["spec"]["names"]["kind"]: d for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert set(crds) == set(CRD_FACTS)
    for kind, (plural, short, status, columns) in CRD_FACTS.items():
        spec = crds[kind]["spec"]
        assert crds[kind]["metadata"]["name"] == f"{plural}.{GROUP}"
        assert spec["group"] == GROUP and spec["scope"] == "Cluster"
        assert spec["names"]["plural"] == plural and spec["names"]["singular"] == kind.lower()
        assert spec["names"]["listKind"] == kind + "List"
        assert spec["names"].get("shortNames") == short, kind
        (version,) = spec["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
        assert ("status" in version.get("subresources", {})) is status, kind
        got = [(c["name"], c["type"], c["jsonPath"]) for c in version.get("additionalPrinterColumns", [])]
        assert got == columns, kind
