"""Rendered MachineConfigs as files `<state>/rendered/<name>.json`, replaced atomically.

A reader sees the old file or the new one, never a mix: write a temporary file, fsync it, rename
it over the old one, fsync the directory so the rename itself survives a crash.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from machineconfig.store.base import NotFoundError, StoreError

log = logging.getLogger(__name__)

SUFFIX = ".json"
TEMP_PREFIX = ".tmp-"
STALE_TEMP_SECONDS = 600


def check_name(name: object) -> str:
    """A rendered name must be a plain file name (it becomes one)."""
    if not isinstance(name, str) or not name or name.startswith(".") or "/" in name \
            or "\0" in name or len(name) > 253:
        raise StoreError(f"invalid rendered config name {name!r}")
    return name


def atomic_write(path: str, data: bytes) -> None:
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX, suffix=SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(directory)


def fsync_dir(directory: str) -> None:
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class RenderedDir:
    """The directory of rendered configs."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(path, mode=0o700, exist_ok=True)  # rendered configs hold the pull secret
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

    def put(self, mc: Mapping[str, Any]) -> bool:
        """Write `mc`; False when the file already holds exactly this content."""
        meta = mc.get("metadata")
        name = check_name(meta.get("name") if isinstance(meta, Mapping) else None)
        data = (json.dumps(mc, indent=2, sort_keys=False) + "\n").encode()
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
            atomic_write(path, data)
        except OSError as e:
            raise StoreError(f"{path}: cannot write: {e.strerror}") from e
        log.debug("rendered config %s written", name)
        return True

    def get(self, name: str) -> dict[str, Any]:
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
        except ValueError as e:
            raise StoreError(f"{path}: corrupt rendered config: {e}") from e
        if not isinstance(obj, dict):
            raise StoreError(f"{path}: corrupt rendered config: not an object")
        return obj

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
