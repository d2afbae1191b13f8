"""The config drift monitor: notices when a file or unit the current config manages changes on
disk. It watches the parent directories of those paths with inotify (files are replaced by rename)
and runs the full on-disk validation shortly after a change, plus a slow periodic full check as a
safety net; where inotify is unavailable (or a poll interval is asked for) it polls with lstat.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from machineconfig.reconcile import AnyConfig
from machineconfig.rendered_config import RenderedConfig
from mcd import inotify
from mcd.file_writers import SYSTEMD_DIR
from mcd.noderoot import NodeRoot
from mcd.on_disk_validation import OnDiskValidationError, validate_on_disk
from mcd.systemd import SystemdApi

log = logging.getLogger(__name__)

POLL_INTERVAL = 2.0  # the lstat poll, only where inotify is unavailable
FULL_CHECK_INTERVAL = 900.0  # the safety net: a full validation even when nothing was seen
SETTLE = 0.2  # after the first event of a burst, let the writer finish before validating

# What changes a managed entry of a watched directory: written (closed or not), replaced by
# rename, created, deleted, renamed away, chmod/chown; and the directory itself going away.
DIR_EVENTS = (inotify.IN_MODIFY | inotify.IN_CLOSE_WRITE | inotify.IN_ATTRIB | inotify.IN_CREATE
              | inotify.IN_DELETE | inotify.IN_MOVED_FROM | inotify.IN_MOVED_TO
              | inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF | inotify.IN_ONLYDIR)
# The watched directory itself is gone, moved or unmounted (IN_IGNORED: the kernel dropped the
# watch): the watches are worked out again.
_SELF_EVENTS = inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF | inotify.IN_UNMOUNT | inotify.IN_IGNORED
_ENTRY_EVENTS = (inotify.IN_CREATE | inotify.IN_DELETE | inotify.IN_MOVED_FROM
                 | inotify.IN_MOVED_TO)
# systemctl enable/disable add and remove symlinks in these subdirectories of SYSTEMD_DIR
ENABLEMENT_DIR_SUFFIXES = (".wants", ".requires", ".upholds")

# (mtime_ns, size, mode, inode, symlink target) or None when absent
Signature = tuple[int, int, int, int, str] | None


def managed_paths(mc: RenderedConfig) -> list[str]:
    """Every file, unit and drop-in path the config writes (node paths)."""
    ign = mc.ignition
    paths = [str(f["path"]) for f in (ign.get("storage") or {}).get("files") or []]
    for unit in (ign.get("systemd") or {}).get("units") or []:
        paths.append(f"{SYSTEMD_DIR}/{unit['name']}")
        paths += [f"{SYSTEMD_DIR}/{unit['name']}.d/{d['name']}" for d in unit.get("dropins") or []]
    return paths


def enablement_units(mc: RenderedConfig) -> list[str]:
    """The units whose enabled/disabled state the config sets (checked through systemd)."""
    ign = mc.ignition
    return [str(u["name"]) for u in (ign.get("systemd") or {}).get("units") or []
            if "enabled" in u]


def _signature(fs: NodeRoot, node_path: str) -> Signature:
    """The entry's own lstat (and link target), resolved inside the root."""
    try:
        st = fs.lstat(node_path)
        if st is None:
            return None
        target = fs.readlink(node_path) if stat.S_ISLNK(st.st_mode) else ""
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_mode, st.st_ino, target)


