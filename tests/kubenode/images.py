"""OCI image layouts written directly (no registry, no builder): one uncompressed layer of the
given files, a config and a manifest, tagged in index.json; CRI-O storage takes them in with
`copyimg` (harness.KubeCluster.load_image). Deterministic: same files, same digests.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PAUSE = "localhost/pause:3.10"
BUSYBOX = "localhost/busybox:latest"


@dataclass(frozen=True)
class Entry:
    """One path in the layer: a file's bytes (with mode) or a symlink's target."""
    data: bytes = b""
    mode: int = 0o755
    link: str = ""


def _blob(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"sha256:{digest}"


def _layer(entries: Mapping[str, Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(Path(p).parent) for p in entries} - {".", "/"})
        for d in dirs:
            info = tarfile.TarInfo(d.lstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path in sorted(entries):
            entry = entries[path]
            info = tarfile.TarInfo(path.lstrip("/"))
            if entry.link:
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.link, 0o777
                tar.addfile(info)
            else:
                info.size, info.mode = len(entry.data), entry.mode
                tar.addfile(info, io.BytesIO(entry.data))
    return buf.getvalue()


def write_layout(layout: Path, reference: str, entries: Mapping[str, Entry],
                 entrypoint: list[str] | None = None, cmd: list[str] | None = None) -> str:
    """Write an OCI image layout at `layout` holding one image tagged `reference`; returns the
    manifest digest."""
    shutil.rmtree(layout, ignore_errors=True)
    layout.mkdir(parents=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    layer = _layer(entries)
    layer_digest = _blob(layout, layer)
    config: dict[str, object] = {"Env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"]}
    if entrypoint:
        config["Entrypoint"] = entrypoint
    if cmd:
        config["Cmd"] = cmd
    config_bytes = json.dumps({
        "architecture": "amd64", "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "machine-config tests (tests/kubenode/images.py)"}],
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _blob(layout, config_bytes), "size": len(config_bytes)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": len(layer)}],
    }, sort_keys=True).encode()
    manifest_digest = _blob(layout, manifest)
    (layout / "index.json").write_text(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": len(manifest),
                       "annotations": {"org.opencontainers.image.ref.name":
                                       reference.rsplit(":", 1)[-1]}}]}, sort_keys=True))
    return manifest_digest


def pause_layout(layout: Path, pause_binary: Path) -> str:
    """localhost/pause:3.10: a static pause at /pause (CRI-O's default pause_command)."""
    return write_layout(layout, PAUSE, {"/pause": Entry(pause_binary.read_bytes())},
                        entrypoint=["/pause"])


def busybox_layout(layout: Path, busybox_binary: Path, applets: list[str]) -> str:
    """localhost/busybox:latest: Debian's busybox-static with a link per applet; runs `sh`."""
    entries = {"/bin/busybox": Entry(busybox_binary.read_bytes())}
    for applet in applets:
        if applet != "busybox":
            entries.setdefault(f"/bin/{applet}", Entry(link="busybox"))
    for d in ("/tmp", "/etc"):
        entries[f"{d}/.keep"] = Entry(b"", 0o644)
    return write_layout(layout, BUSYBOX, entries, cmd=["sh"])
