"""One thread long-polls the store revision for every node API watch request (so a thousand
watching nodes cost one thread, not a thousand).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging

from machineconfig.store import Store

log = logging.getLogger(__name__)


class RevisionWatch:
    """One thread long-polls the store (`wait_for_change`) and wakes every waiting request, so a
    thousand watching nodes cost one thread, not a thousand."""

    def __init__(self, store: Store, poll: float = 1.0) -> None:
        self.store = store
        self.poll = poll
        self.revision: int | None = None
        self._changed: asyncio.Future[int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._releasing = False
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mcs-watch")

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.revision is None:
            self.revision = await loop.run_in_executor(self._executor, self.store.revision)
        if self._task is None:
            self._changed = loop.create_future()
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failing = False
        while True:
            assert self.revision is not None
            try:
                revision = await loop.run_in_executor(self._executor, self.store.wait_for_change,
                                                      self.revision, self.poll)
            except Exception as e:  # noqa: BLE001 - this task must outlive any store failure
                if not failing:
                    log.warning("watching the store failed, retrying every second: %s", type(e).__name__)
                failing = True
                await asyncio.sleep(1.0)
                continue
            failing = False
            if revision != self.revision:
                self.revision = revision
                changed, self._changed = self._changed, loop.create_future()
                if changed is not None and not changed.done():
                    changed.set_result(revision)

    async def wait(self, since: int, timeout: float) -> int:
        """The revision once it differs from `since`, or when `timeout` seconds have passed.

        A `since` ahead of the store (its state was replaced) is answered at once, as the store does.
        """
        await self._start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.revision == since and not self._releasing:
            remaining = deadline - loop.time()
            if remaining <= 0 or self._changed is None:
                break
            try:
                await asyncio.wait_for(asyncio.shield(self._changed), remaining)
            except TimeoutError:
                break
        assert self.revision is not None
        return self.revision

    def release(self) -> None:
        """The server is stopping: every waiting request is answered now, with the revision it
        has (its client polls again), instead of holding the shutdown for its whole timeout."""
        self._releasing = True
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(self.revision or 0)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        # The worker thread ends by itself within `poll` seconds.
        self._executor.shutdown(wait=False, cancel_futures=True)
