"""mcd.certificate_writer on a tmp root: MCO's paths and bytes from a ControllerConfig, modes,
stale registry directories, bad fields refused whole, and nothing outside the root."""
from __future__ import annotations

import base64
import os
import re
import stat
from pathlib import Path

import pytest

from mcd.certificate_writer import CertificateError, sync_certificates


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


CC = {"metadata": {"name": "machine-config-controller", "resourceVersion": "7"},
      "spec": {"kubeAPIServerServingCAData": b64("-----BEGIN CERTIFICATE-----\nKUBE\n"
                                                 "-----END CERTIFICATE-----"),
               "cloudProviderCAData": b64("CLOUD\n"),
               "internalRegistryPullSecret": b64('{"auths":{}}'),
               "imageRegistryBundleData": [{"file": "image-registry.svc..5000",
                                            "data": b64("REGISTRY\n")}],
               "imageRegistryBundleUserData": [{"file": "mirror.example.com",
                                                "data": b64("MIRROR\n")}]}}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_bundles_land_where_mco_puts_them(tmp_path: Path) -> None:
    stale = tmp_path / "etc/docker/certs.d/old.example.com"
    stale.mkdir(parents=True)
    (stale / "ca.crt").write_text("OLD\n")
    (tmp_path / "etc/kubernetes").mkdir(parents=True)
    (tmp_path / "etc/kubernetes/kubelet-ca.crt").write_text("previous\n")
    os.chmod(tmp_path / "etc/kubernetes/kubelet-ca.crt", 0o640)
    sync_certificates(tmp_path, CC)
    kubelet_ca = tmp_path / "etc/kubernetes/kubelet-ca.crt"
    # a newline is added where the data has none; an existing file keeps its mode
    assert kubelet_ca.read_text() == "-----BEGIN CERTIFICATE-----\nKUBE\n-----END CERTIFICATE-----\n"
    assert mode(kubelet_ca) == 0o640
    cloud = tmp_path / "etc/kubernetes/static-pod-resources/configmaps/cloud-config/ca-bundle.pem"
    assert cloud.read_text() == "CLOUD\n" and mode(cloud) == 0o644
    secret = tmp_path / "etc/mco/internal-registry-pull-secret.json"
    assert secret.read_text() == '{"auths":{}}\n' and mode(secret) == 0o600
    # ".." in a bundle's file name is the ":" of host:port
    assert (tmp_path / "etc/docker/certs.d/image-registry.svc:5000/ca.crt").read_text() == \
        "REGISTRY\n"
    assert (tmp_path / "etc/docker/certs.d/mirror.example.com/ca.crt").read_text() == "MIRROR\n"
    assert not stale.exists()  # no bundle names it any more


@pytest.mark.parametrize(("spec", "message"), [
    ({"kubeAPIServerServingCAData": "not base64!"},
     "ControllerConfig spec.kubeAPIServerServingCAData: not base64"),
    ({"imageRegistryBundleData": [{"file": "../../etc", "data": b64("x")}]},
     "ControllerConfig spec.imageRegistryBundleData[0].file: '../../etc' is no registry"),
    ({"imageRegistryBundleUserData": [{"data": b64("x")}]},
     "ControllerConfig spec.imageRegistryBundleUserData[0].file: a string is required"),
])
def test_a_field_it_cannot_use_writes_nothing(tmp_path: Path, spec: dict[str, object],
                                              message: str) -> None:
    with pytest.raises(CertificateError, match=f"^{re.escape(message)}"):
        sync_certificates(tmp_path, {"spec": {**CC["spec"], **spec}})  # type: ignore[dict-item]
    assert list(tmp_path.iterdir()) == []


def test_a_link_in_the_root_leads_nowhere_outside(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "etc").mkdir(parents=True)
    outside.mkdir()
    os.symlink(str(outside), root / "etc/kubernetes")  # absolute: resolved inside the root
    sync_certificates(root, CC)
    assert list(outside.iterdir()) == []
