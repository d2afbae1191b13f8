"""An in-memory NodeAPI for the daemon's tests: one node, rendered configs, events, a revision
counter with a real blocking wait, and an optional drain controller that echoes desiredDrain.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from machineconfig import constants as C
from machineconfig.rendered_config import RenderedConfig
from machineconfig.store.base import ForbiddenError, NodeRecord, NotFoundError, StoreEvent


class FakeNodeAPI:
    def __init__(self, node: str = "node-1", auto_drain: bool = True,
                 daemon_keys_only: bool = False) -> None:
        self.daemon_keys_only = daemon_keys_only  # refuse other keys, as the server's node API
        self.nodes: dict[str, NodeRecord] = {node: NodeRecord(name=node)}
        self.rendered: dict[str, dict[str, Any]] = {}
        self.events: list[StoreEvent] = []
        self.patches: list[dict[str, str | None]] = []
        self.auto_drain = auto_drain
        self.revision = 1
        self.cond = threading.Condition()

    def _bump(self) -> None:
        with self.cond:
            self.revision += 1
            self.cond.notify_all()

    # ---- test helpers (the controller's side) --------------------------------------------------
    def set_annotations(self, name: str, changes: Mapping[str, str | None]) -> None:
        ann = self.nodes[name].annotations
        for key, value in changes.items():
            if value is None:
                ann.pop(key, None)
            else:
                ann[key] = value
        self._bump()

    def reasons(self) -> list[str]:
        return [e.reason for e in self.events]

    # ---- NodeAPI -------------------------------------------------------------------------------
    def get_node(self, name: str) -> NodeRecord:
        if name not in self.nodes:
            raise NotFoundError(f"node {name} not found")
        node = self.nodes[name]
        return NodeRecord(node.name, dict(node.labels), dict(node.annotations), node.unschedulable)

    def patch_node_annotations(self, name: str, changes: Mapping[str, str | None]) -> NodeRecord:
        if self.daemon_keys_only and set(changes) - C.DAEMON_OWNED_ANNOTATIONS:
            raise ForbiddenError(f"not daemon-owned: {sorted(set(changes) - C.DAEMON_OWNED_ANNOTATIONS)}")
        self.patches.append(dict(changes))
        self.set_annotations(name, changes)
        drain = changes.get(C.DESIRED_DRAIN_ANNOTATION)
        if self.auto_drain and drain:
            self.nodes[name].unschedulable = drain.startswith("drain-")
            self.set_annotations(name, {C.LAST_APPLIED_DRAIN_ANNOTATION: drain})
        return self.get_node(name)

    def get_rendered(self, name: str) -> RenderedConfig:
        if name not in self.rendered:
            raise NotFoundError(f"rendered config {name} not found")
        return RenderedConfig(self.rendered[name])

    def record_event(self, kind: str, name: str, reason: str, message: str,
                     type: str = "Normal") -> None:
        self.events.append(StoreEvent(len(self.events) + 1, "", kind, name, reason, message, type))

    def wait_for_change(self, since: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.revision <= since:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.cond.wait(remaining)
            return self.revision
