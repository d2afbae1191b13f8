"""Test harness for real systemd nodes: a cached Debian rootfs booted with systemd-nspawn.

Builds the rootfs once (debootstrap, cached by a hash of its recipe), boots nodes on overlays of it,
reaches them with nsenter for setup and SSH on a loopback port for testinfra, reboots them on exit 133.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
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

log = logging.getLogger(__name__)

CACHE_DIR = Path(os.environ.get("MCT_CACHE_DIR", "/var/cache/machine-config-tests"))
REPO_ROOT = Path(__file__).resolve().parents[2]

# Everything that decides the rootfs contents; its hash names the cache entry.
ROOTFS_RECIPE: dict[str, object] = {
    "suite": "bookworm",
    "variant": "minbase",
    "mirror": "http://deb.debian.org/debian",
    "include": sorted([
        "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "python3-dbus",
        "python3-venv", "python3-yaml", "iproute2", "procps",
    ]),
    # bump when customise_rootfs() changes
    "customise": 1,
}

# nspawn exits with this status when the container's systemd asked for a reboot
REBOOT_EXIT_STATUS = 133

REQUIRED_TOOLS = ("debootstrap", "systemd-nspawn", "nsenter", "ssh", "ssh-keygen", "mount")


class HarnessError(RuntimeError):
    """A node could not be built, booted or reached."""


def missing_prerequisites() -> list[str]:
    """What the host lacks to run node tests; empty when everything is there."""
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root privileges")
    if "overlay" not in Path("/proc/filesystems").read_text():
        missing.append("overlay filesystem")
    return missing


def recipe_hash() -> str:
    blob = json.dumps(ROOTFS_RECIPE, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def run(cmd: Sequence[str], *, timeout: float = 120, check: bool = True,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a host command; a failure carries the command, status and output."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise HarnessError(f"{' '.join(cmd)} exited {proc.returncode}\n"
                           f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}")
    return proc


def customise_rootfs(root: Path) -> None:
    """Make the debootstrap tree bootable as a container image shared by many nodes."""
    # an empty machine-id lets each node get its own from --uuid
    (root / "etc/machine-id").write_text("")
    # no block devices in a container: an empty fstab keeps systemd-remount-fs quiet
    (root / "etc/fstab").write_text("")
    for unit in ("systemd-networkd.service", "systemd-resolved.service",
                 "systemd-timesyncd.service", "apt-daily.timer", "apt-daily-upgrade.timer",
                 "e2scrub_reap.service", "getty@tty1.service", "console-getty.service"):
        # the nodes share the host's network namespace; these would fight over it or just cost time
        link = root / "etc/systemd/system" / unit
        if link.is_symlink() or not link.exists():
            link.unlink(missing_ok=True)
            link.symlink_to("/dev/null")
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)


def ensure_rootfs() -> Path:
    """The cached rootfs for the current recipe, built by debootstrap if absent (~3.5 min)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    target = CACHE_DIR / f"rootfs-{recipe_hash()}"
    with open(CACHE_DIR / ".lock", "w") as lock:
        # concurrent runs (xdist, two terminals) must not debootstrap into the same tree
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").exists():
            log.info("reusing cached rootfs %s", target)
            return target
        work = CACHE_DIR / f"build-{recipe_hash()}"
        shutil.rmtree(work, ignore_errors=True)
        log.info("building rootfs %s with debootstrap", target)
        run(["debootstrap", f"--variant={ROOTFS_RECIPE['variant']}",
             "--include=" + ",".join(ROOTFS_RECIPE["include"]),  # type: ignore[arg-type]
             str(ROOTFS_RECIPE["suite"]), str(work), str(ROOTFS_RECIPE["mirror"])], timeout=1800)
        customise_rootfs(work)
        (work / ".complete").write_text(json.dumps(ROOTFS_RECIPE, sort_keys=True))
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
        return target



# ---- what every node gets on top of the rootfs ----------------------------------------------

# TEST FIXTURE: stands in for the crio and kubelet binaries; records each start, reload, stop.
FIXTURE_PROGRAM = """#!/usr/bin/python3
# TEST FIXTURE (machine-config node tests): not crio, not kubelet. It records every start,
# reload (SIGHUP) and stop (SIGTERM) of the unit it runs in, so a test can tell them apart.
import os, signal, sys, time

NAME = sys.argv[1]
EVENTS = "/var/lib/test-fixtures/%s.events" % NAME


def record(event):
    with open(EVENTS, "a") as out:
        out.write("%s %d %.3f\\n" % (event, os.getpid(), time.time()))


def on_hup(signum, frame):
    record("reload")


def on_term(signum, frame):
    record("stop")
    sys.exit(0)


os.makedirs(os.path.dirname(EVENTS), exist_ok=True)
signal.signal(signal.SIGHUP, on_hup)
signal.signal(signal.SIGTERM, on_term)
record("start")
while True:
    signal.pause()
"""

FIXTURE_UNIT = """[Unit]
Description=TEST FIXTURE standing in for {name} (records start/reload/stop)

[Service]
Type=simple
ExecStart=/usr/local/libexec/test-fixture-service {name}
ExecReload=/bin/kill -HUP $MAINPID

[Install]
WantedBy=multi-user.target
"""

# The daemon's boot-time unit: after a reboot it validates the disk and reports Done or Degraded.
DAEMON_UNIT = """[Unit]
Description=machine-config-daemon: validate the current config at boot
After=dbus.service
Requires=dbus.service

[Service]
Type=oneshot
ExecStart=/usr/local/bin/mcd resume
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
"""

