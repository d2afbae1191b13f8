"""Child processes of the tests and benchmarks."""
from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Sequence


def stop_all(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 15) -> None:
    """SIGTERM to every process first, then wait for each up to `timeout` s and kill a straggler."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `predicate` every 0.1 s until it is true; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
