"""The daemon's states and its on-disk records.

The node's state (its state annotation, the state file's "state", the metric; values in
machineconfig.constants) moves as an update goes:

    Done -> Working -> Done                        a rebootless update
    Done -> Working (postConfigAction Rebooting)   the reboot, then Done once the disk checks out
    any  -> Degraded                               a failure: reported and retried as it is
    any  -> Unreconcilable                         the desired config cannot be applied in place

A node that is Degraded or Unreconcilable stays so while an update is retried (`reports_working`)
until it reaches Done. The daemon itself is in one `Phase` at a time (`PHASE_MOVES`).

The records: the current config (the whole rendered config last applied completely) and the
state file (offline stand-in for the node annotations: state, reason, desired/current config,
post-config action).
"""
from __future__ import annotations

import enum
import json
import logging
from pathlib import Path
from typing import Any

from machineconfig import constants as C
from machineconfig.rendered_config import RenderedConfig
from mcd.file_writers import write_private
from mcd.noderoot import NodeRoot

log = logging.getLogger(__name__)

# the post-config action recorded (annotation and state file) while a reboot is under way
REBOOTING = "Rebooting"
FAILED = frozenset({C.STATE_DEGRADED, C.STATE_UNRECONCILABLE})


def reports_working(previous: str | None) -> bool:
    """Whether an update starting from `previous` reports Working: a failed node keeps its
    failure (and reason) visible until the update succeeds."""
    return previous not in FAILED


class Phase(enum.Enum):
    """What the daemon is doing: its first pass after a start (MCO's checkStateOnFirstRun),
    following the node (passes over its annotations), inside an update (SIGTERM waits for its
    end), or waiting for the reboot it queued (no further passes)."""

    BOOTING = "booting"
    FOLLOWING = "following"
    UPDATING = "updating"
    REBOOTING = "rebooting"


PHASE_MOVES: dict[Phase, frozenset[Phase]] = {
    Phase.BOOTING: frozenset({Phase.FOLLOWING}),
    Phase.FOLLOWING: frozenset({Phase.UPDATING}),
    Phase.UPDATING: frozenset({Phase.FOLLOWING, Phase.REBOOTING}),
    Phase.REBOOTING: frozenset(),
}
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
    _write(root, record)
    log.info("state %s%s", state, f": {reason}" if reason else "")
    return record


def write_fields(root: Path, **fields: Any) -> dict[str, Any]:
    """Change other records of the state file (a None value removes one), the state kept."""
    record = {k: v for k, v in {**read_state(root), **fields}.items() if v is not None}
    _write(root, record)
    return record


def _write(root: Path, record: dict[str, Any]) -> None:
    write_private(root, C.DAEMON_STATE_PATH,
                  (json.dumps(record, indent=2, sort_keys=True) + "\n").encode(), STATE_FILE_MODE)


def force_file_present(root: Path) -> bool:
    return NodeRoot(root).lexists(C.FORCE_FILE_PATH)
