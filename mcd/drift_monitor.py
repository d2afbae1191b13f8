"""The config drift monitor: notices when a file or unit the current config manages changes on
disk. No inotify in the standard library, so a cheap lstat poll of the managed paths every few
seconds triggers the full on-disk validation, which also runs on its own at a longer period.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from machineconfig.reconcile import ignition_config_of, name_of
from mcd.file_writers import SYSTEMD_DIR
from mcd.on_disk_validation import OnDiskValidationError, validate_on_disk
from mcd.systemd import SystemdApi

log = logging.getLogger(__name__)

POLL_INTERVAL = 2.0
FULL_CHECK_INTERVAL = 60.0

# (mtime_ns, size, mode, inode, symlink target) or None when absent
Signature = tuple[int, int, int, int, str] | None


def managed_paths(mc: Mapping[str, Any]) -> list[str]:
    """Every file, unit and drop-in path the config writes (node paths)."""
    ign = ignition_config_of(mc)
    paths = [str(f["path"]) for f in (ign.get("storage") or {}).get("files") or []]
    for unit in (ign.get("systemd") or {}).get("units") or []:
        paths.append(f"{SYSTEMD_DIR}/{unit['name']}")
        paths += [f"{SYSTEMD_DIR}/{unit['name']}.d/{d['name']}" for d in unit.get("dropins") or []]
    return paths


def _signature(path: Path) -> Signature:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    target = os.readlink(path) if os.path.islink(path) else ""
    return (st.st_mtime_ns, st.st_size, st.st_mode, st.st_ino, target)


class DriftMonitor:
    """Polled by the daemon loop (no thread of its own): `check()` says whether the disk drifted.

    Returns the validation error text while drift lasts and None once the disk matches again.
    """

    def __init__(self, mc: Mapping[str, Any], root: Path, systemd: SystemdApi | None,
                 on_drift: Callable[[str], None] | None = None,
                 poll_interval: float = POLL_INTERVAL, full_interval: float = FULL_CHECK_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.mc = mc
        self.name = name_of(mc)
        self.root = root
        self.systemd = systemd
        self.on_drift = on_drift
        self.poll_interval = poll_interval
        self.full_interval = full_interval
        self.clock = clock
        self.paths = managed_paths(mc)
        self.signatures = self._scan()
        self.last_poll = self.last_full = clock()
        self.drift: str | None = None
        log.info("config drift monitor started for %s (%d paths)", self.name, len(self.paths))

    def _scan(self) -> dict[str, Signature]:
        return {p: _signature(self.root / p.lstrip("/")) for p in self.paths}

    def due_in(self) -> float:
        """Seconds until the next poll is due (the daemon's wait timeout)."""
        return max(0.0, self.last_poll + self.poll_interval - self.clock())

    def check(self, force: bool = False) -> str | None:
        """Poll when due; run the full validation when a path changed or the period elapsed."""
        now = self.clock()
        if not force and now - self.last_poll < self.poll_interval:
            return self.drift
        self.last_poll = now
        signatures = self._scan()
        changed = [p for p, sig in signatures.items() if self.signatures.get(p) != sig]
        self.signatures = signatures
        if not (force or changed or now - self.last_full >= self.full_interval):
            return self.drift
        if changed:
            log.info("managed paths changed on disk: %s", ", ".join(changed[:5]))
        self.last_full = now
        return self._validate()

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
        log.info("config drift monitor stopped for %s", self.name)
