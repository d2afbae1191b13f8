"""MCO's certificate writer: CA bundles from the ControllerConfig written to the node outside
MachineConfigs, so that a paused pool still gets rotated certificates (spec/mco.md 5.17).

When the ControllerConfig's resourceVersion differs from the node's
`lastSyncedControllerConfigResourceVersion` annotation, the daemon writes

- /etc/kubernetes/kubelet-ca.crt                                             kubeAPIServerServingCAData
- /etc/kubernetes/static-pod-resources/configmaps/cloud-config/ca-bundle.pem  cloudProviderCAData
- /etc/mco/internal-registry-pull-secret.json                                internalRegistryPullSecret
- /etc/docker/certs.d/<file, ".." read as ":">/ca.crt                        imageRegistryBundleData and
                                                                             imageRegistryBundleUserData

(each ending in a newline; an existing file keeps its mode, a new one is 0644, the pull secret
0600), removes the directories under /etc/docker/certs.d that no bundle names any more, and
records the resourceVersion. Every path is resolved inside the root (mcd.noderoot).

The service-CA rotation (`rotate_kubeconfig_ca`): when the ControllerConfig says
`service-ca-rotate: "true"` and the node has not observed it yet, the kube-apiserver CA bundle MCO
publishes (ConfigMap kubeconfig-data) is compared with the one in /etc/kubernetes/kubeconfig;
certificates it adds are written there (every valid certificate of the bundle, in its order), and
unless each added one is a signer MCO knows to rotate during upgrades, the kubelet's own
/var/lib/kubelet/kubeconfig gets the same CA data and the kubelet is restarted.
"""
from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from cryptography import x509

from machineconfig.errors import MachineConfigError
from mcd.file_writers import Journal, atomic_write
from mcd.noderoot import NodeRoot

log = logging.getLogger(__name__)

KUBELET_CA = "/etc/kubernetes/kubelet-ca.crt"
CLOUD_CA = "/etc/kubernetes/static-pod-resources/configmaps/cloud-config/ca-bundle.pem"
INTERNAL_REGISTRY_PULL_SECRET = "/etc/mco/internal-registry-pull-secret.json"
IMAGE_CA_DIR = "/etc/docker/certs.d"
KUBECONFIG = "/etc/kubernetes/kubeconfig"
KUBELET_KUBECONFIG = "/var/lib/kubelet/kubeconfig"
END_CERTIFICATE = "-----END CERTIFICATE-----"
# signers that rotate during upgrades: a new one of them alone does not restart the kubelet (MCO)
QUIET_SIGNERS = ("kube-apiserver-localhost-signer",
                 "openshift-kube-apiserver-operator_localhost-recovery-serving-signer",
                 "kube-apiserver-lb-signer")
DEFAULT_MODE, SECRET_MODE = 0o644, 0o600
# a registry directory name: host[:port] as MCO writes it ("..", the ConfigMap key's ":")
_REGISTRY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]*(:[0-9]{1,5})?$")


class CertificateError(MachineConfigError, ValueError):
    """A ControllerConfig field the writer cannot use (one line naming it)."""


def _bytes(spec: Mapping[str, Any], field: str) -> bytes:
    value = spec.get(field)
    if value in (None, ""):
        return b""
    if not isinstance(value, str):
        raise CertificateError(f"ControllerConfig spec.{field}: a base64 string is required")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise CertificateError(f"ControllerConfig spec.{field}: not base64 ({e})") from e


def _bundles(spec: Mapping[str, Any]) -> dict[str, bytes]:
    """Registry directory name -> CA data, user bundles after the cluster's (as MCO writes)."""
    out: dict[str, bytes] = {}
    for field in ("imageRegistryBundleData", "imageRegistryBundleUserData"):
        entries = spec.get(field) or []
        if not isinstance(entries, list):
            raise CertificateError(f"ControllerConfig spec.{field}: a list is required")
        for index, entry in enumerate(entries):
            where = f"ControllerConfig spec.{field}[{index}]"
            name = entry.get("file") if isinstance(entry, Mapping) else None
            if not isinstance(name, str):
                raise CertificateError(f"{where}.file: a string is required")
            directory = name.replace("..", ":")
            if not _REGISTRY.match(directory) or len(directory) > 255:
                raise CertificateError(f"{where}.file: {name!r} is no registry host[..port]")
            out[directory] = _bytes(entry, "data") if entry.get("data") else b""
    return out


