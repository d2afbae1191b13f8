"""The shipped CRDs, installed in the real kube-apiserver (the session's control plane), accept
every object this project reads or writes and refuse bad ones.

Each object is created with `dryRun=All&fieldValidation=Strict` (what `kubectl apply
--server-side` asks: an unknown field is an error, not silently pruned) and must come back
unchanged (server-set metadata and defaults aside): every MachineConfig, MachineConfigPool, KubeletConfig,
ContainerRuntimeConfig and ControllerConfig under examples/ (the *.yaml.j2 MachineConfig rendered
with examples/cluster-values.yaml) and among the render vectors' inputs (tests/data/vectors/render,
taken from OpenShift's own MCO test runs), plus what the controller itself creates: the
rendered and generated MachineConfigs of `mcc render examples/cluster`, and the vectors'
expected rendered MachineConfigs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube.controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[2]
VALUES = REPO / "examples" / "cluster-values.yaml"
VECTORS = REPO / "tests" / "data" / "vectors" / "render"
API_VERSION = "machineconfiguration.openshift.io/v1"
KINDS = ("MachineConfig", "MachineConfigPool", "KubeletConfig", "ContainerRuntimeConfig", "ControllerConfig")


def example_objects() -> Iterator[tuple[str, dict[str, Any]]]:
    from mcc.template import render_user_template

    values = yaml.safe_load(VALUES.read_text())
    for path in sorted((REPO / "examples").rglob("*")):
        if path.name.endswith(".yaml.j2"):
            text = render_user_template(path, values)
        elif path.suffix in (".yaml", ".yml") and path != VALUES:
            text = path.read_text()
        else:
            continue
        for i, doc in enumerate(yaml.safe_load_all(text)):
            if isinstance(doc, dict) and doc.get("kind") in KINDS:
                yield f"{path.relative_to(REPO)}#{i}", doc


def vector_objects() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(VECTORS.glob("*.json")):
        case = json.loads(path.read_text())
        name = path.stem
        if case.get("pool"):
            yield f"{name}:pool", case["pool"]
        if case.get("controllerConfig"):
            yield f"{name}:controllerConfig", case["controllerConfig"]
        for i, mc in enumerate(case.get("machineConfigs") or []):
            yield f"{name}:machineConfigs[{i}]", mc


def expected_rendered() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(VECTORS.glob("*.json")):
        expected = json.loads(path.read_text())["expected"]
        if not expected.get("ok"):
            continue
        yield path.stem, {
            "apiVersion": API_VERSION,
            "kind": "MachineConfig",
            "metadata": {
                "name": expected["renderedName"],
                "annotations": expected["annotations"],
                "ownerReferences": expected["ownerReferences"],
            },
            "spec": expected["spec"],
        }


EXAMPLES = list(example_objects())
VECTOR_INPUTS = list(vector_objects())
RENDERED = list(expected_rendered())


def test_the_corpus_is_not_empty() -> None:
    kinds = {o["kind"] for _, o in EXAMPLES}
    assert kinds == set(KINDS), "examples/ has every kind"
    assert len(VECTOR_INPUTS) > 100 and len(RENDERED) > 50


PLURALS = {"MachineConfig": "machineconfigs", "MachineConfigPool": "machineconfigpools",
           "KubeletConfig": "kubeletconfigs", "ContainerRuntimeConfig": "containerruntimeconfigs",
           "ControllerConfig": "controllerconfigs"}
SERVER_METADATA = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields")


@pytest.fixture(scope="module")
def cp(control_plane: ControlPlane, kube_crds: list[str]) -> ControlPlane:
    return control_plane


def create(cp: ControlPlane, o: dict[str, Any], name: str = "dry-run") -> tuple[int, dict[str, Any]]:
    """POST `o` as a dry run with strict field validation, under `name` (nothing is stored, so
    every object can use the same one)."""
    body = {**o, "metadata": {**o.get("metadata", {}), "name": name}}
    code, answer = cp.call("POST", f"/apis/{API_VERSION}/{PLURALS[o['kind']]}"
                           "?dryRun=All&fieldValidation=Strict", body)
    return code, answer


def missing(sent: Any, got: Any, path: str) -> list[str]:
    """Paths of `sent` that `got` lacks or holds differently. Extra keys in `got` are defaults;
    a null that is gone was one in a field that is not nullable, which the server drops (as
    OpenShift's does) instead of refusing."""
    if isinstance(sent, dict):
        if not isinstance(got, dict):
            return [path]
        return [p for k, v in sent.items() if k in got or v is not None
                for p in ([f"{path}.{k}"] if k not in got else missing(v, got[k], f"{path}.{k}"))]
    if isinstance(sent, list):
        if not isinstance(got, list) or len(got) != len(sent):
            return [path]
        return [p for i, (a, b) in enumerate(zip(sent, got)) for p in missing(a, b, f"{path}[{i}]")]
    return [] if sent == got else [path]


def assert_accepted(cp: ControlPlane, where: str, o: dict[str, Any]) -> dict[str, Any]:
    assert o["apiVersion"] == API_VERSION, where
    code, stored = create(cp, o)
    assert code == 201, f"{where}: {code} {stored.get('message')}"
    sent = {k: v for k, v in o.items() if k != "status"}
    sent["metadata"] = {k: v for k, v in o.get("metadata", {}).items() if k != "name"}
    for key in SERVER_METADATA:
        stored["metadata"].pop(key, None)
        sent["metadata"].pop(key, None)
    assert missing(sent, stored, where) == [], f"{where}: changed on the way in"
    return stored


@pytest.mark.parametrize(("where", "obj"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_examples_apply_unchanged(cp: ControlPlane, where: str, obj: dict[str, Any]) -> None:
    assert_accepted(cp, where, obj)


def test_vector_inputs_apply_unchanged(cp: ControlPlane) -> None:
    for where, obj in VECTOR_INPUTS:
        assert_accepted(cp, where, obj)


def without_uidless_owners(o: dict[str, Any]) -> dict[str, Any]:
    """Bootstrap output (`mcc render`, MCO's bootstrap in the vectors) names its ControllerConfig
    as owner without a uid: there is no object yet. The API server refuses an owner reference
    without a uid, so these are checked without such references; the running controller
    writes the uid (test_manifests_cluster.py)."""
    meta = dict(o["metadata"])
    owners = [r for r in meta.get("ownerReferences") or [] if r.get("uid")]
    meta.pop("ownerReferences", None)
    if owners:
        meta["ownerReferences"] = owners
    return {**o, "metadata": meta}


def test_expected_rendered_configs_apply_unchanged(cp: ControlPlane) -> None:
    for where, obj in RENDERED:
        assert_accepted(cp, where, without_uidless_owners(obj))
    with_owner = next(o for _, o in RENDERED if o["metadata"]["ownerReferences"])
    assert create(cp, with_owner)[1]["message"].endswith(
        'metadata.ownerReferences.uid: Invalid value: "": must not be empty')


def test_what_mcc_render_creates_applies_unchanged(cp: ControlPlane) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mcc.cli", "render", str(REPO / "examples" / "cluster"),
         "--values", str(VALUES), "-o", "json"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    items = json.loads(proc.stdout)["items"]
    assert {i["metadata"]["name"].rsplit("-", 1)[0] for i in items} == {
        "rendered-infra", "rendered-master", "rendered-worker"}
    for item in items:
        assert_accepted(cp, item["metadata"]["name"], without_uidless_owners(item))


def test_what_the_api_server_stores_loads_in_the_programs(cp: ControlPlane) -> None:
    """The API server hands the programs back the pruned and defaulted object (e.g. a
    ContainerRuntimeConfig's defaultRuntime "" that nobody wrote): our models must take it."""
    from machineconfig.api import KINDS as MODELS

    for where, o in EXAMPLES + VECTOR_INPUTS[:40]:
        MODELS[o["kind"]].model_validate(assert_accepted(cp, where, o))
    _, ctrcfg = create(cp, obj("ContainerRuntimeConfig", {"containerRuntimeConfig": {"pidsLimit": 2048}}))
    assert ctrcfg["spec"]["containerRuntimeConfig"]["defaultRuntime"] == ""
    MODELS["ContainerRuntimeConfig"].model_validate(ctrcfg)


# --------------------------------------------------------------------------------------------
# bad objects: refused, with the server's causes


def obj(kind: str, spec: Any, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": "x", **meta}, "spec": spec}


def causes(cp: ControlPlane, o: dict[str, Any]) -> set[tuple[str, str]]:
    """(field, message) of each cause of the refusal; empty when accepted."""
    code, answer = create(cp, o)
    if code == 201:
        return set()
    assert code in (400, 422), (code, answer)
    # A cause without a field ("<nil>") restates the others or says CEL rules were skipped.
    found = {(c.get("field", ""), c.get("message", "")) for c in answer.get("details", {}).get("causes", [])
             if c.get("field", "<nil>") != "<nil>"}
    return found or {("", answer.get("message", ""))}


SELECTOR = {"matchLabels": {"machineconfiguration.openshift.io/role": "worker"}}


def test_unknown_fields_are_refused_not_pruned(cp: ControlPlane) -> None:
    mc = obj("MachineConfig", {"config": {"ignition": {"version": "3.5.0"}, "madeUp": {"x": [1]}},
                               "kernelArgs": ["typo"]})
    assert causes(cp, mc) == {("", 'MachineConfig in version "v1" cannot be handled as a MachineConfig: '
                                   'strict decoding error: unknown field "spec.kernelArgs"')}
    # inside spec.config (Ignition, kept as written) anything goes
    del mc["spec"]["kernelArgs"]
    _, stored = create(cp, mc)
    assert stored["spec"]["config"]["madeUp"] == {"x": [1]}
    pool = obj("MachineConfigPool", {"machineConfigSelector": SELECTOR, "maxUnavailabe": 2})
    assert causes(cp, pool) == {("", 'MachineConfigPool in version "v1" cannot be handled as a '
                                     'MachineConfigPool: strict decoding error: unknown field '
                                     '"spec.maxUnavailabe"')}
    # KubeletConfig's kubeletConfig is upstream's KubeletConfiguration, kept as written
    kc = obj("KubeletConfig", {"machineConfigPoolSelector": SELECTOR,
                               "kubeletConfig": {"maxPods": 500, "anyUpstreamField": True}})
    assert causes(cp, kc) == set()


def test_machineconfig_bad_fields(cp: ControlPlane) -> None:
    assert causes(cp, obj("MachineConfig", {"config": "not an object", "fips": "yes"})) == {
        ("spec.config", 'Invalid value: "string": spec.config in body must be of type object: "string"'),
        ("spec.fips", 'Invalid value: "string": spec.fips in body must be of type boolean: "string"'),
    }
    assert causes(cp, obj("MachineConfig", {"kernelArguments": "quiet", "extensions": ["usbguard", 3]})) == {
        ("spec.kernelArguments",
         'Invalid value: "string": spec.kernelArguments in body must be of type array: "string"'),
        ("spec.extensions[1]",
         'Invalid value: "integer": spec.extensions[1] in body must be of type string: "integer"'),
    }
    # A MachineConfig's spec is optional; a pool's is required.
    assert causes(cp, obj("MachineConfig", None)) == set()
    assert causes(cp, obj("MachineConfigPool", None)) == {("spec", "Required value")}
    # kernelArguments is nullable and kept; extensions is not, and a null one is dropped.
    _, stored = create(cp, obj("MachineConfig", {"kernelArguments": None, "extensions": None}))
    assert stored["spec"] == {"kernelArguments": None}


def test_pool_fields(cp: ControlPlane) -> None:
    for good in (1, "10%", 0):
        assert causes(cp, obj("MachineConfigPool", {"machineConfigSelector": SELECTOR,
                                                    "maxUnavailable": good})) == set()
    bad = causes(cp, obj("MachineConfigPool", {"maxUnavailable": True}))
    assert ("spec.maxUnavailable", 'Invalid value: "boolean": spec.maxUnavailable in body must be '
            'of type integer,string: "boolean"') in bad
    pool = obj("MachineConfigPool", {
        "nodeSelector": {"matchExpressions": [{"key": "a"}]},
        "pinnedImageSets": [{"name": f"set-{i}"} for i in range(101)],
    })
    got = causes(cp, pool)
    assert ("spec.nodeSelector.matchExpressions[0].operator", "Required value") in got
    assert ("spec.pinnedImageSets", "Too many: 101: must have at most 100 items") in got
    dup = obj("MachineConfigPool", {"pinnedImageSets": [{"name": "a"}, {"name": "a"}]})
    assert causes(cp, dup) == {("spec.pinnedImageSets[1]", 'Duplicate value: {"name":"a"}')}


def test_kubeletconfig_and_containerruntimeconfig_bad_fields(cp: ControlPlane) -> None:
    kc = obj("KubeletConfig", {"logLevel": "high", "machineConfigPoolSelector": SELECTOR,
                               "tlsSecurityProfile": {"type": "Paranoid"}})
    assert causes(cp, kc) == {
        ("spec.logLevel", 'Invalid value: "string": spec.logLevel in body must be of type integer: "string"'),
        ("spec.tlsSecurityProfile.type",
         'Unsupported value: "Paranoid": supported values: "Old", "Intermediate", "Modern", "Custom"'),
    }
    assert causes(cp, obj("ContainerRuntimeConfig", {"machineConfigPoolSelector": SELECTOR})) == {
        ("spec.containerRuntimeConfig", "Required value")}
    got = causes(cp, obj("ContainerRuntimeConfig", {"containerRuntimeConfig": {
        "defaultRuntime": "youki", "logSizeMax": "lots", "pidsLimit": 1.5}}))
    assert {f for f, _ in got} == {"spec.containerRuntimeConfig.defaultRuntime",
                                   "spec.containerRuntimeConfig.logSizeMax",
                                   "spec.containerRuntimeConfig.pidsLimit"}, got
    good = obj("ContainerRuntimeConfig", {"containerRuntimeConfig": {"logSizeMax": "50Mi",
                                                                     "overlaySize": 10737418240}})
    assert causes(cp, good) == set()


def test_controllerconfig_required_and_byte_fields(cp: ControlPlane) -> None:
    got = causes(cp, obj("ControllerConfig", {"rootCAData": "%%%", "images": {"a": 1},
                                              "additionalTrustBundle": ""}))
    required = {f for f, m in got if m == "Required value"}
    # OpenShift's list less the three nullable ones this CRD lets be absent
    # (controllerconfigs.yaml says why)
    assert required == {f"spec.{k}" for k in (
        "baseOSContainerImage", "cloudProviderConfig", "clusterDNSIP", "dns", "infra",
        "ipFamilies", "kubeAPIServerServingCAData", "network", "proxy", "releaseImage")}
    assert ("spec.rootCAData", 'Invalid value: "%%%": spec.rootCAData in body must be of type byte: "%%%"') in got
    # "" is no byte string: why the example leaves the field out instead
    assert ("spec.additionalTrustBundle",
            'Invalid value: "": spec.additionalTrustBundle in body must be of type byte: ""') in got
    assert ("spec.images.a", 'Invalid value: "integer": spec.images.a in body must be of type string: "integer"') in got


def test_status_is_validated_through_its_subresource(cp: ControlPlane, clean_cluster: ControlPlane) -> None:
    pool = obj("MachineConfigPool", {"machineConfigSelector": SELECTOR})
    pool["metadata"]["name"] = "status-check"
    code, stored = cp.call("POST", f"/apis/{API_VERSION}/machineconfigpools", pool)
    assert code == 201, stored
    stored["status"] = {"machineCount": "three", "conditions": [
        {"type": "Updated", "status": "True", "lastTransitionTime": "soon"}]}
    code, answer = cp.call("PUT", f"/apis/{API_VERSION}/machineconfigpools/status-check/status", stored)
    assert code == 422, answer
    assert {(c["field"], c["message"]) for c in answer["details"]["causes"] if c["field"] != "<nil>"} == {
        ("status.machineCount", 'Invalid value: "string": machineCount in body must be of type integer: "string"'),
        ("status.conditions[0].lastTransitionTime",
         'Invalid value: "soon": conditions[0].lastTransitionTime in body must be of type date-time: "soon"'),
    }
