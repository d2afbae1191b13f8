"""The shipped CRDs accept every object this project reads or writes, and reject bad ones the way
kube-apiserver does.

Accepted without a single pruned field: every MachineConfig, MachineConfigPool, KubeletConfig,
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

from tests.kube import crdschema

REPO = Path(__file__).resolve().parents[2]
VALUES = REPO / "examples" / "cluster-values.yaml"
VECTORS = REPO / "tests" / "data" / "vectors" / "render"
API_VERSION = "machineconfiguration.openshift.io/v1"
KINDS = ("MachineConfig", "MachineConfigPool", "KubeletConfig", "ContainerRuntimeConfig", "ControllerConfig")


@pytest.fixture(scope="module")
def crds() -> dict[str, dict[str, Any]]:
    loaded = crdschema.load_crds(REPO / "manifests" / "crds")
    by_kind = {crd["spec"]["names"]["kind"]: crd for crd in loaded.values()}
    assert set(by_kind) == set(KINDS)
    return by_kind


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


def assert_accepted(crds: dict[str, dict[str, Any]], where: str, obj: dict[str, Any]) -> None:
    crd = crds[obj["kind"]]
    assert obj["apiVersion"] == API_VERSION, where
    assert crdschema.unknown_fields(crd, obj) == [], f"{where}: fields the CRD would prune"
    assert crdschema.validate(crd, obj) == [], f"{where}: rejected"
    # Nothing is lost on the way in: the stored object is the object (defaults aside).
    stored = crdschema.prune(crd, obj)
    assert {k: v for k, v in stored.items() if k != "spec"} == {k: v for k, v in obj.items() if k != "spec"}


@pytest.mark.parametrize(("where", "obj"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_examples_apply_unchanged(crds: dict[str, dict[str, Any]], where: str, obj: dict[str, Any]) -> None:
    assert_accepted(crds, where, obj)


def test_vector_inputs_apply_unchanged(crds: dict[str, dict[str, Any]]) -> None:
    for where, obj in VECTOR_INPUTS:
        assert_accepted(crds, where, obj)


def test_expected_rendered_configs_apply_unchanged(crds: dict[str, dict[str, Any]]) -> None:
    for where, obj in RENDERED:
        assert_accepted(crds, where, obj)
        assert crdschema.prune(crds["MachineConfig"], obj) == obj, where


def test_what_mcc_render_creates_applies_unchanged(crds: dict[str, dict[str, Any]]) -> None:
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
        assert_accepted(crds, item["metadata"]["name"], item)


# --------------------------------------------------------------------------------------------
# bad objects: rejected with kube-apiserver's causes

def obj(kind: str, spec: Any, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": "x", **meta}, "spec": spec}


def causes(crds: dict[str, dict[str, Any]], o: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(c["reason"], c["field"], c["message"]) for c in crdschema.validate(crds[o["kind"]], o)}


SELECTOR = {"matchLabels": {"machineconfiguration.openshift.io/role": "worker"}}


def test_machineconfig_bad_fields(crds: dict[str, dict[str, Any]]) -> None:
    assert causes(crds, obj("MachineConfig", {"config": "not an object", "fips": "yes"})) == {
        ("FieldValueTypeInvalid", "spec.config",
         'Invalid value: "string": spec.config in body must be of type object: "string"'),
        ("FieldValueTypeInvalid", "spec.fips",
         'Invalid value: "string": spec.fips in body must be of type boolean: "string"'),
    }
    assert causes(crds, obj("MachineConfig", {"kernelArguments": "quiet", "extensions": ["usbguard", 3]})) == {
        ("FieldValueTypeInvalid", "spec.kernelArguments",
         'Invalid value: "string": spec.kernelArguments in body must be of type array: "string"'),
        ("FieldValueTypeInvalid", "spec.extensions[1]",
         'Invalid value: "integer": spec.extensions[1] in body must be of type string: "integer"'),
    }
    # A MachineConfig's spec is optional (a null one is dropped: not nullable); a pool's is
    # required, so a null spec there is missing.
    assert causes(crds, obj("MachineConfig", None)) == set()
    assert causes(crds, obj("MachineConfigPool", None)) == {("FieldValueRequired", "spec", "Required value")}
    # kernelArguments is nullable and kept; extensions is not, and a null one is dropped.
    ok = obj("MachineConfig", {"kernelArguments": None, "extensions": None})
    assert causes(crds, ok) == set()
    assert crdschema.prune(crds["MachineConfig"], ok)["spec"] == {"kernelArguments": None}


def test_machineconfig_config_keeps_anything_but_spec_prunes_unknown(crds: dict[str, dict[str, Any]]) -> None:
    mc = obj("MachineConfig", {"config": {"ignition": {"version": "3.5.0"}, "madeUp": {"x": [1]}},
                               "kernelArgs": ["typo"]})
    assert crdschema.unknown_fields(crds["MachineConfig"], mc) == ["spec.kernelArgs"]
    assert crdschema.prune(crds["MachineConfig"], mc)["spec"] == {
        "config": {"ignition": {"version": "3.5.0"}, "madeUp": {"x": [1]}}}


def test_pool_max_unavailable_is_int_or_string(crds: dict[str, dict[str, Any]]) -> None:
    for good in (1, "10%", 0):
        assert causes(crds, obj("MachineConfigPool", {"machineConfigSelector": SELECTOR, "maxUnavailable": good})) == set()
    assert causes(crds, obj("MachineConfigPool", {"maxUnavailable": True})) == {
        ("FieldValueTypeInvalid", "spec.maxUnavailable",
         'Invalid value: "boolean": spec.maxUnavailable in body must be of type integer,string: "boolean"'),
        ("FieldValueInvalid", "<nil>",
         'Invalid value: "": "spec.maxUnavailable" must validate at least one schema (anyOf)'),
        ("FieldValueTypeInvalid", "spec.maxUnavailable",
         'Invalid value: "boolean": spec.maxUnavailable in body must be of type integer: "boolean"'),
    }


def test_pool_selectors_pinned_sets_and_unknown_fields(crds: dict[str, dict[str, Any]]) -> None:
    pool = obj("MachineConfigPool", {
        "nodeSelector": {"matchExpressions": [{"key": "a"}]},
        "pinnedImageSets": [{"name": f"set-{i}"} for i in range(101)],
        "maxUnavailabe": 2,
    })
    assert causes(crds, pool) == {
        ("FieldValueRequired", "spec.nodeSelector.matchExpressions[0].operator", "Required value"),
        ("FieldValueTooMany", "spec.pinnedImageSets", "Too many: 101: must have at most 100 items"),
    }
    assert crdschema.unknown_fields(crds["MachineConfigPool"], pool) == ["spec.maxUnavailabe"]
    dup = obj("MachineConfigPool", {"pinnedImageSets": [{"name": "a"}, {"name": "a"}]})
    assert causes(crds, dup) == {("FieldValueDuplicate", "spec.pinnedImageSets[1]", 'Duplicate value: {"name":"a"}')}


def test_kubeletconfig_bad_fields(crds: dict[str, dict[str, Any]]) -> None:
    kc = obj("KubeletConfig", {"logLevel": "high", "machineConfigPoolSelector": SELECTOR,
                               "tlsSecurityProfile": {"type": "Paranoid"},
                               "kubeletConfig": {"maxPods": 500, "anyUpstreamField": True}})
    assert causes(crds, kc) == {
        ("FieldValueTypeInvalid", "spec.logLevel",
         'Invalid value: "string": spec.logLevel in body must be of type integer: "string"'),
        ("FieldValueNotSupported", "spec.tlsSecurityProfile.type",
         'Unsupported value: "Paranoid": supported values: "Old", "Intermediate", "Modern", "Custom"'),
    }
    assert crdschema.unknown_fields(crds["KubeletConfig"], kc) == []


def test_containerruntimeconfig_bad_fields(crds: dict[str, dict[str, Any]]) -> None:
    assert causes(crds, obj("ContainerRuntimeConfig", {"machineConfigPoolSelector": SELECTOR})) == {
        ("FieldValueRequired", "spec.containerRuntimeConfig", "Required value")}
    bad = obj("ContainerRuntimeConfig", {"containerRuntimeConfig": {
        "defaultRuntime": "youki", "logSizeMax": "lots", "pidsLimit": 1.5}})
    assert causes(crds, bad) == {
        ("FieldValueNotSupported", "spec.containerRuntimeConfig.defaultRuntime",
         'Unsupported value: "youki": supported values: "crun", "runc", ""'),
        ("FieldValueInvalid", "spec.containerRuntimeConfig.logSizeMax",
         'Invalid value: "lots": spec.containerRuntimeConfig.logSizeMax in body should match '
         "'^(\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$'"),
        ("FieldValueTypeInvalid", "spec.containerRuntimeConfig.pidsLimit",
         'Invalid value: "number": spec.containerRuntimeConfig.pidsLimit in body must be of type integer: "number"'),
    }
    # Quantities as numbers or strings; defaultRuntime defaults to "".
    good = obj("ContainerRuntimeConfig", {"containerRuntimeConfig": {"logSizeMax": "50Mi", "overlaySize": 10737418240}})
    assert causes(crds, good) == set()
    assert crdschema.prune(crds["ContainerRuntimeConfig"], good)["spec"]["containerRuntimeConfig"]["defaultRuntime"] == ""


def test_controllerconfig_required_and_byte_fields(crds: dict[str, dict[str, Any]]) -> None:
    got = causes(crds, obj("ControllerConfig", {"rootCAData": "%%%", "images": {"a": 1}}))
    required = {f for r, f, _ in got if r == "FieldValueRequired"}
    assert required == {f"spec.{k}" for k in (
        "additionalTrustBundle", "baseOSContainerImage", "cloudProviderCAData", "cloudProviderConfig",
        "clusterDNSIP", "dns", "infra", "ipFamilies", "kubeAPIServerServingCAData", "network",
        "proxy", "releaseImage")}
    assert ("FieldValueTypeInvalid", "spec.rootCAData",
            'Invalid value: "%%%": spec.rootCAData in body must be of type byte: "%%%"') in got
    assert ("FieldValueTypeInvalid", "spec.images.a",
            'Invalid value: "integer": spec.images.a in body must be of type string: "integer"') in got


def test_status_is_checked_too(crds: dict[str, dict[str, Any]]) -> None:
    pool = obj("MachineConfigPool", {})
    pool["status"] = {"machineCount": "three", "conditions": [
        {"type": "Updated", "status": "True", "lastTransitionTime": "soon"}]}
    assert causes(crds, pool) == {
        ("FieldValueTypeInvalid", "status.machineCount",
         'Invalid value: "string": status.machineCount in body must be of type integer: "string"'),
        ("FieldValueTypeInvalid", "status.conditions[0].lastTransitionTime",
         'Invalid value: "soon": status.conditions[0].lastTransitionTime in body must be of type date-time: "soon"'),
    }


def test_what_the_api_server_stores_loads_in_the_programs(crds: dict[str, dict[str, Any]]) -> None:
    """The API server hands the programs back the pruned and defaulted object (e.g. a
    ContainerRuntimeConfig's defaultRuntime "" that nobody wrote): our models must take it."""
    from machineconfig.api import KINDS as MODELS

    for where, obj in EXAMPLES + VECTOR_INPUTS + RENDERED:
        stored = crdschema.prune(crds[obj["kind"]], obj)
        MODELS[obj["kind"]].model_validate(stored)
    ctrcfg = crdschema.prune(
        crds["ContainerRuntimeConfig"],
        {"apiVersion": API_VERSION, "kind": "ContainerRuntimeConfig", "metadata": {"name": "x"},
         "spec": {"containerRuntimeConfig": {"pidsLimit": 2048}}})
    assert ctrcfg["spec"]["containerRuntimeConfig"]["defaultRuntime"] == ""
    MODELS["ContainerRuntimeConfig"].model_validate(ctrcfg)