class DirectoryWatches:
    """The inotify watches for a set of node paths: each path's parent directory, or when that
    does not exist yet its nearest existing ancestor, watching for the missing child's name.

    `relevant(events)` says whether any event touches a watched name and re-resolves the watches
    when a directory on the way appeared, vanished or moved.
    """

    def __init__(self, root: Path, paths: Iterable[str], units: Iterable[str] = ()) -> None:
        self.root = root
        self.fs = NodeRoot(root)
        self.names: dict[Path, set[str]] = {}  # host directory -> entry names that matter
        for node_path in paths:
            host = root / node_path.lstrip("/")
            self.names.setdefault(host.parent, set()).add(host.name)
        self.units = set(units)
        self.systemd_dir = root / SYSTEMD_DIR.lstrip("/")
        self.inotify = inotify.Inotify()
        self.interest: dict[int, set[str]] = {}  # wd -> names that matter in that directory
        self.watched: dict[int, Path] = {}
        try:
            self.resolve()
        except OSError:
            self.close()
            raise

    def fileno(self) -> int:
        return self.inotify.fileno()

    def _wanted(self) -> dict[Path, set[str]]:
        wanted = {d: set(n) for d, n in self.names.items()}
        if self.units:
            # new .wants directories must be seen too, so the unit dir watches their names
            wanted.setdefault(self.systemd_dir, set())
            # listed and tested inside the root (NodeRoot): a link never leads the watches out
            try:
                names = [n for n in self.fs.listdir(SYSTEMD_DIR)
                         if n.endswith(ENABLEMENT_DIR_SUFFIXES)
                         and self.fs.is_dir(f"{SYSTEMD_DIR}/{n}")]
            except OSError:
                names = []
            for name in names:
                wanted.setdefault(self.systemd_dir / name, set()).update(self.units)
        return wanted

    def _watch_nearest(self, directory: Path, names: set[str]) -> tuple[int, Path, set[str]]:
        """The directory is resolved inside the root (NodeRoot: a link on the way, even one to
        "/outside", is followed as the daemon's writes follow it, never out of the root) and
        the watch is placed on the inode that resolution opened, not on a host path."""
        while True:
            try:
                node_path = "/" + directory.relative_to(self.root).as_posix().lstrip(".")
                fd = self.fs.directory(node_path)
                try:
                    return (self.inotify.add_watch_fd(fd, DIR_EVENTS, str(directory)), directory,
                            names)
                finally:
                    os.close(fd)
            except OSError as err:
                # missing (or not a directory): watch the parent for it to appear, never
                # leaving the root
                if err.errno not in (errno.ENOENT, errno.ENOTDIR) or directory == self.root \
                        or directory.parent == directory:
                    raise
                names, directory = {directory.name}, directory.parent

    def resolve(self) -> None:
        """(Re)compute the watches; directories no longer needed lose theirs."""
        interest: dict[int, set[str]] = {}
        watched: dict[int, Path] = {}
        for directory, names in self._wanted().items():
            wd, where, wanted_names = self._watch_nearest(directory, names)
            interest.setdefault(wd, set()).update(wanted_names)
            watched[wd] = where
            if where != directory:
                log.debug("%s does not exist yet: watching %s for %s", directory, where,
                          ", ".join(sorted(wanted_names)))
        for wd in set(self.watched) - set(watched):
            self.inotify.rm_watch(wd)
        self.interest, self.watched = interest, watched

    def _node_path(self, host: Path) -> str:
        try:
            return "/" + str(host.relative_to(self.root)).lstrip(".")
        except ValueError:
            return str(host)

    def relevant(self, events: Iterable[inotify.Event]) -> list[str]:
        """What the events say changed (node paths, or a reason); [] when nothing managed."""
        changed: list[str] = []
        restructure = False
        for event in events:
            if event.mask & inotify.IN_Q_OVERFLOW:
                changed.append("inotify queue overflow: events lost")
                restructure = True
                continue
            where = self.watched.get(event.wd)
            if where is None:
                continue  # a watch removed since (its last events still arrive)
            if event.mask & _SELF_EVENTS:
                changed.append(f"{self._node_path(where)} (directory gone or moved)")
                restructure = True
                continue
            if event.name in self.interest.get(event.wd, ()):
                changed.append(self._node_path(where / event.name))
                if event.mask & inotify.IN_ISDIR and event.mask & _ENTRY_EVENTS:
                    restructure = True  # a directory on the way appeared or went
            elif where == self.systemd_dir and self.units and event.mask & inotify.IN_ISDIR \
                    and event.name.endswith(ENABLEMENT_DIR_SUFFIXES):
                changed.append(self._node_path(where / event.name))
                restructure = True
        if restructure:
            self.resolve()
        return changed

    def close(self) -> None:
        self.inotify.close()


