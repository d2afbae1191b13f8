"""ContainerRuntimeConfig -> 99-<pool>-generated-containerruntime: CRI-O drop-ins, storage.conf,
validation with MCO's messages, name suffixes and Success/Failure conditions."""
from __future__ import annotations

import tomllib
from typing import Any

import pytest

from machineconfig.constants import CONTROLLER_VERSION, GENERATED_BY_CONTROLLER_VERSION_ANNOTATION
from machineconfig.errors import MachineConfigError
from mcc.container_runtime_config import generate_container_runtime_machine_configs, quantity_value, toml_dumps
from mcc.generated_common import MC_NAME_SUFFIX_ANNOTATION
from mcc.template import render_templates

from tests.support.templatekit import TEMPLATES, assert_valid_ignition, by_name, controller_config, file_text, files, pool, selector

NOW = "2026-11-27T14:00:00Z"
POOLS = [pool("master"), pool("worker")]
TEMPLATE_MCS = render_templates(controller_config("None"), TEMPLATES)
DROPIN = "/etc/crio/crio.conf.d/01-ctrcfg-"


def ctrcfg(name: str, pool_name: str = "worker", created: str = "", **settings: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "generation": 1}
    if created:
        meta["creationTimestamp"] = created
    return {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "ContainerRuntimeConfig",
            "metadata": meta,
            "spec": {"machineConfigPoolSelector": selector(pool_name), "containerRuntimeConfig": settings}}


def generate(*cfgs: dict[str, Any], **kw: Any) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    out, updated = generate_container_runtime_machine_configs(list(cfgs), POOLS, TEMPLATE_MCS, now=NOW, **kw)
    for mc in out:
        assert_valid_ignition(mc["spec"]["config"])
    return by_name(out), updated


def test_pids_limit_log_level_overlay_size_and_log_size() -> None:
    mcs, updated = generate(ctrcfg("tune", pidsLimit=8192, logLevel="debug", overlaySize="10G",
                                   logSizeMax="64Ki", defaultRuntime="runc"))
    mc = mcs["99-worker-generated-containerruntime"]
    assert [f["path"] for f in mc["spec"]["config"]["storage"]["files"]] == [
        "/etc/containers/storage.conf", DROPIN + "logLevel", DROPIN + "pidsLimit", DROPIN + "logSizeMax",
        DROPIN + "defaultRuntime"]
    # the layout of MCO's TestCreateCRIODropinFiles: "[crio]\n  [crio.runtime]\n    log_size_max = 10000000000\n"
    assert file_text(mc, DROPIN + "pidsLimit") == "[crio]\n  [crio.runtime]\n    pids_limit = 8192\n"
    assert file_text(mc, DROPIN + "logLevel") == '[crio]\n  [crio.runtime]\n    log_level = "debug"\n'
    assert file_text(mc, DROPIN + "logSizeMax") == \
        "[crio]\n  [crio.runtime]\n    log_size_max = 65536\n"
    assert file_text(mc, DROPIN + "defaultRuntime") == \
        '[crio]\n  [crio.runtime]\n    default_runtime = "runc"\n'
    storage = tomllib.loads(file_text(mc, "/etc/containers/storage.conf"))
    # merged into the template's copy: its settings stay
    assert storage["storage"]["driver"] == "overlay"
    assert storage["storage"]["graphroot"] == "/var/lib/containers/storage"
    assert storage["storage"]["options"]["overlay"] == {"mountopt": "nodev,metacopy=on", "size": "10G"}
    f = files(mc)[DROPIN + "pidsLimit"]
    assert f["contents"]["source"].startswith("data:text/plain;charset=utf-8;base64,")
    assert f["contents"]["compression"] == "" and f["mode"] == 0o644 and f["overwrite"] is True
    assert mc["metadata"]["annotations"] == {GENERATED_BY_CONTROLLER_VERSION_ANNOTATION: CONTROLLER_VERSION}
    assert mc["metadata"]["labels"] == {"machineconfiguration.openshift.io/role": "worker"}
    assert mc["spec"]["osImageURL"] == ""
    out = updated[0]
    assert out["metadata"]["annotations"] == {MC_NAME_SUFFIX_ANNOTATION: ""}
    assert out["metadata"]["finalizers"] == ["99-worker-generated-containerruntime"]
    assert out["status"] == {"observedGeneration": 1, "conditions": [
        {"type": "Success", "status": "True", "lastTransitionTime": NOW, "reason": "", "message": "Success"}]}


