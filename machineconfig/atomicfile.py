"""The one way this project replaces a file on its own disk, atomically and durably, and the one way
a reader notices that a file was replaced (`stat_signature`).

Write a temporary file beside the target, fsync it, rename it over the target, fsync the directory
so the rename itself survives a crash. A reader sees the old content or the new, never a mix.
Files on a node's root go through mcd's confined writer instead (mcd/file_writers.py), which does
the same steps relative to directory descriptors so no path component can lead outside the root.
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

TEMP_PREFIX = ".tmp-"


def fsync_dir(directory: str | Path) -> None:
    """Make a rename or unlink in `directory` durable."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_atomic(path: str | Path, data: bytes, *, mode: int = 0o600, suffix: str = "") -> None:
    """Replace `path` with `data`, created with `mode` (0600 unless asked: most of what this project
    writes holds a token, a key or a pull secret). The temporary file is removed on any failure."""
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX, suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode != 0o600:  # mkstemp creates 0600
                os.fchmod(f.fileno(), mode)
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


Signature = tuple[int, int, int, int]


def stat_signature(path: str | Path) -> Signature | None:
    """What changes when a file is rewritten in place or replaced by rename; None when missing."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            return None  # a name no file can have: as missing
        raise
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
