"""Writing files and unit files onto a node's root: atomic writes, backups, restores, rollback.

Every change goes through a Journal that remembers what the path held before, so a failed update
can put every file, unit and key back exactly as it was.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from machineconfig.errors import MachineConfigError
from mcd.diff import decoded_contents

log = logging.getLogger(__name__)

ORIG_DIR = "/etc/machine-config-daemon/orig"
NOORIG_DIR = "/etc/machine-config-daemon/noorig"
SYSTEMD_DIR = "/etc/systemd/system"
DEFAULT_FILE_MODE = 0o644
DEFAULT_DIR_MODE = 0o755

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

# Test-only crash hook: SIGKILL ourselves after this many renames (crash-consistency tests).
_CRASH_AFTER_ENV = "MCD_TEST_CRASH_AFTER_WRITES"


class WriteError(RuntimeError):
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


def capture(path: Path) -> PriorState:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return PriorState("absent")
    if stat.S_ISLNK(st.st_mode):
        return PriorState("symlink", target=os.readlink(path))
    if stat.S_ISREG(st.st_mode):
        return PriorState("file", path.read_bytes(), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    raise WriteError(f"{path}: not a regular file or symlink, refusing to replace it")


class Journal:
    """Prior states of every path an update changes, and the directories it created."""

    def __init__(self) -> None:
        self.priors: dict[Path, PriorState] = {}
        self.order: list[Path] = []
        self.created_dirs: list[Path] = []
        self.dirs_to_sync: set[Path] = set()
        self.writes = 0

    def record(self, path: Path) -> None:
        """Remember `path`'s state before its first change in this update."""
        if path not in self.priors:
            self.priors[path] = capture(path)
            self.order.append(path)

    def sync(self) -> None:
        """fsync every directory a rename happened in: renames are durable only after this."""
        for directory in sorted(self.dirs_to_sync):
            try:
                fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                continue  # removed again by a rollback: nothing left to make durable
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self.dirs_to_sync.clear()

    def rollback(self) -> None:
        """Put every recorded path back as it was, newest change first; keep going on errors."""
        for path in reversed(self.order):
            prior = self.priors[path]
            try:
                restore(path, prior, self)
            except OSError as err:
                log.error("rollback of %s failed: %s", path, err)
        for directory in reversed(self.created_dirs):
            try:
                directory.rmdir()
            except OSError:
                pass  # not empty: something else lives there now
        self.sync()
        log.info("rolled back %d paths", len(self.order))


def restore(path: Path, prior: PriorState, journal: Journal) -> None:
    if prior.kind == "absent":
        if path.is_symlink() or path.exists():
            path.unlink()
    elif prior.kind == "symlink":
        replace_with_symlink(path, prior.target, journal)
    else:
        atomic_write(path, prior.data, prior.mode, prior.uid, prior.gid, journal)


def make_parents(path: Path, journal: Journal) -> None:
    """Create missing parent directories with 0755, remembering them for rollback."""
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        directory.mkdir(mode=DEFAULT_DIR_MODE)
        # mkdir's mode is filtered by the umask; the Ignition default is exactly 0755
        os.chmod(directory, DEFAULT_DIR_MODE)
        journal.created_dirs.append(directory)


