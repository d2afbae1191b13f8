"""The mini cluster of vagrant/ for real: the Debian box built (cached by its recipe), libvirt
started by hand when it is not running, two VMs brought up with `vagrant up` (plain QEMU where
the host has no usable KVM), both join from their fw_cfg pointer config and reach Done, one
kubelet change and a kernel argument roll out with a reboot per VM within maxUnavailable 1 (the
argument through a GRUB drop-in and update-grub, then on /proc/cmdline), `core` logs in with the
MachineConfig's SSH key before and after a rotation (no reboot), and the tests/hosts
suite passes against both VMs. `vagrant destroy -f` and the host-side programs are stopped
whatever happens.

Timeouts follow measured progress (tests/vagrant/progress.py): every boot stage of every VM has a
budget, and a wait fails only once a stage is past its budget with no new console or log line for
STALL seconds (or at 3x its budget), naming the stage. Each phase's duration, every VM's boot
stages and the box build's steps are printed at the end, pass or fail, and kept in
WORKDIR/timings.txt.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import (CURRENT, DESIRED, STATE, free_port, node_summary,
                               open_local_store, pool_summary)
from tests.e2e.conftest import set_max_unavailable
from tests.e2e.history import NodeHistory
from tests.support.cachedir import cache_dir
from tests.vagrant.progress import BootWatch

log = logging.getLogger(__name__)

# the last resort only: the waits below fail first, naming the stage that hung
pytestmark = [pytest.mark.vagrant, pytest.mark.timeout(3600)]

REPO = Path(__file__).resolve().parents[2]
VAGRANT_DIR = REPO / "vagrant"
RUNS_DIR = Path("/var/tmp/machine-config-tests")
CACHE_DIR = cache_dir()
WORKERS = ("worker-1", "worker-2")
KUBELET_CONF = "/etc/kubernetes/kubelet.conf"
TOOLS = ("vagrant", "virsh", "libvirtd", "virtlogd", "qemu-system-x86_64", "qemu-img",
         "debootstrap", "sfdisk", "grub-mkimage", "mkfs.ext4", "ssh", "openssl", "curl")
# Budgets (s) of the waits; each VM boot stage has its own (progress.STAGES). A wait past its
# budget goes on while the consoles or logs advance (a new line within STALL s), up to 3x.
UP_BUDGET = 900
JOIN_BUDGET = 600
ROLLOUT_BUDGET = 900
STALL = 120
# Vagrant's own wait for ssh must not end first: the watch decides
VAGRANT_BOOT_TIMEOUT = 3 * UP_BUDGET


def require_prerequisites() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if os.geteuid() != 0:
        pytest.skip(f"the Vagrant test needs root ({', '.join(missing + ['root'])})")
    if missing or not Path("/usr/lib/grub/i386-pc/boot.img").exists():
        pytest.fail(f"Vagrant test prerequisites missing: {', '.join(missing) or 'grub-pc-bin'} "
                    "(scripts/setup test installs them)")


@dataclass
class Timings:
    path: Path
    phases: list[tuple[str, float]] = field(default_factory=list)
    start: float = field(default_factory=time.monotonic)

    extra: list[str] = field(default_factory=list)  # more tables, written after the phases

    def phase(self, name: str) -> _Phase:
        return _Phase(self, name)

    def record(self, name: str, seconds: float) -> None:
        self.phases.append((name, seconds))
        line = f"[vagrant test] {name}: {seconds:.0f}s"
        print(line, flush=True)
        log.info(line)
        self.write()

    def write(self) -> None:
        lines = [f"{name:<40} {seconds:7.0f}s" for name, seconds in self.phases]
        lines.append(f"{'total so far':<40} {time.monotonic() - self.start:7.0f}s")
        self.path.write_text("\n".join(lines + self.extra) + "\n")


@dataclass
class _Phase:
    timings: Timings
    name: str
    began: float = 0.0

    def __enter__(self) -> _Phase:
        self.began = time.monotonic()
        print(f"[vagrant test] {self.name} ...", flush=True)
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        suffix = "" if exc_type is None else " (failed)"
        self.timings.record(self.name + suffix, time.monotonic() - self.began)


@dataclass
class VagrantCluster:
    """One `vagrant up` of vagrant/Vagrantfile with its own state, network, port and names."""

    workdir: Path
    port: int = field(default_factory=free_port)
    subnet: str = "192.168.126"
    failed: bool = True  # until the test says otherwise
    watch: BootWatch | None = None  # from `vagrant up` on

    def __post_init__(self) -> None:
        self.input_dir = self.workdir / "input"
        self.state_dir = self.workdir / "state"
        self.console_dir = self.workdir / "console"
        self.ssh_config = self.workdir / "ssh-config"
        self.timings = Timings(self.workdir / "timings.txt")
        self.network = f"mct-{os.getpid()}"
        self.env = {
            **os.environ,
            "VAGRANT_CHECKPOINT_DISABLE": "1",
            "VAGRANT_DOTFILE_PATH": str(self.workdir / "dotvagrant"),
            "MC_BOX": "debian", "MC_WORKERS": str(len(WORKERS)), "MC_MEMORY": "1024",
            "MC_STATE": str(self.state_dir), "MC_INPUT": str(self.input_dir),
            "MC_CONSOLE_DIR": str(self.console_dir), "MC_SUBNET": self.subnet,
            "MC_NETWORK": self.network, "MC_PORT": str(self.port),
            "MC_PREFIX": f"mct-{os.getpid()}-",
            "MC_BOOT_TIMEOUT": str(VAGRANT_BOOT_TIMEOUT),
        }
        self.env.pop("MC_ACCEL", None)

    @property
    def url(self) -> str:
        return f"https://{self.subnet}.1:{self.port}"

    def vagrant(self, *args: str, timeout: float, log_name: str) -> subprocess.CompletedProcess[str]:
        """Run vagrant in vagrant/; its (long, progress-bar) output goes to WORKDIR/<log_name>."""
        with open(self.workdir / log_name, "a") as out:
            proc = subprocess.run(["vagrant", *args], cwd=VAGRANT_DIR, env=self.env, text=True,
                                  stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        return proc

    def up(self) -> None:
        """`vagrant up`, watched: fails naming the stage a VM (or Vagrant) is stuck in."""
        self.watch = BootWatch(self.console_dir, WORKERS, self.workdir / "up.log",
                               (self.state_dir / "mcc.log", self.state_dir / "mcs.log"),
                               stall=STALL)
        with open(self.workdir / "up.log", "a") as out:
            proc = subprocess.Popen(["vagrant", "up", "--provider=libvirt"], cwd=VAGRANT_DIR,
                                    env=self.env, text=True, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        try:
            self.watch.wait(lambda: proc.poll() is not None, "vagrant up", UP_BUDGET)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        assert proc.returncode == 0, f"vagrant up exited {proc.returncode}:\n" \
            f"{self.log_tail('up.log')}\n{self.consoles()}\n{self.watch.table()}"

    def log_tail(self, log_name: str, lines: int = 30) -> str:
        try:
            text = (self.workdir / log_name).read_text(errors="replace")
        except OSError:
            return ""
        kept = [l for l in text.replace("\r", "\n").splitlines() if "Progress:" not in l]
        return "\n".join(kept[-lines:])

    def consoles(self, lines: int = 25) -> str:
        parts = []
        for path in sorted(self.console_dir.glob("*.log")):
            text = path.read_text(errors="replace").replace("\r", "")
            parts.append(f"--- {path.name}\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts)

    def store(self) -> Any:
        return open_local_store(self.input_dir, self.state_dir)

    def ssh(self, name: str, command: str, timeout: float = 120) -> str:
        proc = subprocess.run(["ssh", "-F", str(self.ssh_config), name, command],
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"ssh {name} {command!r} exited {proc.returncode}: "
                                 f"{proc.stderr[-500:]}")
        return proc.stdout

    def stop_host_side(self) -> None:
        subprocess.run([str(VAGRANT_DIR / "cluster"), "stop", "--state", str(self.state_dir),
                        "--network", self.network, "--subnet", self.subnet,
                        "--port", str(self.port)],
                       timeout=120, check=False, capture_output=True)


def describe(cluster: VagrantCluster, store: Any) -> str:
    try:
        state = pool_summary(dict(store.get_object("MachineConfigPool", "worker"))) + "\n" + \
            node_summary(store.list_nodes())
    except Exception as err:  # noqa: BLE001 - a description must not hide the failure
        state = f"(store unreadable: {err!r})"
    return f"{state}\nmcc:\n{tail(cluster.state_dir / 'mcc.log')}\nconsoles:\n{cluster.consoles()}"


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def pool_updated(store: Any, target: str | None = None) -> str | None:
    """The worker pool's config when it is Updated and both VMs are Done on it."""
    pool = dict(store.get_object("MachineConfigPool", "worker"))
    spec = ((pool.get("spec") or {}).get("configuration") or {}).get("name")
    status = ((pool.get("status") or {}).get("configuration") or {}).get("name")
    cond = {c.get("type"): c.get("status") for c in (pool.get("status") or {}).get("conditions") or []}
    if not spec or spec != status or cond.get("Updated") != "True":
        return None
    if target is not None and spec != target:
        return None
    nodes = {n.name: n.annotations for n in store.list_nodes()}
    if sorted(nodes) != sorted(WORKERS) or any(
            a.get(CURRENT) != spec or a.get(DESIRED) != spec or a.get(STATE) != "Done"
            for a in nodes.values()):
        return None
    return str(spec)


