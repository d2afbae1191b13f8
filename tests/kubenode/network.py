"""The test cluster's network: a network namespace of the test's own, held by a `sleep` process
(no bind mount to clean up; it dies with the test process), with a bridge `mcbr0` holding the
control plane's address and a veth pair as stand-in uplink carrying the default route. Nodes are
nspawn containers started inside it with `--network-bridge=mcbr0`: each its own namespace and
`host0` address on the bridge's subnet. Nothing is routed to or from the host.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.leaks import owned_by_fixture
from tests.node.rootfs import HarnessError, run

SUBNET = "10.213.0"
GATEWAY = f"{SUBNET}.1"    # the control plane (kube-apiserver, mcs) on the bridge
PREFIX = 24
BRIDGE = "mcbr0"


def _pdeathsig() -> None:  # pragma: no cover - in the child
    import ctypes
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def node_address(index: int) -> str:
    """The address of node number `index` (1-based) on the bridge."""
    return f"{SUBNET}.{10 + index}"


@dataclass
class ClusterNetwork:
    """The namespace and its links; `path` is what nsenter --net and nspawn take."""

    holder: subprocess.Popen[bytes] | None = None
    addresses: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        assert self.holder is not None
        return Path(f"/proc/{self.holder.pid}/ns/net")

    @classmethod
    def create(cls) -> ClusterNetwork:
        net = cls()
        net.holder = subprocess.Popen(  # noqa: S603
            ["unshare", "--net", "--", "sleep", "infinity"], stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_pdeathsig)
        owned_by_fixture(net.holder.pid)
        try:
            own = os.readlink("/proc/self/ns/net")
            deadline = time.monotonic() + 10
            while os.readlink(net.path) == own:  # unshare has not run yet
                if time.monotonic() > deadline or net.holder.poll() is not None:
                    raise HarnessError("unshare --net did not make a network namespace")
                time.sleep(0.01)
            for cmd in (["ip", "link", "set", "lo", "up"],
                        ["ip", "link", "add", BRIDGE, "type", "bridge"],
                        ["ip", "addr", "add", f"{GATEWAY}/{PREFIX}", "dev", BRIDGE],
                        ["ip", "link", "set", BRIDGE, "up"],
                        ["ip", "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1"],
                        ["ip", "link", "set", "uplink0", "up"],
                        ["ip", "link", "set", "uplink1", "up"],
                        ["ip", "route", "add", "default", "dev", "uplink0"]):
                net.run(cmd)
        except BaseException:
            net.close()
            raise
        return net

    def run(self, cmd: list[str], check: bool = True, timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
        """A command inside the namespace."""
        return run(["nsenter", f"--net={self.path}", *cmd], check=check, timeout=timeout)

    def command(self, cmd: list[str]) -> list[str]:
        """`cmd` prefixed so that it runs inside the namespace."""
        return ["nsenter", f"--net={self.path}", *cmd]

    def close(self) -> None:
        """Kill the holder: the namespace and every link in it go with its last process."""
        if self.holder is not None and self.holder.poll() is None:
            os.killpg(self.holder.pid, signal.SIGKILL)
            self.holder.wait(10)
