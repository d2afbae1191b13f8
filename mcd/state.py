"""The daemon's on-disk records: the current config and the node state (offline stand-in for
the node annotations: Working, Done, Degraded, Unreconcilable and the reason).
"""
from __future__ import annotations

import json
import os
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mcd.file_writers import Journal, atomic_write

log = logging.getLogger(__name__)

CURRENT_CONFIG = "/etc/machine-config-daemon/currentconfig"
STATE_FILE = "/etc/machine-config-daemon/state.json"
FORCE_FILE = "/run/machine-config-daemon-force"

WORKING, DONE, DEGRADED, UNRECONCILABLE = "Working", "Done", "Degraded", "Unreconcilable"
REBOOTING = "Rebooting"
MAX_REASON = 2000


def _host(root: Path, node_path: str) -> Path:
    return root / node_path.lstrip("/")


def read_current_config(root: Path) -> dict[str, Any] | None:
    path = _host(root, CURRENT_CONFIG)
    if not path.exists():
        return None
    config: dict[str, Any] = json.loads(path.read_text())
    return config


def current_config_bytes(mc: Mapping[str, Any]) -> bytes:
    return json.dumps(mc, sort_keys=True).encode()


def read_state(root: Path) -> dict[str, Any]:
    path = _host(root, STATE_FILE)
    if not path.exists():
        return {}
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def write_state(root: Path, state: str, reason: str = "", **fields: Any) -> dict[str, Any]:
    """Record the node state; never part of an update's rollback, so a failure stays visible."""
    record = {**read_state(root), "state": state, "reason": reason[:MAX_REASON], **fields}
    journal = Journal()
    atomic_write(_host(root, STATE_FILE), (json.dumps(record, indent=2, sort_keys=True) + "\n")
                 .encode(), 0o644, os.geteuid(), os.getegid(), journal)
    journal.sync()
    log.info("state %s%s", state, f": {reason}" if reason else "")
    return record


def force_file_present(root: Path) -> bool:
    return _host(root, FORCE_FILE).exists()
