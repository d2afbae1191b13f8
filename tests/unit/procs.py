"""Child processes of the tests and benchmarks."""
from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence


def stop_all(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 15) -> None:
    """SIGTERM to every process first, then wait for each up to `timeout` s and kill a straggler."""
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