SSH_KEYS = ("first", "second")


def write_ssh_key_config(cluster: VagrantCluster, key: str) -> None:
    """The worker pool's MachineConfig giving `core` the test's `key` (replaced atomically)."""
    mc = {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
          "metadata": {"name": "99-worker-ssh",
                       "labels": {"machineconfiguration.openshift.io/role": "worker"}},
          "spec": {"config": {"ignition": {"version": "3.2.0"}, "passwd": {"users": [
              {"name": "core",
               "sshAuthorizedKeys": [(cluster.workdir / f"{key}.pub").read_text().strip()]}]}}}}
    tmp = cluster.input_dir / ".99-worker-ssh.yaml.tmp"
    tmp.write_text(yaml.safe_dump(mc, sort_keys=False))
    os.replace(tmp, cluster.input_dir / "99-worker-ssh.yaml")


def ssh_as_core(cluster: VagrantCluster, name: str, key: str) -> subprocess.CompletedProcess[str]:
    """A login as `core` with only the test's `key` (Vagrant's own key is not offered)."""
    return subprocess.run(["ssh", "-F", str(cluster.ssh_config), "-l", "core",
                           "-i", str(cluster.workdir / key), "-o", "IdentitiesOnly=yes",
                           "-o", "BatchMode=yes", name, "id -un"],
                          capture_output=True, text=True, timeout=120)


