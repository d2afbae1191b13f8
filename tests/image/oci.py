"""OCI image layouts written and read directly: a directory tree becomes a reproducible gzip'd
tar layer (sorted entries, one mtime, gzip header without a date), layers and a config become a
manifest, and `index.json` names it. The reading half checks every digest and unpacks the layers.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
# every entry of every layer carries this mtime (2026-01-01T00:00:00Z): same inputs, same digests
LAYER_MTIME = 1767225600
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


class LayoutError(RuntimeError):
    """An OCI layout is missing a blob, or a blob does not match its descriptor."""


@dataclass(frozen=True)
class Layer:
    """A gzip'd tar blob: `digest` names the compressed bytes, `diff_id` the tar inside."""
    path: Path
    digest: str
    diff_id: str
    size: int
    created_by: str

    def to_json(self) -> dict[str, object]:
        return {"path": str(self.path), "digest": self.digest, "diff_id": self.diff_id,
                "size": self.size, "created_by": self.created_by}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Layer:
        return cls(Path(str(data["path"])), str(data["digest"]), str(data["diff_id"]),
                   int(str(data["size"])), str(data["created_by"]))


class _HashingWriter:
    """A write-only file that hashes and counts what passes through it on its way to `sink`."""

    def __init__(self, sink: object) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.sink.write(data)  # type: ignore[attr-defined]
        return len(data)

    def flush(self) -> None:
        self.sink.flush()  # type: ignore[attr-defined]


def _walk(directory: Path, root: Path, exclude: frozenset[str]) -> Iterator[Path]:
    """Every path under directory, parents before children, siblings in byte order; `exclude`
    names paths relative to root whose contents (not the directory itself) stay out."""
    if str(directory.relative_to(root)) in exclude:
        return
    for name in sorted(os.listdir(directory), key=os.fsencode):
        path = directory / name
        yield path
        if path.is_dir() and not path.is_symlink():
            yield from _walk(path, root, exclude)


def write_layer(root: Path, blobs: Path, *, created_by: str, exclude: Sequence[str] = (),
                owner_root: bool = False) -> Layer:
    """Pack `root` as one layer blob into `blobs` (the layout's blobs/sha256). Device nodes,
    sockets and FIFOs are left out (the runtime provides /dev); `exclude` keeps the contents of
    those directories out; `owner_root` gives every entry uid/gid 0 (files the build copied in)."""
    blobs.mkdir(parents=True, exist_ok=True)
    skip = frozenset(exclude)
    fd, tmp_name = tempfile.mkstemp(dir=blobs, prefix=".layer-")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            compressed = _HashingWriter(out)
            # mtime=0 and no file name: the gzip header says nothing about when or where
            with gzip.GzipFile(filename="", mode="wb", fileobj=compressed,
                               mtime=0, compresslevel=6) as gz:
                plain = _HashingWriter(gz)
                with tarfile.open(fileobj=plain, mode="w|",  # type: ignore[call-overload]
                                  format=tarfile.PAX_FORMAT) as tar:
                    _add_tree(tar, root, skip, owner_root)
        digest = f"sha256:{compressed.sha.hexdigest()}"
        final = blobs / compressed.sha.hexdigest()
        os.replace(tmp, final)
        return Layer(final, digest, f"sha256:{plain.sha.hexdigest()}", compressed.size,
                     created_by)
    finally:
        tmp.unlink(missing_ok=True)


def _add_tree(tar: tarfile.TarFile, root: Path, skip: frozenset[str], owner_root: bool) -> None:
    hardlinks: dict[tuple[int, int], str] = {}
    for path in _walk(root, root, skip):
        st = path.lstat()
        arcname = str(path.relative_to(root))
        mode = st.st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
            continue
        info = tarfile.TarInfo(arcname)
        info.mode = stat.S_IMODE(mode)
        info.mtime = LAYER_MTIME
        info.uid, info.gid = (0, 0) if owner_root else (st.st_uid, st.st_gid)
        info.uname = info.gname = ""
        if stat.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        elif stat.S_ISLNK(mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(path)
            tar.addfile(info)
        elif st.st_nlink > 1 and (st.st_dev, st.st_ino) in hardlinks:
            info.type = tarfile.LNKTYPE
            info.linkname = hardlinks[(st.st_dev, st.st_ino)]
            tar.addfile(info)
        else:
            if st.st_nlink > 1:
                hardlinks[(st.st_dev, st.st_ino)] = arcname
            info.size = st.st_size
            with open(path, "rb") as data:
                tar.addfile(info, data)


def _write_blob(blobs: Path, data: bytes) -> str:
    hexdigest = hashlib.sha256(data).hexdigest()
    target = blobs / hexdigest
    if not target.exists():
        tmp = blobs / f".{hexdigest}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, target)
    return f"sha256:{hexdigest}"


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def write_layout(output: Path, layers: Sequence[Layer], *, config: Mapping[str, object],
                 refs: Sequence[str], labels: Mapping[str, str]) -> str:
    """Write an OCI image layout at `output` (an empty or absent directory, or a previous
    layout, whose blobs this one replaces) holding one image with `layers` (their blobs are
    hard-linked or copied in), the runtime `config` (Env, User, ...) and one index entry per ref
    name. Returns the manifest digest."""
    blobs = output / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    for layer in layers:
        target = blobs / layer.digest.split(":", 1)[1]
        if layer.path.resolve() != target.resolve():
            target.unlink(missing_ok=True)
            try:
                os.link(layer.path, target)
            except OSError:
                shutil.copyfile(layer.path, target)
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {**config, "Labels": dict(labels)},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": "2026-01-01T00:00:00Z", "created_by": layer.created_by}
                    for layer in layers],
    }
    config_bytes = _canonical(image_config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": _write_blob(blobs, config_bytes),
                   "size": len(config_bytes)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": layer.digest, "size": layer.size}
                   for layer in layers],
        "annotations": dict(labels),
    }
    manifest_bytes = _canonical(manifest)
    manifest_digest = _write_blob(blobs, manifest_bytes)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": MANIFEST_TYPE, "digest": manifest_digest,
                       "size": len(manifest_bytes), "annotations": {REF_NAME: ref}}
                      for ref in refs],
    }
    _write_json_atomic(output / "oci-layout", {"imageLayoutVersion": "1.0.0"})
    _write_json_atomic(output / "index.json", index)
    keep = {layer.digest.split(":", 1)[1] for layer in layers}
    keep |= {d.split(":", 1)[1] for d in (manifest["config"]["digest"], manifest_digest)}  # type: ignore[index]
    for blob in blobs.iterdir():
        if blob.name not in keep:  # a previous build's blobs
            blob.unlink()
    return manifest_digest


