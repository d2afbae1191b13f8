"""Writing files and unit files onto a node's root: atomic writes, backups, restores, rollback.

Every change goes through a Journal that remembers what the path held before, so a failed update
can put every file, unit and key back exactly as it was.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import secrets
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from machineconfig.constants import DAEMON_DIR
from machineconfig.errors import MachineConfigError
from machineconfig.unitnames import unit_name_problem
from machineconfig.disruption import decoded_contents
from mcd.noderoot import NodeRoot

log = logging.getLogger(__name__)

ORIG_DIR = f"{DAEMON_DIR}/orig"
NOORIG_DIR = f"{DAEMON_DIR}/noorig"
SYSTEMD_DIR = "/etc/systemd/system"
DEFAULT_FILE_MODE = 0o644
DEFAULT_DIR_MODE = 0o755
# Backups of replaced files may hold secrets (a replaced /etc/shadow): readable by root only,
# with the original's mode and owner kept beside them for the restore.
BACKUP_MODE = 0o600
BACKUP_ATTRS_SUFFIX = ".attrs"

# Written by other owners (the certificate writer) and never removed as stale data.
STALE_DELETE_SKIP = frozenset({
    "/etc/pki/ca-trust/source/anchors/openshift-config-user-ca-bundle.crt",
    "/etc/kubernetes/kubelet-ca.crt",
    "/etc/kubernetes/static-pod-resources/configmaps/cloud-config/ca-bundle.pem",
})
STALE_DELETE_SKIP_DIRS = ("/etc/docker/certs.d/",)

# Temp files are ".<name>.mcdtmp<random>" beside their target.
TEMP_MARK = ".mcdtmp"
# Files written and fsynced at once by a batch (atomic_write_many).
WRITE_THREADS = 16

_T = TypeVar("_T")


class WriteError(MachineConfigError, RuntimeError):
    """A file or unit could not be written; names the path."""


@dataclass(frozen=True)
class PriorState:
    """What a path held before this update touched it."""

    kind: str  # "absent" | "file" | "symlink"
    data: bytes = b""
    mode: int = 0
    uid: int = 0
    gid: int = 0
    target: str = ""


def capture(root: NodeRoot, node_path: str) -> PriorState:
    st, held = root.lstat_contents(node_path)
    if st is None:
        return PriorState("absent")
    if isinstance(held, str):
        return PriorState("symlink", target=held)
    if isinstance(held, bytes):
        return PriorState("file", held, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    raise WriteError(f"{node_path}: not a regular file or symlink, refusing to replace it")


def _as_root(root: NodeRoot | Path | str) -> NodeRoot:
    return root if isinstance(root, NodeRoot) else NodeRoot(root)


class Journal:
    """Prior states of every path an update changes (node paths under one root), and the
    directories it created."""

    def __init__(self, root: NodeRoot | Path | str | None = None) -> None:
        # bound by the FileWriter that writes through this journal when not given here
        self.root: NodeRoot | None = None if root is None else _as_root(root)
        self.priors: dict[str, PriorState] = {}
        self.order: list[str] = []
        self.created_dirs: list[str] = []
        self.dirs_to_sync: set[str] = set()

    def _root(self) -> NodeRoot:
        if self.root is None:
            raise RuntimeError("journal used before a root was bound to it")
        return self.root

    def record(self, node_path: str) -> None:
        """Remember `node_path`'s state before its first change in this update."""
        if node_path not in self.priors:
            self.priors[node_path] = capture(self._root(), node_path)
            self.order.append(node_path)

    def sync(self) -> None:
        """fsync every directory a rename happened in: renames are durable only after this.

        Many directories are fsynced by a few threads at once (as a batch's files are), so the
        filesystem commits them together instead of one journal commit per directory; this
        returns when all are durable, and raises the first failure in path order."""
        directories = sorted(self.dirs_to_sync)
        if len(directories) < 2:
            for directory in directories:
                self._sync_dir(directory)
        else:
            with ThreadPoolExecutor(max_workers=min(WRITE_THREADS, len(directories)),
                                    thread_name_prefix="mcd-sync") as pool:
                futures = [pool.submit(self._sync_dir, directory) for directory in directories]
            for future in futures:
                future.result()
        self.dirs_to_sync.clear()

    def _sync_dir(self, directory: str) -> None:
        try:
            self._root().fsync_dir(directory)
        except (FileNotFoundError, NotADirectoryError):
            pass  # removed again by a rollback: nothing left to make durable

    def rollback(self) -> None:
        """Put every recorded path back as it was, newest change first; keep going on errors."""
        root = self._root()
        for node_path in reversed(self.order):
            prior = self.priors[node_path]
            try:
                restore(root, node_path, prior, self)
            except OSError as err:
                log.error("rollback of %s failed: %s", node_path, err)
        for directory in reversed(self.created_dirs):
            try:
                root.rmdir(directory)
            except OSError:
                pass  # not empty: something else lives there now
        self.sync()
        log.info("rolled back %d paths", len(self.order))