def test_only_the_changed_settings_get_files() -> None:
    mcs, _ = generate(ctrcfg("pids", pidsLimit=4096))
    assert list(files(mcs["99-worker-generated-containerruntime"])) == [DROPIN + "pidsLimit"]


def test_additional_stores() -> None:
    mcs, _ = generate(ctrcfg("stores", additionalImageStores=[{"path": "/mnt/images"}],
                             additionalLayerStores=[{"path": "/var/lib/stargz-store/store"}],
                             additionalArtifactStores=[{"path": "/mnt/artifacts"}]))
    mc = mcs["99-worker-generated-containerruntime"]
    options = tomllib.loads(file_text(mc, "/etc/containers/storage.conf"))["storage"]["options"]
    assert options["additionalimagestores"] == ["/mnt/images"]
    assert options["additionallayerstores"] == ["/var/lib/stargz-store/store:ref"]
    assert tomllib.loads(file_text(mc, DROPIN + "additionalArtifactStores")) == {
        "crio": {"runtime": {"additional_artifact_stores": ["/mnt/artifacts"]}}}


INVALID = [
    ({"pidsLimit": 10}, "invalid PidsLimit 10"),
    ({"pidsLimit": -1}, "invalid PidsLimit -1"),
    ({"logSizeMax": "8Ki"}, 'invalid LogSizeMax "8Ki", cannot be less than 8kB'),
    ({"logSizeMax": "1k"}, 'invalid LogSizeMax "1k", cannot be less than 8kB'),
    ({"overlaySize": "-1G"}, 'invalid overlaySize "-1G", cannot be less than 0'),
    ({"logLevel": "verbose"},
     'invalid LogLevel "verbose", must be one of error, fatal, panic, warn, info, debug, or trace'),
    ({"defaultRuntime": "kata"}, 'invalid DefaultRuntime "kata", must be one of crun, runc'),
    ({"additionalImageStores": [{"path": "relative/dir"}]}, "additionalImageStores: invalid path"),
    ({"additionalLayerStores": [{"path": "/a//b"}]}, "additionalLayerStores: invalid path"),
    ({"additionalLayerStores": [{"path": f"/s{i}"} for i in range(6)]},
     "additionalLayerStores: must have at most 5 items"),
]


@pytest.mark.parametrize(("settings", "message"), INVALID)
def test_validation_failures(settings: dict[str, Any], message: str) -> None:
    mcs, updated = generate(ctrcfg("bad", **settings))
    assert mcs == {}
    cond = updated[0]["status"]["conditions"][-1]
    assert (cond["type"], cond["status"]) == ("Failure", "False")
    assert cond["message"].startswith("Error: " + message)


@pytest.mark.parametrize("settings", [
    {"pidsLimit": 0}, {"pidsLimit": 20}, {"logSizeMax": "8193"}, {"logSizeMax": 0}, {"overlaySize": "0"},
    {"logLevel": "trace"}, {"defaultRuntime": "crun"}, {},
])
def test_valid_edges(settings: dict[str, Any]) -> None:
    _, updated = generate(ctrcfg("ok", **settings))
    assert updated[0]["status"]["conditions"][-1]["type"] == "Success"


def test_no_pool_and_suffixes() -> None:
    _, updated = generate(ctrcfg("lost", "nosuchpool", pidsLimit=100))
    assert updated[0]["status"]["conditions"][-1]["message"] == (
        "Error: could not find any MachineConfigPool set for ContainerRuntimeConfig lost")
    mcs, updated = generate(ctrcfg("b", created="2026-02-01T00:00:00Z", pidsLimit=200),
                            ctrcfg("a", created="2026-01-01T00:00:00Z", pidsLimit=100),
                            ctrcfg("m", "master", pidsLimit=300))
    assert sorted(mcs) == ["99-master-generated-containerruntime", "99-worker-generated-containerruntime",
                           "99-worker-generated-containerruntime-1"]
    assert file_text(mcs["99-worker-generated-containerruntime-1"], DROPIN + "pidsLimit").endswith("= 200\n")
    assert {u["metadata"]["name"]: u["metadata"]["annotations"][MC_NAME_SUFFIX_ANNOTATION]
            for u in updated} == {"a": "", "b": "1", "m": ""}