def _write_json_atomic(path: Path, obj: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n")
    os.replace(tmp, path)


# ---- reading -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Image:
    """One image of a layout, every digest checked."""
    manifest_digest: str
    manifest: dict[str, object]
    config: dict[str, object]
    layer_paths: list[Path]

    @property
    def compressed_size(self) -> int:
        return sum(path.stat().st_size for path in self.layer_paths)


def _blob(layout: Path, descriptor: Mapping[str, object], what: str) -> Path:
    digest = str(descriptor.get("digest", ""))
    algorithm, _, hexdigest = digest.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64:
        raise LayoutError(f"{layout}: {what}: digest {digest!r} is not sha256:<64 hex>")
    path = layout / "blobs" / "sha256" / hexdigest
    if not path.is_file():
        raise LayoutError(f"{layout}: {what}: blob {digest} is missing")
    sha = hashlib.sha256()
    with open(path, "rb") as data:
        for chunk in iter(lambda: data.read(1 << 20), b""):
            sha.update(chunk)
    if sha.hexdigest() != hexdigest:
        raise LayoutError(f"{layout}: {what}: blob content hashes to sha256:{sha.hexdigest()}, "
                          f"not {digest}")
    if path.stat().st_size != descriptor.get("size"):
        raise LayoutError(f"{layout}: {what}: blob is {path.stat().st_size} bytes, the "
                          f"descriptor says {descriptor.get('size')}")
    return path


def read_image(layout: Path, ref: str | None = None) -> Image:
    """The image `ref` names in the layout's index (the only one when ref is None), with the
    manifest, config and every layer checked against their descriptors and the config's
    diff_ids checked against the uncompressed layers."""
    if json.loads((layout / "oci-layout").read_text()).get("imageLayoutVersion") != "1.0.0":
        raise LayoutError(f"{layout}/oci-layout: imageLayoutVersion is not 1.0.0")
    index = json.loads((layout / "index.json").read_text())
    entries = [m for m in index["manifests"]
               if ref is None or m.get("annotations", {}).get(REF_NAME) == ref]
    if not entries:
        raise LayoutError(f"{layout}/index.json: no manifest named {ref!r}")
    entry = entries[0]
    if entry.get("mediaType") != MANIFEST_TYPE:
        raise LayoutError(f"{layout}/index.json: manifests[0].mediaType is {entry.get('mediaType')}")
    manifest = json.loads(_blob(layout, entry, "index.json manifests[0]").read_bytes())
    config_path = _blob(layout, manifest["config"], "manifest config")
    if manifest["config"].get("mediaType") != CONFIG_TYPE:
        raise LayoutError(f"{layout}: manifest config.mediaType is {manifest['config'].get('mediaType')}")
    config = json.loads(config_path.read_bytes())
    layers = manifest["layers"]
    diff_ids = config["rootfs"]["diff_ids"]
    if len(diff_ids) != len(layers):
        raise LayoutError(f"{layout}: config has {len(diff_ids)} diff_ids for {len(layers)} layers")
    paths = []
    for number, (descriptor, diff_id) in enumerate(zip(layers, diff_ids)):
        path = _blob(layout, descriptor, f"manifest layers[{number}]")
        sha = hashlib.sha256()
        with gzip.open(path, "rb") as plain:
            for chunk in iter(lambda: plain.read(1 << 20), b""):
                sha.update(chunk)
        if f"sha256:{sha.hexdigest()}" != diff_id:
            raise LayoutError(f"{layout}: layers[{number}] unpacks to sha256:{sha.hexdigest()}, "
                              f"config rootfs.diff_ids[{number}] says {diff_id}")
        paths.append(path)
    return Image(entry["digest"], manifest, config, paths)


def unpack(image: Image, dest: Path) -> None:
    """Apply the image's layers in order onto `dest`, as a runtime would (whiteouts remove)."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in image.layer_paths:
        with tarfile.open(path, "r:gz") as tar:
            members = []
            for member in tar:
                parent, _, base = member.name.rpartition("/")
                if base == OPAQUE:
                    target = dest / parent
                    for child in target.iterdir() if target.is_dir() else ():
                        _remove(child)
                elif base.startswith(WHITEOUT):
                    _remove(dest / parent / base[len(WHITEOUT):])
                else:
                    existing = dest / member.name
                    if not member.isdir() and (existing.exists() or existing.is_symlink()):
                        _remove(existing)
                    members.append(member)
            tar.extractall(dest, members=members, filter="fully_trusted")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