KARG = "machine_config.test=grub"
KARGS_CONFIG = {
    "apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfig",
    "metadata": {"name": "99-worker-kargs",
                 "labels": {"machineconfiguration.openshift.io/role": "worker"}},
    "spec": {"config": {"ignition": {"version": "3.2.0"}}, "kernelArguments": [KARG]},
}


def check_kernel_argument(cluster: VagrantCluster) -> None:
    """KARG reached both VMs through GRUB: in the daemon's drop-in, in the grub.cfg update-grub
    generated (not the box's hand-written one) and on the booted kernel's command line."""
    import testinfra  # pytest-testinfra; imported here so collection never needs it

    for name in WORKERS:
        host = testinfra.get_host(f"ssh://{name}", ssh_config=str(cluster.ssh_config),
                                  sudo=True)
        cmdline = host.file("/proc/cmdline").content_string.split()
        assert KARG in cmdline, f"{name}: {KARG} not on /proc/cmdline {cmdline}"
        dropin = host.file("/etc/default/grub.d/50-machine-config.cfg")
        assert dropin.is_file and dropin.mode == 0o644 and dropin.user == "root", name
        assert f'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX {KARG}"' in dropin.content_string
        grub_cfg = host.file("/boot/grub/grub.cfg").content_string
        assert "### BEGIN /etc/grub.d/10_linux ###" in grub_cfg, \
            f"{name}: /boot/grub/grub.cfg was not generated by grub-mkconfig"
        linux = [line for line in grub_cfg.splitlines() if line.strip().startswith("linux")]
        assert linux and all(KARG in line and "console=ttyS0,115200n8" in line
                             for line in linux), f"{name}: grub.cfg linux lines {linux}"