MCD_WRAPPER = """#!/opt/machine-config/venv/bin/python
import sys
from mcd.cli import main
sys.exit(main())
"""

SITE_PACKAGES_BIND = "/opt/machine-config/host-site-packages"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def host_site_packages() -> Path:
    """The running interpreter's site-packages: third-party pure deps for the nodes, read-only."""
    import sysconfig
    return Path(sysconfig.get_paths()["purelib"])


def install_project(root: Path) -> None:
    """Copy the working tree's packages into the node and give it an `mcd` command."""
    target = root / "opt/machine-config"
    src = target / "src"
    src.mkdir(parents=True, exist_ok=True)
    for package in ("machineconfig", "mcd"):
        shutil.copytree(REPO_ROOT / package, src / package, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    run(["chroot", str(root), "python3", "-m", "venv", "--without-pip", "--system-site-packages",
         "/opt/machine-config/venv"])
    site = next((target / "venv/lib").glob("python3*/site-packages"))
    (site / "machine-config.pth").write_text("/opt/machine-config/src\n")
    # the node's own python3-dbus and python3-yaml come first: the host's packages (bound
    # read-only) are appended after the last system directory and only fill gaps (pydantic...)
    last_system = root / "usr/lib/python3.11/dist-packages"
    last_system.mkdir(parents=True, exist_ok=True)
    (last_system / "zz-machine-config-host.pth").write_text(SITE_PACKAGES_BIND + "\n")
    wrapper = root / "usr/local/bin/mcd"
    wrapper.write_text(MCD_WRAPPER)
    wrapper.chmod(0o755)


def install_fixtures(root: Path) -> None:
    program = root / "usr/local/libexec/test-fixture-service"
    program.parent.mkdir(parents=True, exist_ok=True)
    program.write_text(FIXTURE_PROGRAM)
    program.chmod(0o755)
    unit_dir = root / "usr/lib/systemd/system"
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for name in ("crio", "kubelet"):
        (unit_dir / f"{name}.service").write_text(FIXTURE_UNIT.format(name=name))
        link = wants / f"{name}.service"
        link.unlink(missing_ok=True)
        link.symlink_to(f"/usr/lib/systemd/system/{name}.service")
    (unit_dir / "machine-config-daemon.service").write_text(DAEMON_UNIT)
    link = wants / "machine-config-daemon.service"
    link.unlink(missing_ok=True)
    link.symlink_to("/usr/lib/systemd/system/machine-config-daemon.service")


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
        cmd = ["systemd-nspawn", "--boot", "--keep-unit", "--register=no", "--quiet",
               f"--directory={self.root}", f"--machine={self.name}",
               f"--uuid={self.machine_id}", "--console=passive",
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

    def testinfra(self) -> object:
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


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(ensure_rootfs())


# ---- MachineConfigs for the tests -----------------------------------------------------------

def file_entry(path: str, text: str, mode: int = 0o644, user: str | None = None,
               group: str | None = None, compress: bool = False) -> dict[str, object]:
    """An Ignition 3.5 file entry; `compress` stores it gzipped and base64 as MCO does."""
    import gzip

    from machineconfig.ignition.dataurl import encode_base64, encode_percent
    entry: dict[str, object] = {"path": path, "mode": mode, "overwrite": True}
    if compress:
        entry["contents"] = {"source": encode_base64(gzip.compress(text.encode())),
                             "compression": "gzip"}
    else:
        entry["contents"] = {"source": encode_percent(text.encode())}
    if user:
        entry["user"] = {"name": user}
    if group:
        entry["group"] = {"name": group}
    return entry


def machine_config(name: str, files: Sequence[dict[str, object]] = (),
                   units: Sequence[dict[str, object]] = (),
                   users: Sequence[dict[str, object]] | None = None,
                   **spec: object) -> dict[str, object]:
    config: dict[str, object] = {"ignition": {"version": "3.5.0"}}
    if files:
        config["storage"] = {"files": list(files)}
    if units:
        config["systemd"] = {"units": list(units)}
    if users is not None:
        config["passwd"] = {"users": list(users)}
    return {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
            "metadata": {"name": name}, "spec": {"config": config, **spec}}


def put_config(node: Node, mc: dict[str, object]) -> str:
    """Store a MachineConfig in the node; returns its path there."""
    name = str(mc["metadata"]["name"])  # type: ignore[index]
    path = f"/root/configs/{name}.json"
    node.put(path, json.dumps(mc, indent=1))
    return path


def apply(node: Node, current: dict[str, object], desired: dict[str, object],
          policy: str | None = None) -> tuple[int, dict[str, object]]:
    """`mcd apply` inside the node over SSH; (exit status, its JSON summary)."""
    cmd = f"mcd apply --current {put_config(node, current)} --desired {put_config(node, desired)}"
    if policy is not None:
        node.put("/root/configs/policy.yaml", policy)
        cmd += " --policy /root/configs/policy.yaml"
    proc = node.ssh(cmd, check=False, timeout=120)
    log.info("mcd apply -> %d\n%s", proc.returncode, proc.stderr[-3000:])
    try:
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        summary = {"stdout": proc.stdout, "stderr": proc.stderr}
    return proc.returncode, summary


def fixture_events(node: Node, service: str) -> list[str]:
    """The events the fixture program of `service` recorded: start, reload, stop."""
    path = node.root / f"var/lib/test-fixtures/{service}.events"
    if not path.exists():
        return []
    return [line.split()[0] for line in path.read_text().splitlines()]


def node_state(node: Node) -> dict[str, object]:
    path = node.root / "etc/machine-config-daemon/state.json"
    state: dict[str, object] = json.loads(path.read_text()) if path.exists() else {}
    return state
