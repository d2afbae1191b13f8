"""Booting test nodes: systemd-nspawn containers on overlays of the cached rootfs.

Reached with nsenter for setup and SSH on a loopback port for testinfra; a reboot inside a node
ends nspawn with status 133 and the harness boots it again on the same overlay.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.node.rootfs import (REBOOT_EXIT_STATUS, SITE_PACKAGES_BIND, HarnessError,
                               host_site_packages, install_fixtures, install_project, run)

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- nodes ------------------------------------------------------------------------------------

@dataclass
class Node:
    """One systemd-nspawn container booted on an overlay of the cached rootfs."""

    name: str
    base: Path
    workdir: Path
    ssh_key: Path
    ssh_port: int = field(default_factory=free_port)
    machine_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    proc: subprocess.Popen[bytes] | None = None
    boots: int = 0
    exit_statuses: list[int] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return self.workdir / "merged"

    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"

    @property
    def ssh_config(self) -> Path:
        return self.workdir / "ssh_config"

    # -- lifecycle --
    def create(self) -> None:
        for sub in ("upper", "work", "merged"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={self.base},upperdir={self.workdir / 'upper'},"
             f"workdir={self.workdir / 'work'}", str(self.root)])
        (self.workdir / "mounted").touch()
        root = self.root
        (root / "etc/hostname").write_text(self.name + "\n")
        (root / "etc/machine-id").write_text(self.machine_id + "\n")
        sshd = root / "etc/ssh/sshd_config.d/test-node.conf"
        # the nodes share the host's network namespace: each sshd gets its own loopback port
        sshd.write_text(f"Port {self.ssh_port}\nListenAddress 127.0.0.1\n"
                        "PermitRootLogin prohibit-password\nUseDNS no\n")
        ssh_dir = root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(Path(f"{self.ssh_key}.pub").read_text())
        run(["chroot", str(root), "useradd", "--create-home", "--shell", "/bin/bash", "core"])
        install_fixtures(root)
        install_project(root)
        self.ssh_config.write_text(
            f"Host {self.name}\n  HostName 127.0.0.1\n  Port {self.ssh_port}\n  User root\n"
            f"  IdentityFile {self.ssh_key}\n  StrictHostKeyChecking no\n"
            "  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n")

    def boot(self) -> None:
        """Start systemd-nspawn; without a host systemd it needs --keep-unit and --register=no."""
        console = open(self.console_log, "ab")
        # read-only, not passive: a passive console's pty is read by nobody, and once ~10 KB of
        # status lines fill it, PID 1 blocks in its next console write (a hang at shutdown)
        cmd = ["systemd-nspawn", "--boot", "--keep-unit", "--register=no", "--quiet",
               f"--directory={self.root}", f"--machine={self.name}",
               f"--uuid={self.machine_id}", "--console=read-only",
               f"--bind-ro={host_site_packages()}:{SITE_PACKAGES_BIND}"]
        # its own session: a Ctrl-C in the pytest terminal must not bypass the orderly stop
        self.proc = subprocess.Popen(cmd, stdout=console, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        console.close()
        (self.workdir / "nspawn.pid").write_text(str(self.proc.pid))
        self.boots += 1
        log.info("node %s: boot %d (nspawn pid %d)", self.name, self.boots, self.proc.pid)

    def leader(self) -> int:
        """PID (host view) of the node's systemd."""
        assert self.proc is not None
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        for _ in range(100):
            pids = children.read_text().split() if children.exists() else []
            if pids:
                return int(pids[0])
            time.sleep(0.05)
        raise HarnessError(f"node {self.name}: no container init under nspawn {self.proc.pid}")

    def wait_ready(self, timeout: float = 90) -> None:
        """Until systemd finished booting and sshd answers on the node's port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise HarnessError(f"node {self.name}: nspawn exited during boot "
                                   f"({self.proc and self.proc.returncode}); see "
                                   f"{self.console_log}:\n{self.console_tail()}")
            try:
                state = self.nsenter(["systemctl", "is-system-running", "--wait"],
                                     check=False, timeout=max(1, deadline - time.monotonic()))
                if state.stdout.strip() in ("running", "degraded"):
                    probe = self.ssh("true", check=False, timeout=10)
                    if probe.returncode == 0:
                        return
            except (HarnessError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.2)
        raise HarnessError(f"node {self.name} not ready after {timeout}s:\n{self.console_tail()}")

    def console_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.console_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_for_reboot(self, timeout: float = 120) -> None:
        """The node asked for a reboot: nspawn must end with 133; boot it again and wait."""
        assert self.proc is not None
        try:
            status = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"node {self.name} did not reboot within {timeout}s") from None
        self.exit_statuses.append(status)
        if status != REBOOT_EXIT_STATUS:
            raise HarnessError(f"node {self.name}: nspawn exited {status}, not "
                               f"{REBOOT_EXIT_STATUS} (reboot):\n{self.console_tail()}")
        log.info("node %s rebooted (nspawn exit %d)", self.name, status)
        self.boot()
        self.wait_ready()

    def request_stop(self) -> None:
        """Ask for an orderly poweroff without waiting (nspawn turns SIGTERM into one)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30) -> None:
        """Orderly poweroff (nspawn turns SIGTERM into a shutdown request), then SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("node %s ignored SIGTERM; killing it", self.name)
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def remove(self) -> None:
        self.stop()
        if (self.workdir / "mounted").exists():
            if run(["umount", str(self.root)], check=False).returncode != 0:
                run(["umount", "--lazy", str(self.root)], check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- reaching the node --
    def nsenter(self, cmd: Sequence[str], *, check: bool = True, timeout: float = 60,
                input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command in every namespace of the node (setup and checks without SSH)."""
        return run(["nsenter", "-t", str(self.leader()), "-a", *cmd], check=check,
                   timeout=timeout, input=input)

    def ssh(self, command: str, *, check: bool = True, timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
        return run(["ssh", "-F", str(self.ssh_config), self.name, command], check=check,
                   timeout=timeout)

    def testinfra(self) -> Any:
        import testinfra
        return testinfra.get_host(f"ssh://{self.name}", ssh_config=str(self.ssh_config),
                                  controlpersist=0)

    def put(self, node_path: str, data: str) -> None:
        """Write a file into the node (through the overlay, as root)."""
        target = self.root / node_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(data)


class NodeFactory:
    """Creates nodes for a test session and always removes them."""

    def __init__(self, base: Path, workroot: Path) -> None:
        self.base = base
        self.workroot = workroot
        self.nodes: list[Node] = []
        workroot.mkdir(parents=True, exist_ok=True)
        self.ssh_key = workroot / "id_ed25519"
        if not self.ssh_key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.ssh_key)])

    def create(self, name: str) -> Node:
        node = Node(name, self.base, self.workroot / name, self.ssh_key)
        self.nodes.append(node)
        node.create()
        node.boot()
        node.wait_ready()
        return node

    def destroy(self, node: Node) -> None:
        try:
            node.remove()
        finally:
            if node in self.nodes:
                self.nodes.remove(node)

    def close(self) -> None:
        errors = []
        for node in self.nodes:  # every node shuts down at once; then each is waited for
            node.request_stop()
        for node in list(self.nodes):
            try:
                self.destroy(node)
            except Exception as err:  # noqa: BLE001 - remove every node, report at the end
                errors.append(f"{node.name}: {err}")
        shutil.rmtree(self.workroot, ignore_errors=True)
        if errors:
            raise HarnessError("cleanup failed: " + "; ".join(errors))


def reap_stale(parent: Path) -> None:
    """Stop and unmount nodes left behind by a run that was killed before its cleanup."""
    if not parent.exists():
        return
    for run_dir in parent.iterdir():
        owner = run_dir.name.rsplit("-", 1)[-1]
        if owner.isdigit() and Path(f"/proc/{owner}").exists():
            continue  # another live session owns it
        for pid_file in run_dir.glob("*/nspawn.pid"):
            pid = int(pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline")
            if cmdline.exists() and b"systemd-nspawn" in cmdline.read_bytes():
                os.kill(pid, signal.SIGKILL)
        for merged in run_dir.glob("*/merged"):
            run(["umount", "--lazy", str(merged)], check=False)
        shutil.rmtree(run_dir, ignore_errors=True)
