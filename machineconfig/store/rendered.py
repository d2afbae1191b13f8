"""Rendered MachineConfigs as files `<state>/rendered/<name>.json`, replaced atomically.

A reader sees the old file or the new one, never a mix: write a temporary file, fsync it, rename
it over the old one, fsync the directory so the rename itself survives a crash. A file damaged on
disk is caught on reading: a controller-rendered config must hash to its own name.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from machineconfig import yamlv2
from machineconfig.atomicfile import TEMP_PREFIX, fsync_dir, write_atomic
from machineconfig.constants import GENERATED_BY_CONTROLLER_VERSION_ANNOTATION
from machineconfig.rendered_config import RenderedConfig
from machineconfig.store.base import NotFoundError, StoreError, rendered_config

log = logging.getLogger(__name__)

# pkg/controller/render/hash.go: fixed 80 random bytes prepended to the YAML before MD5.
SALT = bytes((
    16, 124, 206, 228, 139, 56, 175, 175, 79, 229, 134, 118, 157, 154, 211, 110,
    25, 93, 47, 253, 172, 106, 37, 7, 174, 13, 160, 185, 110, 17, 87, 52,
    219, 131, 12, 206, 218, 141, 116, 135, 188, 181, 192, 151, 233, 62, 126, 165,
    64, 83, 179, 119, 15, 168, 208, 197, 146, 107, 58, 227, 133, 188, 238, 26,
    33, 26, 235, 202, 32, 173, 31, 234, 41, 144, 148, 79, 6, 206, 23, 22,
))
_HASHED_NAME = re.compile(r"rendered-(.+)-[0-9a-f]{32}")
SUFFIX = ".json"
STALE_TEMP_SECONDS = 600


def check_name(name: object) -> str:
    """A rendered name must be a plain file name (it becomes one)."""
    if not isinstance(name, str) or not name or name.startswith(".") or "/" in name \
            or "\0" in name or len(name) > 253:
        raise StoreError(f"invalid rendered config name {name!r}")
    return name


def hashed_name(pool_name: str, yaml_text: str) -> str:
    """`rendered-<pool>-<md5(salt + yaml)>` (MCO's getMachineConfigHashedName)."""
    digest = hashlib.md5(SALT + yaml_text.encode("utf-8"), usedforsecurity=False).hexdigest()
    return f"rendered-{pool_name}-{digest}"


def content_problem(name: str, mc: Mapping[str, Any]) -> str | None:
    """Why `mc` cannot be the rendered config stored as `name`, or None.

    A config our controller rendered (it carries the generated-by annotation and a hashed name)
    must hash to its name; other objects (written by other tools) only need the right name."""
    if mc.get("kind") != "MachineConfig":
        return "kind is not MachineConfig"
    meta = mc.get("metadata")
    if not isinstance(meta, Mapping) or meta.get("name") != name:
        return "metadata.name is not the file's name"
    annotations = meta.get("annotations")
    match = _HASHED_NAME.fullmatch(name)
    if match is None or not isinstance(annotations, Mapping) \
            or GENERATED_BY_CONTROLLER_VERSION_ANNOTATION not in annotations:
        return None
    try:
        expected = hashed_name(match.group(1), yamlv2.dump(mc.get("spec")))
    except Exception as e:  # noqa: BLE001 - damaged content may break the emitter any way
        return f"its spec cannot be hashed ({type(e).__name__})"
    if expected != name:
        return f"its spec hashes to {expected}"
    return None


class RenderedDir:
    """The directory of rendered configs."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(path, mode=0o700, exist_ok=True)  # rendered configs hold the pull secret
        # name -> digest of the bytes last verified (a digest, not a stat signature: an
        # in-place rewrite of the same size within one clock tick keeps mtime and inode)
        self._verified: dict[str, bytes] = {}
        self._verified_lock = threading.Lock()
        self._remove_stale_temporaries()

    def _remove_stale_temporaries(self) -> None:
        # Left by a writer killed mid-write; a live writer's file is seconds old at most.
        cutoff = time.time() - STALE_TEMP_SECONDS
        for n in os.listdir(self.path):
            if not n.startswith(TEMP_PREFIX):
                continue
            p = os.path.join(self.path, n)
            try:
                if os.stat(p).st_mtime < cutoff:
                    os.unlink(p)
                    log.info("removed stale temporary file %s", p)
            except OSError:
                pass  # another process removed or renamed it first

    def _file(self, name: str) -> str:
        return os.path.join(self.path, check_name(name) + SUFFIX)

    def put(self, rendered: RenderedConfig) -> bool:
        """Write `rendered`; False when the file already holds exactly this content."""
        name = rendered.name
        data = (json.dumps(rendered.to_dict(), indent=2, sort_keys=False) + "\n").encode()
        path = self._file(name)
        try:
            with open(path, "rb") as f:
                if f.read() == data:
                    return False
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StoreError(f"{path}: cannot read: {e.strerror}") from e
        try:
            write_atomic(path, data, suffix=SUFFIX)
        except OSError as e:
            raise StoreError(f"{path}: cannot write: {e.strerror}") from e
        log.debug("rendered config %s written", name)
        return True

    def get(self, name: str) -> RenderedConfig:
        """The config; StoreError naming the file and the damage when it is not what was
        written (unparsable, or content that does not match its name)."""
        path = self._file(name)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise NotFoundError(f"rendered config {name!r} not found") from None
        except OSError as e:
            raise StoreError(f"{path}: cannot read: {e.strerror}") from e
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise StoreError(f"{path}: corrupt rendered config: "
                             f"{' '.join(str(e).split())[:200]}") from None
        if not isinstance(obj, dict):
            raise StoreError(f"{path}: corrupt rendered config: not an object")
        signature = hashlib.sha256(data).digest()
        with self._verified_lock:
            verified = self._verified.get(name) == signature
        if not verified:
            problem = content_problem(name, obj)
            if problem is not None:
                raise StoreError(f"{path}: corrupt rendered config: {problem}")
            with self._verified_lock:
                self._verified[name] = signature
        return rendered_config(obj, path)

    def names(self) -> list[str]:
        try:
            entries = os.listdir(self.path)
        except OSError as e:
            raise StoreError(f"{self.path}: cannot list: {e.strerror}") from e
        return sorted(n[:-len(SUFFIX)] for n in entries
                      if n.endswith(SUFFIX) and not n.startswith("."))

    def delete(self, name: str) -> bool:
        """Remove the file; False when it was not there."""
        path = self._file(name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise StoreError(f"{path}: cannot delete: {e.strerror}") from e
        fsync_dir(self.path)
        return True