def box_build_steps(log_text: str) -> list[str]:
    """The box build's steps with their durations, from its "[box HH:MM:SS] what" lines."""
    steps = []
    for line in log_text.splitlines():
        match = re.match(r"\[box (\d\d):(\d\d):(\d\d)\] (.*)", line)
        if match:
            h, m, s_ = (int(g) for g in match.groups()[:3])
            steps.append((h * 3600 + m * 60 + s_, match.group(4)))
    out = []
    for (at, what), (after, _) in zip(steps, steps[1:]):
        out.append(f"  box       {what[:60]:<60} {(after - at) % 86400:6d}s")
    return out


# function scope: everything it starts is stopped before tests/conftest.py's leak check
@pytest.fixture
def cluster() -> Iterator[VagrantCluster]:
    require_prerequisites()
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    workdir = RUNS_DIR / f"vagrant-{os.getpid()}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    workdir.chmod(0o711)  # QEMU (libvirt-qemu) reads the pointer configs under it
    running = VagrantCluster(workdir)
    running.console_dir.mkdir()
    shutil.copytree(REPO / "examples/cluster", running.input_dir)
    set_max_unavailable(running.input_dir / "pools.yaml", "worker", 1)
    for key in SSH_KEYS:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key,
                        "-f", str(workdir / key)], check=True, timeout=30)
    write_ssh_key_config(running, "first")
    libvirt_started = False
    try:
        # libvirtd first: the box build deletes vagrant-libvirt's copy of an older box
        with running.timings.phase("libvirtd"):
            proc = subprocess.run([str(VAGRANT_DIR / "libvirtd"), "start"], capture_output=True,
                                  text=True, timeout=120)
            assert proc.returncode == 0, f"vagrant/libvirtd start: {proc.stderr}"
            libvirt_started = proc.stdout.strip() == "started"
        with running.timings.phase("box build (vagrant/box/build)"):
            proc = subprocess.run([sys.executable, str(VAGRANT_DIR / "box/build"),
                                   "--cache-dir", str(CACHE_DIR)],
                                  capture_output=True, text=True, timeout=1800)
            (workdir / "box-build.log").write_text(proc.stdout + proc.stderr)
            running.timings.extra += ["box build steps:"] + box_build_steps(proc.stderr)
            assert proc.returncode == 0, f"vagrant/box/build failed:\n{proc.stderr[-3000:]}"
        yield running
    finally:
        try:
            with running.timings.phase("vagrant destroy -f"):
                destroyed = running.vagrant("destroy", "-f", timeout=600, log_name="destroy.log")
            if destroyed.returncode != 0:
                log.error("vagrant destroy -f exited %d:\n%s", destroyed.returncode,
                          running.log_tail("destroy.log"))
        finally:
            running.stop_host_side()
            if libvirt_started:
                subprocess.run([str(VAGRANT_DIR / "libvirtd"), "stop"], timeout=120, check=False)
            if running.watch is not None:
                running.watch.poll()
                running.timings.extra += ["boot stages (from the serial consoles and Vagrant's "
                                          "output):", running.watch.table()]
            running.timings.write()
            print("[vagrant test] timings:\n" + running.timings.path.read_text(), flush=True)
            if not running.failed:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                print(f"[vagrant test] logs, consoles and timings kept in {workdir}", flush=True)