class DriftMonitor:
    """Driven by the daemon loop (no thread of its own): the loop waits until `fileno()` is
    readable or `due_in()` passes, then `check()` says whether the disk drifted.

    Returns the validation error text while drift lasts and None once the disk matches again.
    Without inotify (unavailable, or `use_inotify` False) it polls with lstat every
    `poll_interval` seconds instead.
    """

    def __init__(self, mc: AnyConfig, root: Path, systemd: SystemdApi | None,
                 on_drift: Callable[[str], None] | None = None,
                 poll_interval: float = POLL_INTERVAL,
                 full_interval: float = FULL_CHECK_INTERVAL,
                 clock: Callable[[], float] = time.monotonic, settle: float = SETTLE,
                 use_inotify: bool = True) -> None:
        self.mc = RenderedConfig.of(mc)
        self.name = self.mc.name
        self.root = root
        self.systemd = systemd
        self.on_drift = on_drift
        self.full_interval = full_interval
        self.settle = settle
        self.clock = clock
        self.paths = managed_paths(self.mc)
        self.watches: DirectoryWatches | None = None
        self.poll_interval = poll_interval
        if use_inotify:
            try:
                self.watches = DirectoryWatches(root, self.paths, enablement_units(self.mc))
            except OSError as err:
                # out of inotify instances or watches (ENOSPC/EMFILE), or no inotify at all
                log.warning("inotify unavailable (%s): polling the managed paths every %gs", err,
                            poll_interval)
        self.signatures = self._scan() if self.watches is None else {}
        self.last_poll = self.last_full = clock()
        self.changed_at: float | None = None  # first unvalidated event of a burst
        self.drift: str | None = None
        how = (f"{len(self.watches.watched)} directories watched" if self.watches is not None
               else f"polled every {self.poll_interval:g}s")
        log.info("config drift monitor started for %s (%d paths, %s)", self.name,
                 len(self.paths), how)

    def _scan(self) -> dict[str, Signature]:
        fs = NodeRoot(self.root)
        return {p: _signature(fs, p) for p in self.paths}

    def fileno(self) -> int | None:
        """The inotify fd the daemon waits on (readable: something changed), or None."""
        return self.watches.fileno() if self.watches is not None else None

    def due_in(self) -> float:
        """Seconds until `check()` has work that no event will announce (the wait timeout)."""
        now = self.clock()
        due = self.last_full + self.full_interval
        if self.changed_at is not None:
            due = min(due, self.changed_at + self.settle)
        if self.watches is None:
            due = min(due, self.last_poll + self.poll_interval)
        return max(0.0, due - now)

    def _changes(self, now: float) -> list[str]:
        if self.watches is not None:
            try:
                return self.watches.relevant(self.watches.inotify.read())
            except OSError as err:
                self._poll_instead(err)
                return ["inotify failed: polling from now on"]
        if now - self.last_poll < self.poll_interval:
            return []
        self.last_poll = now
        signatures = self._scan()
        changed = [p for p, sig in signatures.items() if self.signatures.get(p) != sig]
        self.signatures = signatures
        return changed

    def check(self, force: bool = False) -> str | None:
        """Take the events (or poll when due); validate a settled change, or when the full
        check is due."""
        now = self.clock()
        changed = list(dict.fromkeys(self._changes(now)))  # a write is a modify and a close
        if changed:
            log.info("managed paths changed on disk: %s", ", ".join(changed[:5]))
            if self.changed_at is None:
                # polling has seen the change only once it was made: no settling then
                self.changed_at = now if self.watches is not None else now - self.settle
        settled = self.changed_at is not None and now >= self.changed_at + self.settle
        periodic = now - self.last_full >= self.full_interval
        if not (force or settled or periodic):
            return self.drift
        if periodic and self.watches is not None:
            try:
                self.watches.resolve()  # the safety net covers the watches too
            except OSError as err:
                self._poll_instead(err)
        self.last_full = now
        self.changed_at = None
        return self._validate()

    def _poll_instead(self, err: OSError) -> None:
        log.warning("inotify failed (%s): polling the managed paths every %gs", err,
                    self.poll_interval)
        if self.watches is not None:
            self.watches.close()
            self.watches = None
        self.signatures = self._scan()
        self.last_poll = self.clock()

    def _validate(self) -> str | None:
        try:
            validate_on_disk(self.mc, self.root, self.systemd)
        except OnDiskValidationError as err:
            if self.drift != str(err):
                log.warning("config drift detected: %s", err)
                if self.on_drift is not None:
                    self.on_drift(str(err))
            self.drift = str(err)
            return self.drift
        if self.drift is not None:
            log.info("config drift cleared: disk matches %s again", self.name)
        self.drift = None
        return None

    def stop(self) -> None:
        if self.watches is not None:
            self.watches.close()
            self.watches = None
        log.info("config drift monitor stopped for %s", self.name)
