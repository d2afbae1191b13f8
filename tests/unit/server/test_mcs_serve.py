"""What is served: appended files in MCO's order and format, ControllerConfig overrides, kernel
argument migration below 3.3, conversions to 2.2 and 3.0-3.6, Go-compatible JSON.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from machineconfig.constants import ENCAPSULATED_CONFIG_PATH as ENCAPSULATED_PATH
from machineconfig.constants import NODE_ANNOTATIONS_PATH
from machineconfig.ignition.dataurl import decode
from mcs.sources.bootstrap import BootstrapSource
from mcs.serve import (
    CLOUD_CA_PATH, KUBECONFIG_PATH, KUBELET_CA_PATH, MC_CONTENT_PATH,
    ServeError, build_served, go_json,
)
from tests.unit.server.test_mcs_layout import (
    CLOUD_CA, KUBECONFIG, KUBELET_CA, SSH_KEY, WORKER_CONFIG, controller_config, decode_files, ignition_config,
    machine_config, write_layout,
)

ALL_VERSIONS = ["2.2.0", "3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0", "3.5.0", "3.6.0"]
APPENDED = [NODE_ANNOTATIONS_PATH, KUBECONFIG_PATH, MC_CONTENT_PATH, ENCAPSULATED_PATH]


def served(version: str, config: dict[str, Any] | None = None, mc_kargs: list[str] | None = None,
           cc: dict[str, Any] | None = None) -> dict[str, Any]:
    mc = machine_config(WORKER_CONFIG, config if config is not None else ignition_config(kargs=["nosmt"]),
                        kernel_arguments=mc_kargs)
    body = build_served(WORKER_CONFIG, mc, cc if cc is not None else controller_config(), KUBECONFIG, version)
    assert not body.endswith(b"\n") and b"\n" not in body  # compact, like Go's json.Marshal
    result: dict[str, Any] = json.loads(body)
    return result


def file_bytes(config: dict[str, Any], path: str) -> bytes:
    return decode(decode_files(config)[path][-1])


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_every_version_is_served_with_its_version(version: str) -> None:
    assert served(version)["ignition"]["version"] == version


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_appended_files_are_last_in_mco_order(version: str) -> None:
    config = served(version)
    paths = [f["path"] for f in config["storage"]["files"]]
    assert paths[-4:] == APPENDED
    for f in config["storage"]["files"][-4:]:
        assert f["mode"] == 420 and f["overwrite"] is True
        assert f["contents"]["source"].startswith("data:,")


def test_appended_even_if_the_path_exists() -> None:
    cfg = ignition_config()
    cfg["storage"]["files"].append({"overwrite": True, "path": KUBECONFIG_PATH,
                                    "contents": {"source": "data:,mine"}, "mode": 384})
    paths = [f["path"] for f in served("3.5.0", cfg)["storage"]["files"]]
    assert paths.count(KUBECONFIG_PATH) == 2


def test_percent_encoding_is_mcos() -> None:
    config = served("3.5.0")
    source = decode_files(config)[NODE_ANNOTATIONS_PATH][0]
    # Only A-Z a-z 0-9 - _ . ! ~ * ' ( ) stay; everything else is %XX upper case.
    assert source.startswith("data:,%7B%22machineconfiguration.openshift.io%2FcurrentConfig%22%3A%22rendered-worker-")


def test_node_annotations() -> None:
    anno = file_bytes(served("3.5.0"), NODE_ANNOTATIONS_PATH)
    assert anno == (
        b'{"machineconfiguration.openshift.io/currentConfig":"' + WORKER_CONFIG.encode() + b'",'
        b'"machineconfiguration.openshift.io/desiredConfig":"' + WORKER_CONFIG.encode() + b'",'
        b'"machineconfiguration.openshift.io/firstPivotConfig":"' + WORKER_CONFIG.encode() + b'",'
        b'"machineconfiguration.openshift.io/state":"Done"}')


def test_kubeconfig_is_the_raw_file() -> None:
    assert file_bytes(served("3.5.0"), KUBECONFIG_PATH) == KUBECONFIG


def test_machine_config_content_is_indented_full_object() -> None:
    text = file_bytes(served("3.2.0"), MC_CONTENT_PATH).decode()
    assert text.startswith('{\n    "kind": "MachineConfig",\n    "apiVersion": "machineconfiguration.openshift.io/v1",')
    obj = json.loads(text)
    assert list(obj["spec"]) == ["osImageURL", "baseOSExtensionsContainerImage", "config", "kernelArguments",
                                 "extensions", "fips", "kernelType"]
    # The config as stored (MCO does not rewrite it), kernel arguments migrated into the spec.
    assert obj["spec"]["config"]["ignition"]["version"] == "3.5.0"
    assert obj["spec"]["kernelArguments"] == ["nosmt"]


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_encapsulated_has_empty_config_at_requested_version(version: str) -> None:
    mc = json.loads(file_bytes(served(version), ENCAPSULATED_PATH))
    assert mc["spec"]["config"] == {"ignition": {"version": version}}
    assert mc["metadata"]["name"] == WORKER_CONFIG
    assert mc["spec"]["osImageURL"].startswith("quay.io/example/os@")


def test_controller_config_cas_override_and_append() -> None:
    config = served("3.5.0")
    files = decode_files(config)
    assert len(files[KUBELET_CA_PATH]) == 1  # replaced in place
    assert file_bytes(config, KUBELET_CA_PATH) == KUBELET_CA
    assert file_bytes(config, CLOUD_CA_PATH) == CLOUD_CA  # appended (not in the rendered config)
    paths = [f["path"] for f in config["storage"]["files"]]
    assert paths.index(CLOUD_CA_PATH) == len(paths) - 5  # before the appenders


def test_empty_controller_config_data_changes_nothing() -> None:
    config = served("3.5.0", cc=controller_config(kubelet_ca=b"", cloud_ca=b""))
    assert decode_files(config)[KUBELET_CA_PATH] == ["data:,old-ca"]
    assert CLOUD_CA_PATH not in decode_files(config)


@pytest.mark.parametrize("version", ["2.2.0", "3.0.0", "3.1.0", "3.2.0"])
def test_kernel_arguments_migrate_below_3_3(version: str) -> None:
    config = served(version, mc_kargs=["quiet"])
    assert "kernelArguments" not in config
    mc = json.loads(file_bytes(config, ENCAPSULATED_PATH))
    assert mc["spec"]["kernelArguments"] == ["quiet", "nosmt"]


@pytest.mark.parametrize("version", ["3.3.0", "3.4.0", "3.5.0", "3.6.0"])
def test_kernel_arguments_stay_from_3_3(version: str) -> None:
    config = served(version)
    assert config["kernelArguments"] == {"shouldExist": ["nosmt"]}
    assert json.loads(file_bytes(config, ENCAPSULATED_PATH))["spec"]["kernelArguments"] == []


def test_should_not_exist_cannot_be_served_below_3_3() -> None:
    cfg = ignition_config(should_not_exist=["mitigations=off"])
    with pytest.raises(ServeError, match="shouldNotExist"):
        served("3.2.0", cfg)
    assert served("3.3.0", cfg)["kernelArguments"] == {"shouldNotExist": ["mitigations=off"]}


def test_spec_22_keeps_files_units_and_ssh_keys() -> None:
    v35, v22 = served("3.5.0"), served("2.2.0")
    assert [f["path"] for f in v22["storage"]["files"]] == [f["path"] for f in v35["storage"]["files"]]
    assert all(f["filesystem"] == "root" for f in v22["storage"]["files"])
    assert [u["name"] for u in v22["systemd"]["units"]] == ["test.service"]
    assert v22["systemd"]["units"][0]["contents"] == v35["systemd"]["units"][0]["contents"]
    assert v22["passwd"]["users"] == [{"name": "core", "sshAuthorizedKeys": [SSH_KEY]}]
    assert file_bytes(v22, KUBECONFIG_PATH) == KUBECONFIG


def test_unconvertible_config_is_a_serve_error() -> None:
    cfg = ignition_config()
    cfg["storage"]["files"][1]["contents"]["compression"] = "gzip"
    cfg["storage"]["files"][1]["contents"]["source"] = "https://example.com/x.gz"
    cfg["storage"]["files"][1]["contents"]["verification"] = {}
    cfg["storage"]["luks"] = [{"name": "root", "device": "/dev/sda4", "clevis": {"tpm2": True}}]
    # A field 3.1 cannot express: refused (406 over HTTP), one line naming the field.
    with pytest.raises(ServeError, match=r"^config uses storage\.luks, which spec 3\.1\.0 cannot express$"):
        served("3.1.0", cfg)


def test_go_json_escapes_like_go() -> None:
    assert go_json({"a": "<b> & \u2028 é"}) == '{"a":"\\u003cb\\u003e \\u0026 \\u2028 é"}'.encode()
    body = json.dumps(served("3.5.0"))
    assert "Test <unit> & more" in body  # escaped on the wire, same text once decoded


def test_served_unit_text_is_go_escaped_on_the_wire(tmp_path: Path) -> None:
    base, kc = write_layout(tmp_path)
    source = BootstrapSource(base, kc)
    raw = source.build(source.resolve("worker"), "3.5.0")
    assert b"Test \\u003cunit\\u003e \\u0026 more" in raw and b"<unit>" not in raw


def test_ignition_config_not_an_object() -> None:
    mc = machine_config(WORKER_CONFIG, ignition_config())
    mc["spec"]["config"] = None
    with pytest.raises(ServeError, match="no Ignition config"):
        build_served(WORKER_CONFIG, mc, controller_config(), KUBECONFIG, "3.5.0")


def test_wrongly_typed_spec_field_is_a_serve_error_naming_it() -> None:
    # a hand-made rendered config: a one-line refusal (a 500 with its text), not an exception
    mc = machine_config(WORKER_CONFIG, ignition_config())
    mc["spec"]["fips"] = "true"
    with pytest.raises(ServeError, match=r"has an invalid spec: \$\.spec\.fips: "):
        build_served(WORKER_CONFIG, mc, controller_config(), KUBECONFIG, "3.5.0")


def test_bad_controller_config_base64() -> None:
    cc = controller_config()
    cc["spec"]["kubeAPIServerServingCAData"] = "%%%"
    with pytest.raises(ServeError, match="not base64"):
        served("3.5.0", cc=cc)


def test_served_files_use_the_library_percent_encoding() -> None:
    import os

    from machineconfig.ignition.dataurl import encode_percent as reference

    for data in (bytes(range(256)), os.urandom(4096), "ünïcode <&> ~*'()!".encode(), b""):
        mc = machine_config(WORKER_CONFIG, ignition_config())
        config = json.loads(build_served(WORKER_CONFIG, mc, controller_config(), data, "3.5.0"))
        source = decode_files(config)[KUBECONFIG_PATH][-1]
        assert source == reference(data) and decode(source) == data


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_served_config_passes_our_validator(version: str) -> None:
    from machineconfig.ignition.parse import parse
    from machineconfig.ignition.spec2 import parse_v2

    mc = machine_config(WORKER_CONFIG, ignition_config(kargs=["nosmt"]))
    body = build_served(WORKER_CONFIG, mc, controller_config(), KUBECONFIG, version)
    if version == "2.2.0":
        parse_v2(json.loads(body))
    else:
        result = parse(body)
        assert result.version == version
        assert not [line for line in result.report.lines() if line.startswith("error")]


def test_35_output_is_in_go_field_order() -> None:
    config = served("3.5.0")
    assert list(config) == ["ignition", "kernelArguments", "passwd", "storage", "systemd"]
    for f in config["storage"]["files"]:
        assert list(f) == ["overwrite", "path", "contents", "mode"]


def test_invalid_rendered_config_is_a_serve_error() -> None:
    cfg = ignition_config()
    cfg["storage"]["files"][0]["path"] = "relative/path"
    with pytest.raises(ServeError, match="not valid Ignition"):
        served("3.5.0", cfg)


def test_spec_22_rendered_config_is_accepted() -> None:
    cfg = {"ignition": {"version": "2.2.0"},
           "storage": {"files": [{"filesystem": "root", "path": "/etc/a", "mode": 420,
                                  "contents": {"source": "data:,a"}}]}}
    config = served("3.5.0", cfg)
    assert config["storage"]["files"][0]["path"] == "/etc/a"


def test_registry_cas_come_before_the_encapsulated_config() -> None:
    mc = machine_config(WORKER_CONFIG, ignition_config())
    body = build_served(WORKER_CONFIG, mc, controller_config(), KUBECONFIG, "3.5.0",
                        [("registry.example.com:5000", b"CA1")])
    config = json.loads(body)
    paths = [f["path"] for f in config["storage"]["files"]]
    assert paths[-5:] == [NODE_ANNOTATIONS_PATH, KUBECONFIG_PATH, MC_CONTENT_PATH,
                          "/etc/docker/certs.d/registry.example.com:5000/ca.crt", ENCAPSULATED_PATH]
    assert file_bytes(config, "/etc/docker/certs.d/registry.example.com:5000/ca.crt") == b"CA1"


def test_bootstrap_certs_flag_values() -> None:
    from mcs.sources.bootstrap import parse_registry_cert

    assert parse_registry_cert("quay.io=certs/quay.crt") == ("quay.io", "certs/quay.crt")
    for bad in ("quay.io", "=x", "a/b=x", "..=x", "a=b=c"):
        with pytest.raises(ValueError):
            parse_registry_cert(bad)


def test_bootstrap_certs_are_served_and_watched(tmp_path: Path) -> None:
    base, kc = write_layout(tmp_path)
    (base / "quay.crt").write_bytes(b"QUAYCA")
    source = BootstrapSource(base, kc, [("quay.io", "quay.crt")])
    resolved = source.resolve("worker")
    config = json.loads(source.build(resolved, "3.5.0"))
    assert file_bytes(config, "/etc/docker/certs.d/quay.io/ca.crt") == b"QUAYCA"
    (base / "quay.crt").write_bytes(b"QUAYCA2!")
    assert source.resolve("worker").signature != resolved.signature