def test_two_vms_join_roll_out_a_reboot_and_pass_the_host_checks(cluster: VagrantCluster
                                                                  ) -> None:
    with cluster.timings.phase(f"vagrant up ({len(WORKERS)} VMs)"):
        cluster.up()
    store = cluster.store()
    watch = cluster.watch
    assert watch is not None

    with cluster.timings.phase("join: both VMs Done"):
        joined = watch.wait(lambda: pool_updated(store),
                            "both VMs to join the worker pool and report Done", JOIN_BUDGET,
                            lambda: describe(cluster, store), interval=2)
    ssh_config = subprocess.run(["vagrant", "ssh-config"], cwd=VAGRANT_DIR, env=cluster.env,
                                capture_output=True, text=True, timeout=120, check=True).stdout
    cluster.ssh_config.write_text(ssh_config)
    boots = {name: cluster.ssh(name, "cat /proc/sys/kernel/random/boot_id").strip()
             for name in WORKERS}
    for name in WORKERS:
        # the VM named itself from its pointer config, and the daemon runs from the served unit
        assert cluster.ssh(name, "hostname").strip() == name
        assert cluster.ssh(name, "systemctl is-active machine-config-daemon").strip() == "active"
        # the MachineConfig's key lets core log in (stock sshd reads the fragment via the drop-in)
        login = ssh_as_core(cluster, name, "first")
        assert (login.returncode, login.stdout.strip()) == (0, "core"), login.stderr

    # a kubelet change (the default disruption policy reboots for kubelet.conf) and a kernel
    # argument (a GRUB drop-in and update-grub in the VM) in one file, so one rendered config
    # and one reboot per VM carry both
    path = cluster.input_dir / "kubeletconfig.yaml"
    kubelet_config = yaml.safe_load(path.read_text())
    kubelet_config["spec"]["kubeletConfig"]["maxPods"] = 242
    with cluster.timings.phase("rollout with reboots (maxUnavailable 1)"):
        with NodeHistory(cluster.store, interval=0.5) as history:
            tmp = path.with_name(".kubeletconfig.yaml.tmp")
            tmp.write_text(yaml.safe_dump_all([kubelet_config, KARGS_CONFIG], sort_keys=False))
            os.replace(tmp, path)
            target = watch.wait(
                lambda: (lambda t: t if t and t != joined else None)(
                    dict(store.get_object("MachineConfigPool", "worker"))["spec"]
                    ["configuration"]["name"]),
                "a new rendered config for the worker pool", 120,
                lambda: describe(cluster, store))
            watch.wait(lambda: pool_updated(store, target), f"both VMs Done on {target}",
                       ROLLOUT_BUDGET, lambda: describe(cluster, store), interval=2)
    assert not history.errors, history.errors
    worst, where = history.max_unavailable()
    assert worst <= 1, f"{worst} VMs unavailable at once: {where}"
    windows = history.update_windows(target)
    assert sorted(windows) == sorted(WORKERS), windows
    (first_start, first_done), (second_start, _) = sorted(windows.values())
    assert second_start >= first_done, f"the VMs updated at the same time: {windows}"
    for name in WORKERS:
        assert cluster.ssh(name, "cat /proc/sys/kernel/random/boot_id").strip() != boots[name], \
            f"{name} did not reboot"
        assert '"maxPods": 242' in cluster.ssh(name, f"cat {KUBELET_CONF}")
    check_kernel_argument(cluster)

    boots = {name: cluster.ssh(name, "cat /proc/sys/kernel/random/boot_id").strip()
             for name in WORKERS}
    with cluster.timings.phase("SSH key rotation (no reboot)"):
        write_ssh_key_config(cluster, "second")
        rotated = watch.wait(
            lambda: (lambda t: t if t and t != target else None)(
                dict(store.get_object("MachineConfigPool", "worker"))["spec"]
                ["configuration"]["name"]),
            "a rendered config with the rotated key", 120, lambda: describe(cluster, store))
        watch.wait(lambda: pool_updated(store, rotated), f"both VMs Done on {rotated}",
                   ROLLOUT_BUDGET, lambda: describe(cluster, store), interval=2)
    for name in WORKERS:
        login = ssh_as_core(cluster, name, "second")
        assert (login.returncode, login.stdout.strip()) == (0, "core"), login.stderr
        refused = ssh_as_core(cluster, name, "first")
        assert refused.returncode == 255 and "Permission denied" in refused.stderr, refused
        assert cluster.ssh(name, "cat /proc/sys/kernel/random/boot_id").strip() == boots[name], \
            f"{name} rebooted for an SSH key change"

    with cluster.timings.phase("tests/hosts against the VMs"):
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             str(REPO / "tests/hosts"), "--hosts=" + ",".join(f"ssh://{n}" for n in WORKERS),
             f"--ssh-config={cluster.ssh_config}", "--sudo",
             f"--mc-config={cluster.url}/config/worker",
             f"--mc-ca={cluster.state_dir / 'tls/ca.crt'}",
             f"--mc-token-file={cluster.state_dir / 'tokens'}"],
            cwd=REPO, capture_output=True, text=True, timeout=900)
        (cluster.workdir / "hosts-suite.log").write_text(proc.stdout + proc.stderr)
        print(proc.stdout[-1500:], flush=True)
    assert proc.returncode == 0, f"tests/hosts failed against the VMs:\n{proc.stdout[-6000:]}"
    summary = proc.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "failed" not in summary, summary
    cluster.failed = False
