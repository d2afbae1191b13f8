"""The node image: a Debian rootfs built once by debootstrap (cached by a hash of its recipe) and
what each node gets on top of it (test fixture crio/kubelet, the daemon's unit, the project).

`python -m tests.node.rootfs` builds the cache ahead of a test run (a CI step may do that).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sysconfig
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.support.cachedir import cache_dir

log = logging.getLogger(__name__)

CACHE_DIR = cache_dir()
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


def require_prerequisites(what: str) -> None:
    """In a pytest run: skip when not root (a developer's quick run), fail when root lacks a
    prerequisite (CI runs as root, where a missing tool must never turn into a skip)."""
    import pytest  # only test sessions call this; the nodes CLI imports this module too

    missing = missing_prerequisites()
    if not missing:
        return
    if os.geteuid() != 0:
        pytest.skip(f"{what} tests need root ({', '.join(missing)})")
    pytest.fail(f"{what} test prerequisites missing: {', '.join(missing)} "
                "(apt-get install debootstrap systemd-container openssh-client)")


def recipe_hash(recipe: dict[str, object] = ROOTFS_RECIPE) -> str:
    blob = json.dumps(recipe, sort_keys=True).encode()
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


def ensure_rootfs(recipe: dict[str, object] = ROOTFS_RECIPE,
                  customise: Callable[[Path], None] = customise_rootfs,
                  name: str = "rootfs") -> Path:
    """The cached rootfs for a recipe (the node's by default), built by debootstrap if absent
    (~3.5 min). Other trees (the container image's base) use their own recipe and name."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    digest = recipe_hash(recipe)
    target = CACHE_DIR / f"{name}-{digest}"
    # one lock per kind of tree: building one must not hold up tests that only need the other
    lock_name = ".lock" if name == "rootfs" else f".{name}.lock"
    with open(CACHE_DIR / lock_name, "w") as lock:
        # concurrent runs (xdist, two terminals) must not debootstrap into the same tree
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").exists():
            log.info("reusing cached rootfs %s", target)
            return target
        work = CACHE_DIR / f"build-{name}-{digest}"
        shutil.rmtree(work, ignore_errors=True)
        log.info("building rootfs %s with debootstrap", target)
        run(["debootstrap", f"--variant={recipe['variant']}",
             "--include=" + ",".join(recipe["include"]),  # type: ignore[call-overload]
             str(recipe["suite"]), str(work), str(recipe["mirror"])], timeout=1800)
        customise(work)
        (work / ".complete").write_text(json.dumps(recipe, sort_keys=True))
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

# TEST FIXTURE: stands in for the kubelet's health endpoint. It serves GET /healthz on the
# healthzBindAddress:healthzPort of /etc/kubernetes/kubelet.conf, answering "ok" (or, with
# --fail, 500 as a kubelet whose checks fail).
KUBELET_HEALTHZ_PROGRAM = """#!/usr/bin/python3
# TEST FIXTURE (machine-config node tests): not a kubelet. It only answers the kubelet's healthz.
import http.server, sys

conf = {}
for line in open("/etc/kubernetes/kubelet.conf"):
    key, _, value = line.partition(":")
    conf[key.strip()] = value.strip().strip('"')
address = conf.get("healthzBindAddress") or "127.0.0.1"
port = int(conf.get("healthzPort") or 10248)
failing = "--fail" in sys.argv


class Healthz(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status, body = (500, b"[-]fixture failing") if failing else (200, b"ok")
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.HTTPServer((address, port), Healthz).serve_forever()
"""

# The daemon's boot-time unit: after a reboot it validates the disk and reports Done or Degraded.
DAEMON_UNIT = """[Unit]
Description=machine-config-daemon: validate the current config at boot
After=dbus.service
Requires=dbus.service

[Service]
Type=oneshot
EnvironmentFile=-/etc/default/machine-config-daemon
ExecStart=/usr/local/bin/mcd resume $MCD_ARGS
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
    healthz = root / "usr/local/libexec/test-kubelet-healthz"
    healthz.write_text(KUBELET_HEALTHZ_PROGRAM)
    healthz.chmod(0o755)
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


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(ensure_rootfs())
