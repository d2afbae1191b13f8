"""Shared by every test directory.

- The call-phase report kept on the item (`item.rep_call`), so fixtures of the node, e2e and
  vagrant tests can dump consoles and logs when a test failed.
- `_stops_what_it_starts` (autouse): after each test, no thread, child process or pending asyncio
  task that the test started may be left (see tests/support/leaks.py). Whatever a session- or
  module-scoped fixture starts belongs to that fixture and is not counted.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.leaks import Snapshot, leaks_after

# seconds a test's leftovers get to finish (a thread joining, a process exiting after SIGTERM)
LEAK_GRACE = 2.0


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _stops_what_it_starts(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails the test's teardown naming every thread, child process and pending asyncio task it
    left behind (after up to LEAK_GRACE s). Leaked processes are killed afterwards, so that one
    leak does not spill into the next tests. `@pytest.mark.allow_leaks` opts a test out."""
    if request.node.get_closest_marker("allow_leaks") is not None:
        yield
        return
    before = Snapshot.take()
    yield
    leaks = leaks_after(before, grace=LEAK_GRACE)
    if leaks:
        leaks.kill_processes()
        pytest.fail(f"{request.node.nodeid} left behind:\n{leaks.describe()}", pytrace=False)


# Directories in the order they run: quick, self-contained tests first, so that a failure
# shows early and the background prebuild (tests/prebuild.py) has the unit and kube tests'
# minutes to debootstrap what the node, e2e and Vagrant tests boot.
RUN_ORDER = ("unit", "kube", "image", "node", "hosts", "e2e", "kubenode", "vagrant")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    root = Path(__file__).parent

    def rank(item: pytest.Item) -> int:
        parts = Path(str(item.fspath)).relative_to(root).parts
        top = parts[0] if len(parts) > 1 else ""
        return RUN_ORDER.index(top) if top in RUN_ORDER else len(RUN_ORDER)

    items.sort(key=rank)  # stable: each directory keeps its own order
