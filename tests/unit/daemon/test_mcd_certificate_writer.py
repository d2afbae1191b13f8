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


# ---- the service-CA rotation of /etc/kubernetes/kubeconfig ---------------------------------

def make_ca(common_name: str) -> str:
    """A self-signed CA certificate (PEM) with this subject CN."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


OLD_CA, SERVICE_CA, LB_SIGNER = (make_ca("admin-kubeconfig-signer"), make_ca("openshift-service-serving-signer"),
                                 make_ca("kube-apiserver-lb-signer"))


def kubeconfig(ca: str, server: str = "https://api-int.example.com:6443") -> str:
    return (f"apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n"
            f"    server: {server}\n    certificate-authority-data: {b64(ca)}\n"
            "users:\n- name: kubelet\n  user:\n    client-certificate: /var/lib/kubelet/pki/c.pem\n"
            "contexts:\n- name: kubelet\n  context:\n    cluster: local\n    user: kubelet\n"
            "current-context: kubelet\n")


def node_with_kubeconfigs(root: Path, ca: str) -> tuple[Path, Path]:
    etc, kubelet = root / "etc/kubernetes/kubeconfig", root / "var/lib/kubelet/kubeconfig"
    for path, server in ((etc, "https://api-int.example.com:6443"), (kubelet, "https://api:6443")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(kubeconfig(ca, server))
        path.chmod(0o600)
    return etc, kubelet


def ca_of(path: Path) -> str:
    import yaml
    doc = yaml.safe_load(path.read_text())
    return base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"]).decode()


def test_rotation_adds_a_new_ca_and_restarts_the_kubelet(tmp_path: Path) -> None:
    from mcd.certificate_writer import rotate_kubeconfig_ca
    import yaml
    etc, kubelet = node_with_kubeconfigs(tmp_path, OLD_CA)
    rotation = rotate_kubeconfig_ca(tmp_path, (OLD_CA + SERVICE_CA).encode())
    assert rotation.added == ["openshift-service-serving-signer"]
    assert rotation.restart_kubelet
    assert rotation.written == ["/etc/kubernetes/kubeconfig", "/var/lib/kubelet/kubeconfig"]
    for path, server in ((etc, "https://api-int.example.com:6443"), (kubelet, "https://api:6443")):
        assert ca_of(path).count("BEGIN CERTIFICATE") == 2
        assert OLD_CA.strip() in ca_of(path) and SERVICE_CA.strip() in ca_of(path)
        doc = yaml.safe_load(path.read_text())  # the rest of each kubeconfig is kept
        assert doc["clusters"][0]["cluster"]["server"] == server
        assert doc["current-context"] == "kubelet" and doc["users"][0]["name"] == "kubelet"
        assert mode(path) == 0o600


def test_rotation_of_an_upgrade_signer_writes_without_a_kubelet_restart(tmp_path: Path) -> None:
    from mcd.certificate_writer import rotate_kubeconfig_ca
    etc, kubelet = node_with_kubeconfigs(tmp_path, OLD_CA)
    before = kubelet.read_text()
    rotation = rotate_kubeconfig_ca(tmp_path, (OLD_CA + LB_SIGNER).encode())
    assert (rotation.added, rotation.restart_kubelet) == (["kube-apiserver-lb-signer"], False)
    assert LB_SIGNER.strip() in ca_of(etc)
    assert kubelet.read_text() == before  # the kubelet keeps its kubeconfig until it must restart


def test_rotation_with_nothing_new_or_no_kubeconfig_touches_nothing(tmp_path: Path) -> None:
    from mcd.certificate_writer import rotate_kubeconfig_ca
    assert rotate_kubeconfig_ca(tmp_path, SERVICE_CA.encode()).written == []  # no kubeconfig
    etc, _ = node_with_kubeconfigs(tmp_path, OLD_CA + SERVICE_CA)
    before = etc.read_text()
    # the same bundle with other whitespace, and a bundle that only drops a certificate
    for bundle in ("\n" + OLD_CA + SERVICE_CA + "\n\n", OLD_CA):
        rotation = rotate_kubeconfig_ca(tmp_path, bundle.encode())
        assert (rotation.written, rotation.restart_kubelet) == ([], False)
    assert etc.read_text() == before


def test_rotation_skips_a_malformed_certificate(tmp_path: Path) -> None:
    from mcd.certificate_writer import rotate_kubeconfig_ca
    etc, _ = node_with_kubeconfigs(tmp_path, OLD_CA)
    bad = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
    rotation = rotate_kubeconfig_ca(tmp_path, (OLD_CA + bad + SERVICE_CA).encode())
    assert rotation.added == ["openshift-service-serving-signer"] and rotation.restart_kubelet
    assert ca_of(etc).count("BEGIN CERTIFICATE") == 2 and "bm90IGEg" not in ca_of(etc)


def test_rotation_refuses_a_broken_kubeconfig_and_writes_nothing(tmp_path: Path) -> None:
    from mcd.certificate_writer import rotate_kubeconfig_ca
    etc, kubelet = node_with_kubeconfigs(tmp_path, OLD_CA)
    kubelet.write_text("clusters: [oops\n")
    before = etc.read_text()
    with pytest.raises(CertificateError, match=r"^/var/lib/kubelet/kubeconfig: not a kubeconfig"):
        rotate_kubeconfig_ca(tmp_path, (OLD_CA + SERVICE_CA).encode())
    assert etc.read_text() == before  # rolled back with the kubelet's
    etc.write_text("clusters: []\n")
    with pytest.raises(CertificateError, match=r"clusters\[0\]\.cluster: a mapping is required"):
        rotate_kubeconfig_ca(tmp_path, SERVICE_CA.encode())