def restore(root: NodeRoot, node_path: str, prior: PriorState, journal: Journal) -> None:
    if prior.kind == "absent":
        if root.lexists(node_path):
            root.unlink(node_path)
            journal.dirs_to_sync.add(posixpath.dirname(node_path))
    elif prior.kind == "symlink":
        replace_with_symlink(root, node_path, prior.target, journal)
    else:
        atomic_write(root, node_path, prior.data, prior.mode, prior.uid, prior.gid, journal)


def _write_temp(dir_fd: int, name: str, data: bytes, mode: int, uid: int, gid: int) -> str:
    """A durable temp file beside `name` in `dir_fd` holding `data`: created 0600, chowned,
    chmodded, written and fsynced; its name is returned. On failure nothing is left behind."""
    fd = -1
    while fd < 0:
        tmp = f".{name}{TEMP_MARK}{secrets.token_hex(4)}"
        with contextlib.suppress(FileExistsError):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=dir_fd)
    try:
        # chown before chmod: chown clears setuid/setgid bits that chmod has to set
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = -1
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    return tmp


def _write_at(dir_fd: int, name: str, node_path: str, data: bytes, mode: int, uid: int, gid: int,
              journal: Journal, lock: threading.Lock | None = None) -> None:
    """The atomic write of `name` in the resolved directory `dir_fd` (`node_path` for the journal)."""
    tmp = _write_temp(dir_fd, name, data, mode, uid, gid)
    try:
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    with lock or contextlib.nullcontext():
        journal.dirs_to_sync.add(posixpath.dirname(node_path))


def _write_into(root: NodeRoot, node_path: str, data: bytes, mode: int, uid: int, gid: int,
                journal: Journal) -> None:
    with root.parent(node_path, create=True, created=journal.created_dirs) as (dir_fd, name):
        _write_at(dir_fd, name, node_path, data, mode, uid, gid, journal)


def atomic_write(root: NodeRoot | Path | str, node_path: str, data: bytes, mode: int, uid: int,
                 gid: int, journal: Journal) -> None:
    """Temp file (0600) in the same directory, chown, chmod, write, fsync, rename; every
    directory on the way resolved inside `root`, the last component replaced, never followed."""
    root = _as_root(root)
    if journal.root is None:
        journal.root = root
    _write_into(root, node_path, data, mode, uid, gid, journal)


def write_private(root: NodeRoot | Path | str, node_path: str, data: bytes,
                  mode: int = BACKUP_MODE) -> None:
    """A record the daemon keeps for itself (state, token, stamp): atomic, owned by this
    process, created with `mode` (never wider on the way), durable on return."""
    journal = Journal(root)
    atomic_write(root, node_path, data, mode, os.geteuid(), os.getegid(), journal)
    journal.sync()


@dataclass(frozen=True)
class PendingWrite:
    """One file of a batch: its node path, its bytes and attributes, and the name for errors."""

    path: str
    data: bytes
    mode: int
    uid: int
    gid: int
    label: str


