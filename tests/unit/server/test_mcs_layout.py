"""A bootstrap layout written by the tests (what `mcc render --out DIR` produces), shared by the
mcs tests, and the tests of reading it: pool choice, inputs, invalidation signatures.
"""
from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcs.sources import choose_config
from mcs.sources.bootstrap import BootstrapSource
from mcs.serve import NotFound, ServeError

WORKER_CONFIG = "rendered-worker-0123456789abcdef0123456789abcdef"
WORKER_CONFIG_NEW = "rendered-worker-fedcba9876543210fedcba9876543210"
MASTER_CONFIG = "rendered-master-00112233445566778899aabbccddeeff"
KUBECONFIG = b"apiVersion: v1\nkind: Config\nusers:\n- name: kubelet\n  user:\n    token: s3cr3t-bootstrap-token\n"
KUBELET_CA = b"-----BEGIN CERTIFICATE-----\nKUBELETCA\n-----END CERTIFICATE-----\n"
CLOUD_CA = b"-----BEGIN CERTIFICATE-----\nCLOUDCA\n-----END CERTIFICATE-----\n"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests core@example"


def ignition_config(kargs: list[str] | None = None, should_not_exist: list[str] | None = None,
                    extra_files: int = 0) -> dict[str, Any]:
    """A rendered 3.5.0 config with files (one with <, & that Go escapes), units and an SSH key."""
    files: list[dict[str, Any]] = [
        {"overwrite": True, "path": "/etc/kubernetes/kubelet-ca.crt",
         "contents": {"source": "data:,old-ca"}, "mode": 420},
        {"overwrite": True, "path": "/etc/motd",
         "contents": {"source": "data:,hello%20%3Cworld%3E%20%26%20more%0A"}, "mode": 420},
    ]
    for i in range(extra_files):
        files.append({"overwrite": True, "path": f"/etc/extra/file-{i:05d}.conf",
                      "contents": {"source": "data:,x%3D" + "y" * 200}, "mode": 420})
    config: dict[str, Any] = {
        "ignition": {"version": "3.5.0"},
        "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": [SSH_KEY]}]},
        "storage": {"files": files},
        "systemd": {"units": [
            {"contents": "[Unit]\nDescription=Test <unit> & more\n[Service]\nExecStart=/bin/true\n"
                         "[Install]\nWantedBy=multi-user.target\n",
             "enabled": True, "name": "test.service"},
        ]},
    }
    if kargs or should_not_exist:
        ka: dict[str, Any] = {}
        if kargs:
            ka["shouldExist"] = kargs
        if should_not_exist:
            ka["shouldNotExist"] = should_not_exist
        config["kernelArguments"] = ka
    return config


