"""A node's root directory, and every path under it resolved without ever leaving it.

The rule (openat2's RESOLVE_IN_ROOT, done with an O_NOFOLLOW walk of directory fds): a node path
is resolved one component at a time from the root, as if the root were "/". ".." stops at the
root; a symlink met on the way is read and followed by the walk itself, an absolute target taken
relative to the root (as Ignition resolves links against the root it provisions), so no link can
lead outside. The last component is never followed by a change: a write renames over it, a
removal unlinks the link itself, chmod/chown refuse anything but a real directory. Reads may
follow it, under the same rule.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

# As the kernel: more links than this on one resolution is a loop.
MAX_LINKS = 40
_WALK = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_MODE = 0o755


def _split(node_path: str) -> list[str]:
    return [part for part in node_path.split("/") if part not in ("", ".")]


class NodeRoot:
    """The directory a daemon treats as "/" ("/" on a node, a tmp dir in tests)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"NodeRoot({str(self.path)!r})"

    def host_path(self, node_path: str) -> Path:
        """Where `node_path` would be without links: for messages and tools given `--root`."""
        return self.path / node_path.lstrip("/")

    # ---- resolution ----------------------------------------------------------------------
    def _walk(self, parts: list[str], node_path: str, create: bool,
              created: list[str] | None) -> tuple[int, str]:
        """An O_PATH fd of the directory `parts` lead to, and its canonical node path."""
        stack = [os.open(self.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)]
        canon: list[str] = []
        pending = list(reversed(parts))
        links = 0
        try:
            while pending:
                part = pending.pop()
                if part in ("", "."):
                    continue
                if part == "..":
                    if len(stack) > 1:
                        os.close(stack.pop())
                        canon.pop()
                    continue
                try:
                    fd = os.open(part, _WALK, dir_fd=stack[-1])
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(part, _DIR_MODE, dir_fd=stack[-1])
                    except FileExistsError:
                        pass  # a dangling link raced in: the next round reads it
                    else:
                        # mkdir's mode is filtered by the umask; Ignition's default is exactly 0755
                        self._chmod_dir(stack[-1], part, _DIR_MODE)
                        if created is not None:
                            created.append("/" + "/".join([*canon, part]))
                    pending.append(part)
                    continue
                except NotADirectoryError:
                    try:
                        target = os.readlink(part, dir_fd=stack[-1])
                    except OSError:
                        raise NotADirectoryError(
                            errno.ENOTDIR, f"{node_path}: /{'/'.join([*canon, part])} is not a "
                            "directory") from None
                    links += 1
                    if links > MAX_LINKS:
                        raise OSError(errno.ELOOP, f"{node_path}: too many levels of symbolic "
                                      "links") from None
                    if target.startswith("/"):
                        while len(stack) > 1:
                            os.close(stack.pop())
                        canon.clear()
                    pending.extend(reversed(target.split("/")))
                    continue
                stack.append(fd)
                canon.append(part)
        except BaseException:
            for fd in stack:
                os.close(fd)
            raise
        for fd in stack[:-1]:
            os.close(fd)
        return stack[-1], "/" + "/".join(canon)

    @staticmethod
    def split_parent(node_path: str) -> tuple[tuple[str, ...], str]:
        """(the components of the parent directory, the last component) of a file path; paths of
        one directory share the first (a batch resolves each directory once)."""
        parts = _split(node_path)
        if not parts or parts[-1] == "..":
            raise IsADirectoryError(errno.EISDIR, f"{node_path}: not a file path")
        return tuple(parts[:-1]), parts[-1]

    def open_parent(self, node_path: str, *, create: bool = False,
                    created: list[str] | None = None) -> tuple[int, str]:
        """`parent` without the context: the caller closes the fd."""
        parents, name = self.split_parent(node_path)
        fd, _ = self._walk(list(parents), node_path, create, created)
        return fd, name

    @contextlib.contextmanager
    def parent(self, node_path: str, *, create: bool = False,
               created: list[str] | None = None) -> Iterator[tuple[int, str]]:
        """(fd of the resolved parent directory, last component); with `create` the missing
        directories are made 0755 and their node paths appended to `created`."""
        fd, name = self.open_parent(node_path, create=create, created=created)
        try:
            yield fd, name
        finally:
            os.close(fd)

    def directories(self, *, create: bool = False,
                    created: list[str] | None = None) -> ParentDirectories:
        """The parent directories of many paths, each resolved once (see ParentDirectories)."""
        return ParentDirectories(self, create=create, created=created)

    def canonical(self, node_path: str, follow: bool = True) -> str:
        """The node path `node_path` resolves to (links followed inside the root); the last
        component is followed only with `follow`."""
        for _ in range(MAX_LINKS):
            parts = _split(node_path)
            fd, parent = self._walk(parts[:-1], node_path, False, None)
            try:
                if not parts:
                    return "/"
                if parts[-1] == "..":
                    return parent.rsplit("/", 1)[0] or "/"
                name = parts[-1]
                joined = parent.rstrip("/") + "/" + name
                if not follow:
                    return joined
                try:
                    target = os.readlink(name, dir_fd=fd)
                except OSError:
                    return joined
            finally:
                os.close(fd)
            node_path = target if target.startswith("/") else parent + "/" + target
        raise OSError(errno.ELOOP, f"{node_path}: too many levels of symbolic links")

    def directory(self, node_path: str, *, create: bool = False,
                  created: list[str] | None = None) -> int:
        """An O_PATH fd of the directory at `node_path` (links inside the root followed)."""
        fd, _ = self._walk(_split(node_path), node_path, create, created)
        return fd

    # ---- reads ---------------------------------------------------------------------------
    def lstat(self, node_path: str) -> os.stat_result | None:
        """The last component's own stat (a link is not followed); None when absent."""
        try:
            with self.parent(node_path) as (fd, name):
                return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def stat(self, node_path: str) -> os.stat_result | None:
        try:
            return self.lstat(self.canonical(node_path))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def lstat_contents(self, node_path: str) -> tuple[os.stat_result | None, bytes | str | None]:
        """In one resolution, the last component's own stat and what it holds: a regular file's
        bytes, a link's target (never followed), None for anything else; (None, None) when absent."""
        try:
            dir_fd, name = self.open_parent(node_path)
        except (FileNotFoundError, NotADirectoryError):
            return None, None
        try:
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                return None, None
            if stat.S_ISLNK(st.st_mode):
                return st, os.readlink(name, dir_fd=dir_fd)
            if not stat.S_ISREG(st.st_mode):
                return st, None
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise IsADirectoryError(errno.EISDIR, f"{node_path}: not a regular file")
            return st, handle.read()

    def lexists(self, node_path: str) -> bool:
        return self.lstat(node_path) is not None

    def is_symlink(self, node_path: str) -> bool:
        st = self.lstat(node_path)
        return st is not None and stat.S_ISLNK(st.st_mode)

    def is_file(self, node_path: str) -> bool:
        """A regular file, following a final link inside the root."""
        st = self.stat(node_path)
        return st is not None and stat.S_ISREG(st.st_mode)

    def is_dir(self, node_path: str) -> bool:
        st = self.stat(node_path)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def readlink(self, node_path: str) -> str:
        with self.parent(node_path) as (fd, name):
            return os.readlink(name, dir_fd=fd)

    def open(self, node_path: str, follow: bool = False) -> int:
        """A read-only fd of the regular file at `node_path`; a final link is an error unless
        `follow` (then resolved inside the root)."""
        if follow:
            node_path = self.canonical(node_path)
        with self.parent(node_path) as (dir_fd, name):
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=dir_fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise IsADirectoryError(errno.EISDIR, f"{node_path}: not a regular file")
        return fd

    def read_bytes(self, node_path: str, follow: bool = True) -> bytes:
        with os.fdopen(self.open(node_path, follow), "rb") as handle:
            return handle.read()

    def read_text(self, node_path: str, follow: bool = True) -> str:
        return self.read_bytes(node_path, follow).decode()

    def _open_directory(self, node_path: str) -> int:
        """A readable fd of the directory at `node_path` (`directory` gives an O_PATH one,
        which can neither be listed nor fsynced)."""
        fd = self.directory(node_path)
        try:
            return os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
        finally:
            os.close(fd)

    def listdir(self, node_path: str) -> list[str]:
        dfd = self._open_directory(node_path)
        try:
            return os.listdir(dfd)
        finally:
            os.close(dfd)

    # ---- changes -------------------------------------------------------------------------
    @staticmethod
    def _chmod_dir(dir_fd: int, name: str, mode: int, uid: int = -1, gid: int = -1) -> None:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=dir_fd)
        try:
            if uid != -1 or gid != -1:
                os.fchown(fd, uid, gid)  # before chmod: chown clears setgid
            os.fchmod(fd, mode)
        finally:
            os.close(fd)

    def makedirs(self, node_path: str, created: list[str] | None = None) -> None:
        fd, _ = self._walk(_split(node_path), node_path, True, created)
        os.close(fd)

    def set_dir_attrs(self, node_path: str, mode: int, uid: int = -1, gid: int = -1) -> None:
        """chown and chmod a real directory (a link there is refused, never followed)."""
        with self.parent(node_path) as (fd, name):
            self._chmod_dir(fd, name, mode, uid, gid)

    def unlink(self, node_path: str) -> None:
        with self.parent(node_path) as (fd, name):
            os.unlink(name, dir_fd=fd)

    def rmdir(self, node_path: str) -> None:
        with self.parent(node_path) as (fd, name):
            os.rmdir(name, dir_fd=fd)

    def rename(self, src: str, dst: str) -> None:
        with self.parent(src) as (sfd, sname), self.parent(dst) as (dfd, dname):
            os.rename(sname, dname, src_dir_fd=sfd, dst_dir_fd=dfd)

    def fsync_dir(self, node_path: str) -> None:
        dfd = self._open_directory(node_path)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


class ParentDirectories:
    """The parent directories of many node paths (a write batch's, a validation pass's), each
    resolved inside the root once: the paths of one directory share its fd, one lookup per
    directory instead of one per path. A directory that does not resolve is not remembered (it
    is tried again for each of its paths). With `create`, missing directories are made as by
    `NodeRoot.parent`. Close it (or use it as a context manager) to close the fds."""

    def __init__(self, root: NodeRoot, *, create: bool = False,
                 created: list[str] | None = None) -> None:
        self.root = root
        self.create = create
        self.created = created
        self._fds: dict[tuple[str, ...], int] = {}

    def parent(self, node_path: str) -> tuple[int, str]:
        """(fd of the resolved parent directory, last component); the fd stays open until
        `close`, the caller does not close it."""
        parents, name = self.root.split_parent(node_path)
        fd = self._fds.get(parents)
        if fd is None:
            fd = self._fds[parents] = self.root.open_parent(node_path, create=self.create,
                                                            created=self.created)[0]
        return fd, name

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> ParentDirectories:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