def atomic_write_many(root: NodeRoot, writes: Sequence[PendingWrite], journal: Journal) -> None:
    """`atomic_write` for many files at once, each still entirely old or entirely new.

    A few threads each run the whole atomic write of one file at a time (temp file, fsync,
    rename): the filesystem commits their concurrent fsyncs and renames together instead of one
    journal commit per file. Every file is renamed only after its own temp file is durable; on a
    failure the other files still finish (old or new, never torn), then the first error is raised
    and the caller's rollback restores them. Directories are fsynced by `Journal.sync`.

    Each directory of the batch is resolved inside the root once, in batch order (missing ones
    created then), and the writers of its files share that directory's fd: one path lookup per
    directory instead of two per file.
    """
    if len(writes) < 2:
        for write in writes:
            _labelled(write, atomic_write, root, write.path, write.data, write.mode, write.uid,
                      write.gid, journal)
        return
    # missing directories are made 0755 and remembered for rollback
    with root.directories(create=True, created=journal.created_dirs) as directories:
        targets = [_labelled(write, directories.parent, write.path) for write in writes]
        _sweep_temps(root, {posixpath.dirname(write.path) for write in writes})
        lock = threading.Lock()  # the writers share the journal's set of directories to fsync

        def one(write: PendingWrite, dir_fd: int, name: str) -> None:
            _labelled(write, _write_at, dir_fd, name, write.path, write.data, write.mode,
                      write.uid, write.gid, journal, lock)

        with ThreadPoolExecutor(max_workers=min(WRITE_THREADS, len(writes)),
                                thread_name_prefix="mcd-write") as pool:
            futures = [pool.submit(one, write, *target) for write, target in zip(writes, targets)]
        for future in futures:
            future.result()  # the first failure in batch order, once every write has ended


def _labelled(write: PendingWrite, func: Callable[..., _T], *args: Any) -> _T:
    try:
        return func(*args)
    except (OSError, ValueError) as err:
        raise WriteError(f"failed to write file {write.label}: {err}") from err


def _sweep_temps(root: NodeRoot, directories: Iterable[str]) -> None:
    """Remove temp files a killed run left in `directories` (a batch may leave many)."""
    for directory in directories:
        try:
            names = root.listdir(directory)
        except OSError:
            continue
        for name in names:
            if name.startswith(".") and TEMP_MARK in name:
                node_path = posixpath.join(directory, name)
                log.info("removing %s, left by an interrupted update", node_path)
                with contextlib.suppress(FileNotFoundError):
                    root.unlink(node_path)


def replace_with_symlink(root: NodeRoot, node_path: str, target: str, journal: Journal,
                         hard: bool = False) -> None:
    """`node_path` becomes a symlink to `target` (the link itself is created, nothing followed),
    or with `hard` a hard link to the file `target` names inside the root (a relative target
    counts from the root, as Ignition joins it onto the root)."""
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(root.parent("/" + target.lstrip("/"))) if hard else None
        dir_fd, name = stack.enter_context(
            root.parent(node_path, create=True, created=journal.created_dirs))
        tmp = f".{name}{TEMP_MARK}-link"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        if source is None:
            os.symlink(target, tmp, dir_fd=dir_fd)
        else:
            os.link(source[1], tmp, src_dir_fd=source[0], dst_dir_fd=dir_fd,
                    follow_symlinks=False)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    journal.dirs_to_sync.add(posixpath.dirname(node_path))


class UnitMasker(Protocol):
    """The part of systemd that masks units (the Manager's MaskUnitFiles/UnmaskUnitFiles)."""

    def mask(self, names: Sequence[str]) -> None: ...
    def unmask(self, names: Sequence[str]) -> None: ...