def _with_newline(data: bytes) -> bytes:
    return data if data.endswith(b"\n") else data + b"\n"


def _write(fs: NodeRoot, journal: Journal, path: str, data: bytes, new_mode: int) -> None:
    st = fs.lstat(path)
    mode = (st.st_mode & 0o7777) if st is not None else new_mode
    uid, gid = (st.st_uid, st.st_gid) if st is not None else (0, 0)
    fs.makedirs(path.rsplit("/", 1)[0], journal.created_dirs)
    journal.record(path)
    atomic_write(fs, path, _with_newline(data), mode, uid, gid, journal)


def sync_certificates(root: os.PathLike[str] | str, controller_config: Mapping[str, Any]) -> list[str]:
    """Write the ControllerConfig's CA bundles under `root`; the paths written or removed.
    Raises CertificateError (nothing written) for a field it cannot use, OSError for a write
    that failed (what was written is rolled back)."""
    spec = controller_config.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise CertificateError("ControllerConfig spec: a mapping is required")
    files = {KUBELET_CA: (_bytes(spec, "kubeAPIServerServingCAData"), DEFAULT_MODE),
             CLOUD_CA: (_bytes(spec, "cloudProviderCAData"), DEFAULT_MODE),
             INTERNAL_REGISTRY_PULL_SECRET: (_bytes(spec, "internalRegistryPullSecret"),
                                             SECRET_MODE)}
    bundles = _bundles(spec)
    fs = NodeRoot(os.fspath(root))
    journal = Journal(fs)
    changed: list[str] = []
    try:
        for path, (data, mode) in files.items():
            _write(fs, journal, path, data, mode)
            changed.append(path)
        for directory, data in bundles.items():
            path = f"{IMAGE_CA_DIR}/{directory}/ca.crt"
            _write(fs, journal, path, data, DEFAULT_MODE)
            changed.append(path)
        journal.sync()
    except OSError:
        journal.rollback()
        raise
    if fs.is_dir(IMAGE_CA_DIR):
        for name in sorted(fs.listdir(IMAGE_CA_DIR)):
            stale = f"{IMAGE_CA_DIR}/{name}"
            if name in bundles or not fs.is_dir(stale):
                continue
            for inner in fs.listdir(stale):
                fs.unlink(f"{stale}/{inner}")
            fs.rmdir(stale)
            changed.append(stale)
            log.info("removed %s: no registry bundle names it any more", stale)
    return changed


@dataclass
class Rotation:
    """What `rotate_kubeconfig_ca` did: the paths written, the subjects (CN) the bundle added,
    and whether the kubelet must restart to trust them."""
    written: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    restart_kubelet: bool = False


def _split_certs(bundle: str) -> list[str]:
    """A PEM bundle cut after each END line, as Go's strings.SplitAfter does (the text before
    each certificate stays with it; what follows the last one is the last piece)."""
    pieces = bundle.strip().split(END_CERTIFICATE)
    return [p + END_CERTIFICATE for p in pieces[:-1]] + [pieces[-1]]


def _certificate(piece: str) -> tuple[bool, x509.Certificate | None]:
    """(whether `piece` holds a PEM block at all, its certificate or None when malformed)."""
    if "-----BEGIN" not in piece:
        return False, None
    try:
        return True, x509.load_pem_x509_certificate(piece.strip().encode())
    except ValueError:
        return True, None


