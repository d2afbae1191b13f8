"""Node annotation history for the rollout checks: a thread snapshots every node record of the
local store ten times a second, so `maxUnavailable` can be checked on what the store held.

Each snapshot is one `list_nodes()` call (one read transaction), so it never mixes a node's
old state with another node's new state; two nodes updating at once would show up as one
snapshot with two nodes away from Done.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.e2e.cluster import CURRENT, DESIRED, STATE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeView:
    current: str | None
    desired: str | None
    state: str | None
    unschedulable: bool
    ready: bool

    @property
    def done(self) -> bool:
        return bool(self.current) and self.current == self.desired and self.state == "Done"

    @property
    def unavailable(self) -> bool:
        """MCO's node controller view (spec 6.2): not ready, cordoned, or not Done and not
        failing."""
        failing = self.current != self.desired and self.state in ("Degraded", "Unreconcilable")
        return not self.ready or self.unschedulable or (not self.done and not failing)


@dataclass
class NodeHistory:
    """Snapshots of the nodes' annotations while a rollout runs."""

    open_store: Callable[[], Any]  # opened in the thread: SQLite connections stay per thread
    interval: float = 0.1
    snapshots: list[tuple[float, dict[str, NodeView]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> NodeHistory:
        self._thread = threading.Thread(target=self._run, name="node-history", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        store = self.open_store()
        while True:
            # the last snapshot is taken after the stop request, so it shows at least what the
            # test saw when it ended the rollout
            stopping = self._stop.is_set()
            try:
                nodes = store.list_nodes()
            except Exception as err:  # noqa: BLE001 - a read error is reported by the test
                self.errors.append(repr(err))
            else:
                self.snapshots.append((time.monotonic(), {
                    n.name: NodeView(n.annotations.get(CURRENT), n.annotations.get(DESIRED),
                                     n.annotations.get(STATE), n.unschedulable, n.ready)
                    for n in nodes}))
            if stopping:
                return
            self._stop.wait(self.interval)

    def max_unavailable(self) -> tuple[int, str]:
        """The most nodes unavailable at once, and the first snapshot showing it."""
        worst, where = 0, ""
        for t, nodes in self.snapshots:
            away = sorted(name for name, view in nodes.items() if view.unavailable)
            if len(away) > worst:
                worst, where = len(away), f"t={t:.1f}: {away} {nodes}"
        return worst, where

    def update_windows(self, target: str) -> dict[str, tuple[float, float]]:
        """Per node: (first snapshot targeting `target`, first snapshot Done on it)."""
        windows: dict[str, tuple[float, float]] = {}
        started: dict[str, float] = {}
        for t, nodes in self.snapshots:
            for name, view in nodes.items():
                if view.desired == target and name not in started:
                    started[name] = t
                if name in started and name not in windows and view.done and \
                        view.current == target:
                    windows[name] = (started[name], t)
        return windows