class FileWriter:
    """Writes Ignition files and units under `root` ("/" on a node, a tmp dir in tests); every
    path is resolved inside it (see mcd.noderoot for the rule)."""

    def __init__(self, root: Path, journal: Journal, masker: UnitMasker | None = None) -> None:
        self.root = Path(root)
        self.fs = NodeRoot(self.root)
        if journal.root is None:
            journal.root = self.fs
        self.journal = journal
        # systemd masks units on the real root; other roots (tests, images) get plain symlinks
        self.masker = masker
        self._id_cache: dict[str, dict[str, str]] = {}
        self._pending: list[PendingWrite] | None = None
        # While write_files prepares a batch: backup directory -> the names in it, listed once
        # (nothing is written there until the batch is), instead of two lookups per file.
        self._backup_listings: dict[str, frozenset[str]] | None = None

    def host_path(self, node_path: str) -> Path:
        """For messages and tools given `--root` only: never opened by the writer itself."""
        return self.fs.host_path(node_path)

    # ---- owners -------------------------------------------------------------------------
    def _lookup(self, database: str, name: str) -> int:
        # read the node's own databases: names must resolve as on the node, even under --root;
        # each is read once per writer (and again after the update itself rewrites it)
        ids = self._id_cache.get(database)
        if ids is None:
            ids = {}
            for line in self.fs.read_text(f"/etc/{database}").splitlines():
                fields = line.split(":")
                if len(fields) > 2:
                    ids.setdefault(fields[0], fields[2])
            self._id_cache[database] = ids
        if name not in ids:
            raise WriteError(f"{'user' if database == 'passwd' else 'group'} {name!r} not found")
        return int(ids[name])

    def owner_of(self, entry: Mapping[str, Any]) -> tuple[int, int]:
        user, group = entry.get("user") or {}, entry.get("group") or {}
        uid = user["id"] if "id" in user else (
            self._lookup("passwd", user["name"]) if user.get("name") else 0)
        gid = group["id"] if "id" in group else (
            self._lookup("group", group["name"]) if group.get("name") else 0)
        return int(uid), int(gid)

    # ---- backups ------------------------------------------------------------------------
    @staticmethod
    def orig_path(node_path: str) -> str:
        return ORIG_DIR + node_path + ".mcdorig"

    @staticmethod
    def noorig_path(node_path: str) -> str:
        return NOORIG_DIR + node_path + ".mcdnoorig"

    def backup_original(self, node_path: str) -> None:
        """Keep what the OS had at `node_path` the first time we take it over (never overwritten)."""
        for backup in self._backup_writes(node_path):
            atomic_write(self.fs, backup.path, backup.data, backup.mode, backup.uid, backup.gid,
                         self.journal)

    def _backup_writes(self, node_path: str) -> list[PendingWrite]:
        """The backup `backup_original` makes (recorded in the journal): the original's bytes
        (0600, whatever the original's mode: it may be a secret) and its attributes beside it,
        or an empty stamp that there was none; nothing when a backup exists."""
        orig, noorig = self.orig_path(node_path), self.noorig_path(node_path)
        if self._backup_exists(orig) or self._backup_exists(noorig):
            return []
        st = self.fs.lstat(node_path)
        me = os.geteuid(), os.getegid()
        if st is not None and stat.S_ISREG(st.st_mode):
            log.info("backing up original %s", node_path)
            attrs = {"mode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}
            self.journal.record(orig)
            self.journal.record(orig + BACKUP_ATTRS_SUFFIX)
            return [PendingWrite(orig, self.fs.read_bytes(node_path, follow=False), BACKUP_MODE,
                                 *me, node_path),
                    PendingWrite(orig + BACKUP_ATTRS_SUFFIX, json.dumps(attrs).encode() + b"\n",
                                 BACKUP_MODE, *me, node_path)]
        self.journal.record(noorig)
        return [PendingWrite(noorig, b"", BACKUP_MODE, *me, node_path)]

    def _backup_exists(self, backup: str) -> bool:
        listings = self._backup_listings
        if listings is None:
            return self.fs.lexists(backup)
        directory, name = posixpath.split(backup)
        names = listings.get(directory)
        if names is None:
            try:
                names = frozenset(self.fs.listdir(directory))
            except (FileNotFoundError, NotADirectoryError):
                names = frozenset()
            listings[directory] = names
        return name in names

    def _original_attrs(self, orig: str) -> tuple[int, int, int]:
        """Mode, uid and gid of a backed-up original (from its attributes file; a backup made
        before those existed carries them itself)."""
        try:
            attrs = json.loads(self.fs.read_bytes(orig + BACKUP_ATTRS_SUFFIX, follow=False))
            return int(attrs["mode"]), int(attrs["uid"]), int(attrs["gid"])
        except (FileNotFoundError, NotADirectoryError):
            st = self.fs.lstat(orig)
            assert st is not None
            return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid

    # ---- files --------------------------------------------------------------------------
    def _file_write(self, entry: Mapping[str, Any]) -> list[PendingWrite]:
        """The backup (if any) and the file an Ignition entry needs; both journaled."""
        node_path = str(entry["path"])
        if entry.get("append"):
            raise WriteError("found an append section when writing files. Append is not supported")
        try:
            data = decoded_contents(entry)
            uid, gid = self.owner_of(entry)
            mode = int(entry.get("mode", DEFAULT_FILE_MODE))
            backups = self._backup_writes(node_path)
            self.journal.record(node_path)
        except WriteError:
            raise  # it names the path itself
        except (OSError, ValueError, KeyError, MachineConfigError) as err:
            raise WriteError(f"failed to write file {node_path}: {err}") from err
        return [*backups, PendingWrite(node_path, data, mode, uid, gid, node_path)]

    def write_file(self, entry: Mapping[str, Any]) -> None:
        self.write_files([entry])

    def write_files(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """Every file of `entries` (and its first-takeover backup), as one batch of atomic writes:
        each file ends entirely old or entirely new, backups are renamed before their files."""
        backups: list[PendingWrite] = []
        batch: list[PendingWrite] = []
        self._backup_listings = {}
        try:
            for entry in entries:
                *backup, write = self._file_write(entry)
                backups += backup
                batch.append(write)
                if entry["path"] in ("/etc/passwd", "/etc/group"):
                    # later entries may name users or groups this one defines
                    self._backup_listings = None
                    self._write_batch(backups, batch)
                    self._backup_listings = {}  # listed again: the batch wrote backups
                    backups, batch = [], []
                    self._id_cache.pop(str(entry["path"])[5:], None)
        finally:
            self._backup_listings = None
        self._write_batch(backups, batch)

    def _write_batch(self, backups: list[PendingWrite], batch: list[PendingWrite]) -> None:
        if backups:
            # the originals are on disk for good before any file replaces them
            atomic_write_many(self.fs, backups, self.journal)
            self.journal.sync()
        atomic_write_many(self.fs, batch, self.journal)

    def write_text(self, node_path: str, data: bytes, mode: int = DEFAULT_FILE_MODE,
                   uid: int = 0, gid: int = 0) -> None:
        """A file the daemon owns itself (currentconfig, state, units): journaled, no backup;
        inside `batched()` it is written with the batch."""
        self.journal.record(node_path)
        if self._pending is not None:
            self._pending.append(PendingWrite(node_path, data, mode, uid, gid, node_path))
            return
        atomic_write(self.fs, node_path, data, mode, uid, gid, self.journal)

    @contextlib.contextmanager
    def batched(self) -> Iterator[None]:
        """`write_text` calls inside are written together by `atomic_write_many` at the end (if
        nothing raised); nothing may read those files back before then."""
        if self._pending is not None:
            yield
            return
        self._pending = []
        try:
            yield
            pending = self._pending
        finally:
            self._pending = None
        atomic_write_many(self.fs, pending, self.journal)

    def remove(self, node_path: str) -> None:
        """Unlink `node_path` itself (a link is removed, never followed), journaled."""
        if not self.fs.lexists(node_path):
            log.warning("stale %s already absent", node_path)
            return
        self.journal.record(node_path)
        self.fs.unlink(node_path)
        self.journal.dirs_to_sync.add(posixpath.dirname(node_path))

    def remove_stale(self, node_path: str) -> None:
        """A path that left the config: restore the OS original, or delete what we created."""
        if node_path in STALE_DELETE_SKIP or node_path.startswith(STALE_DELETE_SKIP_DIRS):
            log.info("stale %s is owned by the certificate writer: kept", node_path)
            return
        orig, noorig = self.orig_path(node_path), self.noorig_path(node_path)
        if self.fs.lexists(noorig):
            log.info("stale %s did not exist before us: deleted", node_path)
            self.remove(noorig)
            self.remove(node_path)
        elif self.fs.lexists(orig):
            log.info("stale %s: original restored from %s", node_path, orig)
            mode, uid, gid = self._original_attrs(orig)
            self.journal.record(node_path)
            atomic_write(self.fs, node_path, self.fs.read_bytes(orig, follow=False), mode, uid,
                         gid, self.journal)
            self.remove(orig)
            if self.fs.lexists(orig + BACKUP_ATTRS_SUFFIX):
                self.remove(orig + BACKUP_ATTRS_SUFFIX)
        else:
            log.info("stale %s has no backup record: deleted", node_path)
            self.remove(node_path)

    # ---- units --------------------------------------------------------------------------
    def unit_path(self, name: str) -> str:
        return f"{SYSTEMD_DIR}/{name}"

    def write_unit(self, unit: Mapping[str, Any]) -> bool:
        """Drop-ins, then the unit file or mask; True when anything on disk changed."""
        name = str(unit["name"])
        check_unit_name(name)
        changed = False
        for dropin in unit.get("dropins") or []:
            check_unit_name(str(dropin["name"]), f"drop-in of {name}")
            node_path = f"{SYSTEMD_DIR}/{name}.d/{dropin['name']}"
            contents = str(dropin.get("contents") or "")
            if not contents:
                # an empty drop-in means "no drop-in", as MCO does since 4.7
                if self.fs.lexists(node_path):
                    self.remove(node_path)
                    changed = True
                continue
            self.backup_original(node_path)
            self.write_text(node_path, contents.encode())
            changed = True
        node_path = self.unit_path(name)
        masked = self.fs.is_symlink(node_path) and self.fs.readlink(node_path) == "/dev/null"
        if unit.get("mask"):
            if not masked:
                self._mask(name, node_path)
                changed = True
        elif unit.get("contents"):
            self.backup_original(node_path)
            self.write_text(node_path, str(unit["contents"]).encode())
            changed = True
        elif masked:
            log.info("unit %s unmasked", name)
            self.journal.record(node_path)
            if self.masker is None:
                self.fs.unlink(node_path)
            else:
                self.masker.unmask([name])
            self.journal.dirs_to_sync.add(SYSTEMD_DIR)
            changed = True
        return changed

    def _mask(self, name: str, node_path: str) -> None:
        # recorded first: whoever creates the /dev/null link, rollback restores what was there
        self.journal.record(node_path)
        if self.masker is None:
            replace_with_symlink(self.fs, node_path, "/dev/null", self.journal)
            return
        if self.fs.lexists(node_path):
            # MaskUnitFiles refuses to replace a regular unit file; MCO removes it first too
            self.fs.unlink(node_path)
        self.masker.mask([name])
        self.journal.dirs_to_sync.add(SYSTEMD_DIR)

    def remove_stale_unit(self, old_unit: Mapping[str, Any], new_unit: Mapping[str, Any] | None
                          ) -> bool:
        """Remove drop-ins and unit files the new config no longer has; True on a change."""
        name = str(old_unit["name"])
        check_unit_name(name)
        new_dropins = {d["name"] for d in (new_unit or {}).get("dropins") or []}
        changed = False
        for dropin in old_unit.get("dropins") or []:
            check_unit_name(str(dropin["name"]), f"drop-in of {name}")
            node_path = f"{SYSTEMD_DIR}/{name}.d/{dropin['name']}"
            if dropin["name"] not in new_dropins and self.fs.lexists(node_path):
                self.remove_stale(node_path)
                changed = True
        if new_unit is None and (old_unit.get("contents") or old_unit.get("mask")):
            node_path = self.unit_path(name)
            if self.fs.lexists(node_path):
                self.remove_stale(node_path)
                changed = True
        return changed


def check_unit_name(name: str, what: str = "unit") -> None:
    """A unit or drop-in name is one file name: no "/", not "." or ".." (systemd's own rule;
    Ignition checks only the suffix, so "../../x.service" would otherwise leave the unit dir)."""
    problem = unit_name_problem(name, what)  # the controller's rule too (machineconfig.unitnames)
    if problem:
        raise WriteError(problem)
