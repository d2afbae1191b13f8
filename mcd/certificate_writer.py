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
records the resourceVersion. Every path is resolved inside the root (mcd.noderoot). Not done:
the service-CA rotation of /etc/kubernetes/kubeconfig (MCO's `service-ca-rotate` annotation).
"""
from __future__ import annotations

import base64
import binascii
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

from mcd.file_writers import Journal, atomic_write
from mcd.noderoot import NodeRoot

log = logging.getLogger(__name__)

KUBELET_CA = "/etc/kubernetes/kubelet-ca.crt"
CLOUD_CA = "/etc/kubernetes/static-pod-resources/configmaps/cloud-config/ca-bundle.pem"
INTERNAL_REGISTRY_PULL_SECRET = "/etc/mco/internal-registry-pull-secret.json"
IMAGE_CA_DIR = "/etc/docker/certs.d"
DEFAULT_MODE, SECRET_MODE = 0o644, 0o600
# a registry directory name: host[:port] as MCO writes it ("..", the ConfigMap key's ":")
_REGISTRY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]*(:[0-9]{1,5})?$")


class CertificateError(ValueError):
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
