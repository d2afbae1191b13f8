"""Linux inotify through libc (ctypes): one non-blocking instance, directory watches, and the
events read from it. No third-party package: three libc calls and a struct are all it takes.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from dataclasses import dataclass

from machineconfig.errors import MachineConfigError

# <sys/inotify.h>
IN_ACCESS = 0x00000001
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of NUL-padded name)
# Room for many events per read: at most one name of NAME_MAX bytes each, usually far less.
_READ_SIZE = 64 * 1024


class InotifyError(MachineConfigError, OSError):
    """An inotify call failed; `errno` says why (ENOSPC: out of watches, EMFILE: of instances)."""


@dataclass(frozen=True)
class Event:
    """One inotify event: the watch it belongs to, what happened, and the entry's name ("" when
    the event is about the watched directory itself or the queue)."""

    wd: int
    mask: int
    cookie: int
    name: str


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_init1.restype = ctypes.c_int
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_add_watch.restype = ctypes.c_int
    libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.inotify_rm_watch.restype = ctypes.c_int
    return libc


_LIBC: ctypes.CDLL | None = None


def _call_failed(what: str) -> InotifyError:
    code = ctypes.get_errno()
    return InotifyError(code, f"{what}: {os.strerror(code)}")


def parse_events(data: bytes) -> list[Event]:
    """The events in one read() of an inotify fd (the kernel never splits an event)."""
    events, offset = [], 0
    while offset + _HEADER.size <= len(data):
        wd, mask, cookie, length = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        raw = data[offset:offset + length]
        offset += length
        events.append(Event(wd, mask, cookie, os.fsdecode(raw.split(b"\0", 1)[0])))
    return events


class Inotify:
    """One inotify instance (non-blocking, close-on-exec); `fileno()` is readable when events
    are queued, `read()` returns them without blocking."""

    def __init__(self) -> None:
        global _LIBC
        if _LIBC is None:
            _LIBC = _libc()
        self._libc = _LIBC
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            raise _call_failed("inotify_init1")
        self.fd: int | None = fd

    def fileno(self) -> int:
        if self.fd is None:
            raise ValueError("inotify instance is closed")
        return self.fd

    def add_watch(self, path: str, mask: int) -> int:
        """Watch `path` for the events in `mask`; the same path twice gives the same wd. A final
        symlink is not followed (IN_DONT_FOLLOW); for paths under a root, add_watch_fd."""
        wd = self._libc.inotify_add_watch(self.fileno(), os.fsencode(path), mask | IN_DONT_FOLLOW)
        if wd < 0:
            raise _call_failed(f"inotify_add_watch {path}")
        return int(wd)

    def add_watch_fd(self, fd: int, mask: int, what: str = "") -> int:
        """Watch the directory an (O_PATH) fd refers to: the inode the fd was opened on, however
        it was reached, never whatever a path names by the time the kernel looks it up (the
        /proc/self/fd link is the kernel's own, to exactly that inode)."""
        wd = self._libc.inotify_add_watch(self.fileno(), os.fsencode(f"/proc/self/fd/{fd}"),
                                          mask)
        if wd < 0:
            raise _call_failed(f"inotify_add_watch {what or fd}")
        return int(wd)

    def rm_watch(self, wd: int) -> None:
        """Stop a watch; one the kernel already dropped (its directory is gone) is no error."""
        if self._libc.inotify_rm_watch(self.fileno(), wd) < 0 and ctypes.get_errno() != errno.EINVAL:
            raise _call_failed("inotify_rm_watch")

    def read(self) -> list[Event]:
        """Every event queued now; [] when there is none."""
        events: list[Event] = []
        while True:
            try:
                data = os.read(self.fileno(), _READ_SIZE)
            except BlockingIOError:
                return events
            if not data:
                return events
            events += parse_events(data)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __del__(self) -> None:
        # instances are few per user (fs.inotify.max_user_instances, 128 by default), and a
        # dropped monitor must give its one back
        self.close()

    def __enter__(self) -> Inotify:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