@pytest.mark.parametrize(("q", "value"), [
    ("8Ki", 8192), ("1Gi", 2**30), ("10G", 10**10), ("1.5Mi", 1572864), ("1e3", 1000), ("100m", 1),
    (4096, 4096), ("-1G", -10**9),
])
def test_quantities(q: Any, value: int) -> None:
    assert quantity_value(q, "x") == value


def test_bad_quantity() -> None:
    with pytest.raises(MachineConfigError, match="quantities must match"):
        quantity_value("10 gigs", "overlaySize")


def test_toml_writer_round_trips() -> None:
    doc = {"storage": {"driver": "overlay", "options": {"stores": ["/a", 'b"c'], "overlay": {"n": 1, "b": True}}}}
    assert tomllib.loads(toml_dumps(doc)) == doc


def test_storage_template_is_needed_only_when_storage_changes() -> None:
    out, updated = generate_container_runtime_machine_configs(
        [ctrcfg("pids", pidsLimit=4096)], POOLS, [], now=NOW)
    assert [mc["metadata"]["name"] for mc in out] == ["99-worker-generated-containerruntime"]
    _, updated = generate_container_runtime_machine_configs(
        [ctrcfg("overlay", overlaySize="5G")], POOLS, [], now=NOW)
    assert updated[0]["status"]["conditions"][-1]["message"] == (
        "Error: could not find /etc/containers/storage.conf in MachineConfig 01-worker-container-runtime")
    out, _ = generate_container_runtime_machine_configs(
        [ctrcfg("overlay", "infra", overlaySize="5G")], [pool("infra")], [], now=NOW,
        controller_config=controller_config("None"), templates_dir=TEMPLATES)
    assert "/etc/containers/storage.conf" in files(out[0])


def test_a_repeated_verdict_replaces_the_last_condition() -> None:
    # A second render pass over the same ContainerRuntimeConfig adds no condition (MCO's rule:
    # the same message as the last refreshes its time).
    _, updated = generate(ctrcfg("pids", pidsLimit=2048))
    _, again = generate(*updated)
    _, third = generate(*again)
    assert [(c["type"], c["message"]) for c in third[0]["status"]["conditions"]] == [("Success", "Success")]


def test_crio_dropin_bytes_are_mcos() -> None:
    # MCO's TestCreateCRIODropinFiles: logSizeMax 10G gives exactly these bytes, 0k gives no file
    mcs, _ = generate(ctrcfg("logs", logSizeMax="10G"))
    assert file_text(mcs["99-worker-generated-containerruntime"], DROPIN + "logSizeMax") == \
        "[crio]\n  [crio.runtime]\n    log_size_max = 10000000000\n"
    mcs, _ = generate(ctrcfg("zero", logSizeMax="0k", pidsLimit=2048))
    files = mcs["99-worker-generated-containerruntime"]["spec"]["config"]["storage"]["files"]
    assert DROPIN + "pidsLimit" in [f["path"] for f in files]
    assert DROPIN + "logSizeMax" not in [f["path"] for f in files]


@pytest.mark.parametrize("bad", [["worker"], {"matchExpressions": [{"key": "a", "operator": "Like"}]}])
def test_malformed_pool_selector_is_a_failure_condition_not_a_crash(bad: Any) -> None:
    cfg = ctrcfg("bad", pidsLimit=2048)
    cfg["spec"]["machineConfigPoolSelector"] = bad
    mcs, updated = generate(cfg)
    assert mcs == {}
    assert updated[0]["status"]["conditions"][-1]["message"].startswith("Error: invalid label selector: ")