def _common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _kubeconfig(fs: NodeRoot, path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The kubeconfig at `path` and its first cluster's `cluster` mapping."""
    try:
        doc = yaml.safe_load(fs.read_text(path))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CertificateError(f"{path}: not a kubeconfig ({e})") from e
    clusters = doc.get("clusters") if isinstance(doc, dict) else None
    first = clusters[0] if isinstance(clusters, list) and clusters else None
    cluster = first.get("cluster") if isinstance(first, dict) else None
    if not isinstance(cluster, dict):
        raise CertificateError(f"{path}: clusters[0].cluster: a mapping is required")
    return doc, cluster


def _ca_data(cluster: Mapping[str, Any], path: str) -> str:
    value = cluster.get("certificate-authority-data") or ""
    try:
        return base64.b64decode(str(value), validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError) as e:
        raise CertificateError(f"{path}: clusters[0].cluster.certificate-authority-data: "
                               f"not base64 PEM ({e})") from e


def _write_kubeconfig(fs: NodeRoot, journal: Journal, path: str, doc: dict[str, Any],
                      cluster: dict[str, Any], ca: str) -> None:
    cluster["certificate-authority-data"] = base64.b64encode(ca.encode()).decode()
    data = yaml.safe_dump(doc, default_flow_style=False, sort_keys=False).encode()
    _write(fs, journal, path, data, SECRET_MODE)


def rotate_kubeconfig_ca(root: os.PathLike[str] | str, bundle: bytes) -> Rotation:
    """MCO's service-CA rotation of the node's kubeconfig (see the module docstring). A node
    without /etc/kubernetes/kubeconfig has nothing to rotate. Raises CertificateError for a
    kubeconfig it cannot read (nothing written), OSError for a failed write (rolled back)."""
    fs = NodeRoot(os.fspath(root))
    done = Rotation()
    if not fs.lexists(KUBECONFIG):
        log.info("service-CA rotation: no %s on this node, nothing to rotate", KUBECONFIG)
        return done
    doc, cluster = _kubeconfig(fs, KUBECONFIG)
    on_disk = _ca_data(cluster, KUBECONFIG)
    try:
        wanted = bundle.decode()
    except UnicodeDecodeError as e:
        raise CertificateError(f"kubeconfig-data ca-bundle.crt: not PEM text ({e})") from e
    if on_disk.strip() == wanted.strip():
        return done
    disk_certs = _split_certs(on_disk)
    full: list[str] = []
    added: list[tuple[bool, x509.Certificate | None]] = []
    for piece in _split_certs(wanted):
        pem, cert = _certificate(piece)
        if piece not in disk_certs:
            added.append((pem, cert))
        if not pem:
            break  # MCO stops at the first piece without a PEM block
        if cert is None:
            log.warning("service-CA rotation: a malformed certificate in kubeconfig-data is "
                        "not synced")
            continue
        full.append(piece)
    if not added:
        return done
    restart = False
    for pem, cert in added:
        if not pem:
            break
        if cert is None:
            continue
        name = _common_name(cert)
        done.added.append(name)
        if not any(signer in name for signer in QUIET_SIGNERS):
            restart = True
    if not full:
        return done
    journal = Journal(fs)
    try:
        _write_kubeconfig(fs, journal, KUBECONFIG, doc, cluster, "".join(full))
        done.written.append(KUBECONFIG)
        if restart and fs.lexists(KUBELET_KUBECONFIG):
            kubelet_doc, kubelet_cluster = _kubeconfig(fs, KUBELET_KUBECONFIG)
            _write_kubeconfig(fs, journal, KUBELET_KUBECONFIG, kubelet_doc, kubelet_cluster,
                              "".join(full))
            done.written.append(KUBELET_KUBECONFIG)
        journal.sync()
    except (OSError, CertificateError):
        journal.rollback()
        raise
    done.restart_kubelet = restart
    log.info("service-CA rotation: %s gets %d certificates (added: %s)%s", KUBECONFIG,
             len(full), ", ".join(done.added) or "none valid",
             "; the kubelet restarts" if restart else "; no kubelet restart (upgrade signers)")
    return done