def _write_temp(path: Path, data: bytes, mode: int, uid: int, gid: int) -> str:
    """A durable temp file beside `path` holding `data`: created, chowned, chmodded, written and
    fsynced; its name is returned. On failure nothing is left behind."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TEMP_MARK}")
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
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def atomic_write(path: Path, data: bytes, mode: int, uid: int, gid: int,
                 journal: Journal) -> None:
    """Temp file in the same directory, chown, chmod, write, fsync, rename."""
    make_parents(path, journal)
    tmp = _write_temp(path, data, mode, uid, gid)
    try:
        os.rename(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    journal.dirs_to_sync.add(path.parent)
    _count_write(journal)


@dataclass(frozen=True)
class PendingWrite:
    """One file of a batch: where it goes, its bytes and attributes, and the name for errors."""

    path: Path
    data: bytes
    mode: int
    uid: int
    gid: int
    label: str


def atomic_write_many(writes: Sequence[PendingWrite], journal: Journal) -> None:
    """`atomic_write` for many files at once, each still entirely old or entirely new.

    A few threads each run the whole atomic write of one file at a time (temp file, fsync,
    rename): the filesystem commits their concurrent fsyncs and renames together instead of one
    journal commit per file. Every file is renamed only after its own temp file is durable; on a
    failure the other files still finish (old or new, never torn), then the first error is raised
    and the caller's rollback restores them. Directories are fsynced by `Journal.sync`.
    """
    if len(writes) < 2:
        for write in writes:
            _labelled(write, atomic_write, write.path, write.data, write.mode, write.uid,
                      write.gid, journal)
        return
    for write in writes:
        _labelled(write, make_parents, write.path, journal)
    _sweep_temps({write.path.parent for write in writes})

    def one(write: PendingWrite) -> None:
        tmp = _labelled(write, _write_temp, write.path, write.data, write.mode, write.uid,
                        write.gid)
        try:
            _labelled(write, os.rename, tmp, write.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        with _count_lock:
            journal.dirs_to_sync.add(write.path.parent)
            _count_write(journal)

    with ThreadPoolExecutor(max_workers=min(WRITE_THREADS, len(writes)),
                            thread_name_prefix="mcd-write") as pool:
        futures = [pool.submit(one, write) for write in writes]
    for future in futures:
        future.result()  # the first failure in batch order, once every write has ended


def _labelled(write: PendingWrite, func: Callable[..., _T], *args: Any) -> _T:
    try:
        return func(*args)
    except (OSError, ValueError) as err:
        raise WriteError(f"failed to write file {write.label}: {err}") from err


def _sweep_temps(directories: Iterable[Path]) -> None:
    """Remove temp files a killed run left in `directories` (a batch may leave many)."""
    for directory in directories:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".") and TEMP_MARK in entry.name:
                log.info("removing %s, left by an interrupted update", entry.path)
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    pass


def replace_with_symlink(path: Path, target: str, journal: Journal) -> None:
    make_parents(path, journal)
    tmp = path.with_name(f".{path.name}.mcdtmp-link")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.rename(tmp, path)
    journal.dirs_to_sync.add(path.parent)
    _count_write(journal)


_writes_in_process = 0
_count_lock = threading.Lock()


def _count_write(journal: Journal) -> None:
    global _writes_in_process
    journal.writes += 1
    _writes_in_process += 1
    crash_after = os.environ.get(_CRASH_AFTER_ENV)
    if crash_after and _writes_in_process >= int(crash_after):
        os.kill(os.getpid(), signal.SIGKILL)


class UnitMasker(Protocol):
    """The part of systemd that masks units (the Manager's MaskUnitFiles/UnmaskUnitFiles)."""

    def mask(self, names: Sequence[str]) -> None: ...
    def unmask(self, names: Sequence[str]) -> None: ...


class FileWriter:
    """Writes Ignition files and units under `root` ("/" on a node, a tmp dir in tests)."""

    def __init__(self, root: Path, journal: Journal, masker: UnitMasker | None = None) -> None:
        self.root = root
        self.journal = journal
        # systemd masks units on the real root; other roots (tests, images) get plain symlinks
        self.masker = masker
        self._id_cache: dict[str, dict[str, str]] = {}
        self._pending: list[PendingWrite] | None = None

    def host_path(self, node_path: str) -> Path:
        return self.root / node_path.lstrip("/")

    # ---- owners -------------------------------------------------------------------------
    def _lookup(self, database: str, name: str) -> int:
        # read the node's own databases: names must resolve as on the node, even under --root;
        # each is read once per writer (and again after the update itself rewrites it)
        ids = self._id_cache.get(database)
        if ids is None:
            ids = {}
            for line in self.host_path(f"/etc/{database}").read_text().splitlines():
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
    def orig_path(self, node_path: str) -> Path:
        return self.host_path(ORIG_DIR + node_path + ".mcdorig")

    def noorig_path(self, node_path: str) -> Path:
        return self.host_path(NOORIG_DIR + node_path + ".mcdnoorig")

    def backup_original(self, node_path: str) -> None:
        """Keep what the OS had at `node_path` the first time we take it over (never overwritten)."""
        backup = self._backup_write(node_path)
        if backup is not None:
            atomic_write(backup.path, backup.data, backup.mode, backup.uid, backup.gid,
                         self.journal)

    def _backup_write(self, node_path: str) -> PendingWrite | None:
        """The backup `backup_original` makes (recorded in the journal), or None if one exists."""
        orig, noorig = self.orig_path(node_path), self.noorig_path(node_path)
        if orig.exists() or noorig.exists():
            return None
        target = self.host_path(node_path)
        self.journal.record(orig if target.is_file() else noorig)
        if target.is_file() and not target.is_symlink():
            st = target.stat()
            log.info("backing up original %s", node_path)
            return PendingWrite(orig, target.read_bytes(), stat.S_IMODE(st.st_mode), st.st_uid,
                                st.st_gid, node_path)
        return PendingWrite(noorig, b"", DEFAULT_FILE_MODE, 0, 0, node_path)

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
            target = self.host_path(node_path)
            backup = self._backup_write(node_path)
            self.journal.record(target)
        except (OSError, ValueError, KeyError, MachineConfigError) as err:
            raise WriteError(f"failed to write file {node_path}: {err}") from err
        write = PendingWrite(target, data, mode, uid, gid, node_path)
        return [write] if backup is None else [backup, write]

    def write_file(self, entry: Mapping[str, Any]) -> None:
        self.write_files([entry])

    def write_files(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """Every file of `entries` (and its first-takeover backup), as one batch of atomic writes:
        each file ends entirely old or entirely new, backups are renamed before their files."""
        backups: list[PendingWrite] = []
        batch: list[PendingWrite] = []
        for entry in entries:
            *backup, write = self._file_write(entry)
            backups += backup
            batch.append(write)
            if entry["path"] in ("/etc/passwd", "/etc/group"):
                # later entries may name users or groups this one defines
                self._write_batch(backups, batch)
                backups, batch = [], []
                self._id_cache.pop(str(entry["path"])[5:], None)
        self._write_batch(backups, batch)

    def _write_batch(self, backups: list[PendingWrite], batch: list[PendingWrite]) -> None:
        if backups:
            # the originals are on disk for good before any file replaces them
            atomic_write_many(backups, self.journal)
            self.journal.sync()
        atomic_write_many(batch, self.journal)

    def write_text(self, node_path: str, data: bytes, mode: int = DEFAULT_FILE_MODE,
                   uid: int = 0, gid: int = 0) -> None:
        """A file the daemon owns itself (currentconfig, state, units): journaled, no backup;
        inside `batched()` it is written with the batch."""
        target = self.host_path(node_path)
        self.journal.record(target)
        if self._pending is not None:
            self._pending.append(PendingWrite(target, data, mode, uid, gid, node_path))
            return
        atomic_write(target, data, mode, uid, gid, self.journal)

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
        atomic_write_many(pending, self.journal)

    def remove(self, node_path: str) -> None:
        target = self.host_path(node_path)
        if not (target.exists() or target.is_symlink()):
            log.warning("stale %s already absent", node_path)
            return
        self.journal.record(target)
        target.unlink()
        self.journal.dirs_to_sync.add(target.parent)

    def remove_stale(self, node_path: str) -> None:
        """A path that left the config: restore the OS original, or delete what we created."""
        if node_path in STALE_DELETE_SKIP or node_path.startswith(STALE_DELETE_SKIP_DIRS):
            log.info("stale %s is owned by the certificate writer: kept", node_path)
            return
        orig, noorig = self.orig_path(node_path), self.noorig_path(node_path)
        if noorig.exists():
            log.info("stale %s did not exist before us: deleted", node_path)
            self.remove(NOORIG_DIR + node_path + ".mcdnoorig")
            self.remove(node_path)
        elif orig.exists():
            log.info("stale %s: original restored from %s", node_path, orig)
            st = orig.stat()
            target = self.host_path(node_path)
            self.journal.record(target)
            atomic_write(target, orig.read_bytes(), stat.S_IMODE(st.st_mode), st.st_uid,
                         st.st_gid, self.journal)
            self.remove(ORIG_DIR + node_path + ".mcdorig")
        else:
            log.info("stale %s has no backup record: deleted", node_path)
            self.remove(node_path)

    # ---- units --------------------------------------------------------------------------
    def unit_path(self, name: str) -> str:
        return f"{SYSTEMD_DIR}/{name}"

    def write_unit(self, unit: Mapping[str, Any]) -> bool:
        """Drop-ins, then the unit file or mask; True when anything on disk changed."""
        name = str(unit["name"])
        changed = False
        for dropin in unit.get("dropins") or []:
            node_path = f"{SYSTEMD_DIR}/{name}.d/{dropin['name']}"
            contents = str(dropin.get("contents") or "")
            if not contents:
                # an empty drop-in means "no drop-in", as MCO does since 4.7
                if self.host_path(node_path).exists():
                    self.remove(node_path)
                    changed = True
                continue
            self.backup_original(node_path)
            self.write_text(node_path, contents.encode())
            changed = True
        node_path = self.unit_path(name)
        target = self.host_path(node_path)
        masked = target.is_symlink() and os.readlink(target) == "/dev/null"
        if unit.get("mask"):
            if not masked:
                self._mask(name, target)
                changed = True
        elif unit.get("contents"):
            self.backup_original(node_path)
            self.write_text(node_path, str(unit["contents"]).encode())
            changed = True
        elif masked:
            log.info("unit %s unmasked", name)
            self.journal.record(target)
            if self.masker is None:
                target.unlink()
            else:
                self.masker.unmask([name])
            self.journal.dirs_to_sync.add(target.parent)
            changed = True
        return changed

    def _mask(self, name: str, target: Path) -> None:
        # recorded first: whoever creates the /dev/null link, rollback restores what was there
        self.journal.record(target)
        if self.masker is None:
            replace_with_symlink(target, "/dev/null", self.journal)
            return
        if target.exists() or target.is_symlink():
            # MaskUnitFiles refuses to replace a regular unit file; MCO removes it first too
            target.unlink()
        self.masker.mask([name])
        self.journal.dirs_to_sync.add(target.parent)

    def remove_stale_unit(self, old_unit: Mapping[str, Any], new_unit: Mapping[str, Any] | None
                          ) -> bool:
        """Remove drop-ins and unit files the new config no longer has; True on a change."""
        name = str(old_unit["name"])
        new_dropins = {d["name"] for d in (new_unit or {}).get("dropins") or []}
        changed = False
        for dropin in old_unit.get("dropins") or []:
            node_path = f"{SYSTEMD_DIR}/{name}.d/{dropin['name']}"
            if dropin["name"] not in new_dropins and self.host_path(node_path).exists():
                self.remove_stale(node_path)
                changed = True
        if new_unit is None and (old_unit.get("contents") or old_unit.get("mask")):
            node_path = self.unit_path(name)
            if self.host_path(node_path).exists() or self.host_path(node_path).is_symlink():
                self.remove_stale(node_path)
                changed = True
        return changed

