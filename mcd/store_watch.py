"""The daemon's watch on the store: one thread in the store's blocking long poll, so the daemon
loop itself can sleep in one poll(2) on this watch's pipe, the drift monitor's inotify fd and
the next due timer, and wakes for nothing else.
"""
from __future__ import annotations

import logging
import os
import threading

from machineconfig.store.base import NodeAPI

log = logging.getLogger(__name__)


class StoreWatch:
    """Long-polls `api.wait_for_change` from `since` in a thread; `fileno()` turns readable when
    the revision moved or a wait failed, and `take()` says which.

    A failing wait is retried after `backoff_min`, doubling up to `backoff_max`. The pipe's write
    end belongs to the thread, which closes it when it ends, so a late write never reaches a
    reused descriptor.
    """

    def __init__(self, api: NodeAPI, since: int, chunk: float, backoff_min: float = 1.0,
                 backoff_max: float = 60.0) -> None:
        self.api, self.chunk = api, chunk
        self.backoff_min, self.backoff_max = backoff_min, backoff_max
        self._read_fd, self._write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._lock = threading.Lock()
        self._revision = since
        self._error: Exception | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(since,), name="mcd-store-watch",
                                        daemon=True)
        self._thread.start()

    def fileno(self) -> int:
        return self._read_fd

    def _poke(self) -> None:
        try:
            os.write(self._write_fd, b"x")
        except (BlockingIOError, BrokenPipeError):
            pass  # already readable, or the reader is gone

    def _run(self, since: int) -> None:
        backoff = 0.0
        try:
            while not self._stopped.is_set():
                try:
                    revision = self.api.wait_for_change(since, self.chunk)
                except Exception as err:  # noqa: BLE001 - the loop re-raises it in its thread
                    with self._lock:
                        self._error = err
                    self._poke()
                    backoff = min(max(backoff * 2, self.backoff_min), self.backoff_max)
                    self._stopped.wait(backoff)
                    continue
                backoff = 0.0
                if revision != since:
                    since = revision
                    with self._lock:
                        self._revision = revision
                    self._poke()
        finally:
            os.close(self._write_fd)

    def take(self) -> int:
        """The latest revision; raises what the last failed wait raised (once)."""
        try:
            while os.read(self._read_fd, 512):
                pass
        except BlockingIOError:
            pass
        with self._lock:
            error, self._error = self._error, None
            revision = self._revision
        if error is not None:
            raise error
        return revision

    def stop(self, join: float = 0.0) -> None:
        """Let the thread end after its current wait (it is a daemon thread: an exiting process
        does not wait for it); `join` seconds at most are spent waiting for that."""
        self._stopped.set()
        self._thread.join(join)
        os.close(self._read_fd)
