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

from machineconfig import constants as C
from machineconfig.rendered_config import RenderedConfig
from mcd.file_writers import Journal, atomic_write
from mcd.noderoot import NodeRoot

log = logging.getLogger(__name__)

# the post-config action recorded (annotation and state file) while a reboot is under way
REBOOTING = "Rebooting"
MAX_REASON = 2000
# The current config holds every secret of the node's config (pull secret, kubeconfig): like
# every record the daemon keeps, readable by root only.
STATE_FILE_MODE = 0o600


def _read(root: Path, node_path: str) -> str | None:
    try:
        return NodeRoot(root).read_text(node_path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def read_current_config(root: Path) -> RenderedConfig | None:
    """The rendered config the node last applied completely (its whole MachineConfig)."""
    text = _read(root, C.CURRENT_CONFIG_PATH)
    if text is None:
        return None
    return RenderedConfig(json.loads(text))


def current_config_bytes(mc: RenderedConfig) -> bytes:
    return json.dumps(mc.to_dict(), sort_keys=True).encode()


def read_state(root: Path) -> dict[str, Any]:
    text = _read(root, C.DAEMON_STATE_PATH)
    if text is None:
        return {}
    state: dict[str, Any] = json.loads(text)
    return state


def write_state(root: Path, state: str, reason: str = "", **fields: Any) -> dict[str, Any]:
    """Record the node state; never part of an update's rollback, so a failure stays visible."""
    record = {**read_state(root), "state": state, "reason": reason[:MAX_REASON], **fields}
    journal = Journal()
    atomic_write(root, C.DAEMON_STATE_PATH, (json.dumps(record, indent=2, sort_keys=True) + "\n")
                 .encode(), STATE_FILE_MODE, os.geteuid(), os.getegid(), journal)
    journal.sync()
    log.info("state %s%s", state, f": {reason}" if reason else "")
    return record


def write_fields(root: Path, **fields: Any) -> dict[str, Any]:
    """Change other records of the state file (a None value removes one), the state kept."""
    record = {k: v for k, v in {**read_state(root), **fields}.items() if v is not None}
    journal = Journal()
    atomic_write(root, C.DAEMON_STATE_PATH, (json.dumps(record, indent=2, sort_keys=True) + "\n")
                 .encode(), STATE_FILE_MODE, os.geteuid(), os.getegid(), journal)
    journal.sync()
    return record


def force_file_present(root: Path) -> bool:
    return NodeRoot(root).lexists(C.FORCE_FILE_PATH)