def machine_config(name: str, config: dict[str, Any], kernel_arguments: list[str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "machineconfiguration.openshift.io/v1",
        "kind": "MachineConfig",
        "metadata": {
            "name": name,
            # No generated-by-controller-version: the name is made up, not the hash of the spec
            # (the local store checks that hash for what a controller rendered).
            "annotations": {"machineconfiguration.openshift.io/release-image-version": "4.99.0"},
            "ownerReferences": [{"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfigPool",
                                 "name": name.split("-")[1], "uid": "", "controller": True,
                                 "blockOwnerDeletion": True}],
            "creationTimestamp": None,
        },
        "spec": {
            "osImageURL": "quay.io/example/os@sha256:" + "0" * 64,
            "baseOSExtensionsContainerImage": "",
            "config": config,
            "kernelArguments": kernel_arguments or [],
            "extensions": [],
            "fips": False,
            "kernelType": "default",
        },
    }


def pool(name: str, status_config: str, spec_config: str | None = None, updated: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "machineconfiguration.openshift.io/v1",
        "kind": "MachineConfigPool",
        "metadata": {"name": name},
        "spec": {"configuration": {"name": spec_config or status_config}},
        "status": {"configuration": {"name": status_config}, "updatedMachineCount": updated},
    }


def controller_config(kubelet_ca: bytes = KUBELET_CA, cloud_ca: bytes = CLOUD_CA) -> dict[str, Any]:
    return {
        "apiVersion": "machineconfiguration.openshift.io/v1",
        "kind": "ControllerConfig",
        "metadata": {"name": "machine-config-controller"},
        "spec": {"kubeAPIServerServingCAData": base64.b64encode(kubelet_ca).decode(),
                 "cloudProviderCAData": base64.b64encode(cloud_ca).decode() if cloud_ca else ""},
    }


def write_yaml(path: Path, obj: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(obj, sort_keys=True))
    tmp.replace(path)  # atomic, as `mcc render` and any careful writer do


def write_layout(root: Path, worker_config: dict[str, Any] | None = None,
                 worker_kargs: list[str] | None = None) -> tuple[Path, Path]:
    """DIR with pools worker and master, their rendered configs and the ControllerConfig; returns
    (DIR, kubeconfig path)."""
    base = root / "bootstrap"
    cfg = worker_config if worker_config is not None else ignition_config(kargs=["nosmt"])
    write_yaml(base / "machine-configs" / f"{WORKER_CONFIG}.yaml",
               machine_config(WORKER_CONFIG, cfg, kernel_arguments=worker_kargs))
    write_yaml(base / "machine-configs" / f"{MASTER_CONFIG}.yaml",
               machine_config(MASTER_CONFIG, ignition_config()))
    # An input MachineConfig lives beside the rendered ones, as in MCO's bootstrap output.
    write_yaml(base / "machine-configs" / "00-worker.yaml", machine_config("00-worker", ignition_config()))
    write_yaml(base / "machine-pools" / "worker.yaml", pool("worker", WORKER_CONFIG))
    write_yaml(base / "machine-pools" / "master.yaml", pool("master", MASTER_CONFIG))
    write_yaml(base / "controller-config" / "machine-config-controller.yaml", controller_config())
    kubeconfig = root / "kubeconfig"
    kubeconfig.write_bytes(KUBECONFIG)
    return base, kubeconfig


def decode_files(served: dict[str, Any]) -> dict[str, list[str]]:
    """path -> list of data URL sources (a path may appear more than once)."""
    out: dict[str, list[str]] = {}
    for f in served.get("storage", {}).get("files", []):
        out.setdefault(f["path"], []).append(f["contents"]["source"])
    return out


# -- tests of reading the layout -------------------------------------------------------------------

def test_pools_lists_every_pool(tmp_path: Path) -> None:
    base, kc = write_layout(tmp_path)
    assert BootstrapSource(base, kc).pools() == ["master", "worker"]


def test_choose_config_follows_mco() -> None:
    assert choose_config(pool("worker", "a", "b", updated=0)) == "a"
    assert choose_config(pool("worker", "a", "b", updated=2)) == "b"
    only_spec = pool("worker", "", "b")
    assert choose_config(only_spec) == "b"


def test_resolve_and_signature_changes(tmp_path: Path) -> None:
    base, kc = write_layout(tmp_path)
    source = BootstrapSource(base, kc)
    first = source.resolve("worker")
    assert first.config_name == WORKER_CONFIG
    assert source.resolve("worker").signature == first.signature
    write_yaml(base / "controller-config" / "machine-config-controller.yaml", controller_config(cloud_ca=b""))
    assert source.resolve("worker").signature != first.signature


def test_resolve_missing(tmp_path: Path) -> None:
    base, kc = write_layout(tmp_path)
    source = BootstrapSource(base, kc)
    with pytest.raises(NotFound):
        source.resolve("infra")
    write_yaml(base / "machine-pools" / "infra.yaml", pool("infra", "rendered-infra-missing"))
    with pytest.raises(NotFound):
        source.resolve("infra")


def test_pool_file_cannot_point_outside(tmp_path: Path) -> None:
    base, kc = write_layout(tmp_path)
    write_yaml(base / "machine-pools" / "evil.yaml", pool("evil", "../../etc/passwd"))
    with pytest.raises(ServeError):
        BootstrapSource(base, kc).resolve("evil")


def test_missing_controller_config_is_500(tmp_path: Path) -> None:
    base, kc = write_layout(tmp_path)
    (base / "controller-config" / "machine-config-controller.yaml").unlink()
    source = BootstrapSource(base, kc)
    with pytest.raises(ServeError, match="controller config"):
        source.build(source.resolve("worker"), "3.5.0")


def test_fixture_is_json_clean(tmp_path: Path) -> None:
    # The fixture survives the YAML round trip unchanged (the server reads YAML).
    base, _ = write_layout(tmp_path)
    loaded = yaml.safe_load((base / "machine-configs" / f"{WORKER_CONFIG}.yaml").read_text())
    assert json.loads(json.dumps(loaded["spec"]["config"])) == copy.deepcopy(ignition_config(kargs=["nosmt"]))
