"""Shared fixtures for the template, kubelet-config and container-runtime-config tests: a sample
ControllerConfig, the repository's template tree, and an Ignition validity check."""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from machineconfig.ignition.dataurl import decode
from machineconfig.ignition.parse import parse

TEMPLATES = Path(__file__).resolve().parents[2] / "ignition-templates"
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAKHHIGtestonly\n-----END CERTIFICATE-----\n"
PULL_SECRET = '{"auths": {"quay.io": {"auth": "dXNlcjpwYXNz", "email": "ops@example.com"}}}'
POOL_LABEL = "pools.operator.machineconfiguration.openshift.io/"


def controller_config(platform: str = "None", topology: str = "HighlyAvailable",
                      **spec_extra: Any) -> dict[str, Any]:
    """A ControllerConfig shaped like the operator writes it (byte fields base64)."""
    ca = base64.b64encode(CA_PEM.encode()).decode()
    spec: dict[str, Any] = {
        "clusterDNSIP": "172.30.0.10",
        "cloudProviderConfig": "",
        "ipFamilies": "IPv4",
        "kubeAPIServerServingCAData": ca,
        "rootCAData": ca,
        "additionalTrustBundle": "",
        "releaseImage": "quay.io/openshift-release-dev/ocp-release:4.99.0-x86_64",
        "images": {"infraImageKey": "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:" + "3" * 64},
        "dns": {"spec": {"baseDomain": "example.com"}},
        "infra": {"status": {"platformStatus": {"type": platform},
                             "controlPlaneTopology": topology,
                             "infrastructureTopology": topology}},
        "pullSecret": {"name": "pull-secret", "namespace": "openshift-config"},
    }
    spec.update(spec_extra)
    return {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "ControllerConfig",
            "metadata": {"name": "machine-config-controller", "uid": "cc-uid"}, "spec": spec}


def pool(name: str) -> dict[str, Any]:
    return {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfigPool",
            "metadata": {"name": name, "labels": {POOL_LABEL + name: ""}}}


def selector(pool_name: str) -> dict[str, Any]:
    return {"matchLabels": {POOL_LABEL + pool_name: ""}}


def by_name(mcs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {mc["metadata"]["name"]: mc for mc in mcs}


def files(mc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["path"]: f for f in mc["spec"]["config"].get("storage", {}).get("files", [])}


def units(mc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {u["name"]: u for u in mc["spec"]["config"].get("systemd", {}).get("units", [])}


def file_text(mc: dict[str, Any], path: str) -> str:
    return decode(files(mc)[path]["contents"]["source"]).decode("utf-8")


def assert_valid_ignition(config: dict[str, Any]) -> None:
    """The config is a canonical Ignition 3.5.0 dict that our validator accepts."""
    assert config["ignition"]["version"] == "3.5.0"
    # Our validator (ignition-validate's rules) accepts it without warnings, and its canonical form
    # is exactly what we generated.
    result = parse(json.dumps(config).encode())
    assert result.version == "3.5.0"
    assert list(result.report) == [], result.report.lines()
    assert result.config == config
    for f in config.get("storage", {}).get("files", []):
        assert f["path"].startswith("/")
        decode(f["contents"]["source"])  # every data URL decodes
        assert isinstance(f.get("mode", 0o644), int)
    for u in config.get("systemd", {}).get("units", []):
        assert u["name"].count(".") >= 1
