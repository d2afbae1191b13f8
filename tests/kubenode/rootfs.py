"""The Kubernetes node image: the cached debootstrap rootfs of tests/node plus CRI-O's runtime
packages (Debian's conmon, runc, crun, CNI plugins, iptables, busybox-static), kubelet, crio,
pinns and copyimg from ../shared/bin (decompressed by tests/kube/controlplane.binary), OCI
layouts of localhost/pause:3.10 (a static pause built from ../shared/bin/pause.c) and
localhost/busybox:latest, and the node-side units a package or the platform would bring (crio's
own unit, the image import, the cgroup remount, the node's address). Cached under its own key
(`kube-rootfs-<hash>`): the base recipe, the package list, the binaries' digests and this file.

    python -m tests.kubenode.rootfs     # build the cache ahead of a run
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from tests.kube.controlplane import bin_dir, binary
from tests.kubenode import images
from tests.node.rootfs import CACHE_DIR, ensure_rootfs, recipe_hash, run

log = logging.getLogger(__name__)

PACKAGES = ("conmon", "runc", "crun", "containernetworking-plugins", "iptables", "busybox-static")
NODE_BINARIES = ("kubelet", "crio", "pinns", "copyimg")
IMAGES_DIR = "/usr/share/machine-config-tests/images"   # in the node: <name>/ OCI layouts
IMAGE_LAYOUTS = {images.PAUSE: "pause", images.BUSYBOX: "busybox"}
CUSTOMISE = 4  # bump when the units or files below change

# CRI-O's own unit, as its package ships one (the templates add only drop-ins to it). No
# LimitNOFILE/OOMScoreAdjust: the node has no CAP_SYS_RESOURCE to raise them.
CRIO_UNIT = """[Unit]
Description=CRI-O container runtime (machine-config test node)
Wants=network-online.target
After=network-online.target machine-config-tests-images.service

[Service]
Type=notify
ExecStart=/usr/bin/crio
ExecReload=/bin/kill -s HUP $MAINPID
TasksMax=infinity
TimeoutStartSec=0
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
"""

# Imports the OCI layouts into CRI-O's storage once the node has joined (storage.conf is then
# the rendered one), before CRI-O starts; a stamp in the persistent storage skips it later.
IMAGES_UNIT = f"""[Unit]
Description=Import the test images into containers-storage
ConditionPathExists=/etc/containers/storage.conf
ConditionPathExists=!/var/lib/containers/machine-config-tests-images.done
Before=crio.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/libexec/machine-config-tests-images
ExecStart=/bin/touch /var/lib/containers/machine-config-tests-images.done

[Install]
WantedBy=multi-user.target
"""

IMAGES_SCRIPT = f"""#!/bin/sh
# Import every OCI layout under {IMAGES_DIR} (name in its ref-name file) into containers-storage.
set -e
for layout in {IMAGES_DIR}/*/; do
    name=$(cat "$layout/ref-name")
    /usr/bin/copyimg --import-from "oci:$layout" --image-name "$name"
done
"""

# nspawn mounts the cgroup v1 hierarchies read-only; kubelet and CRI-O must create cgroups.
CGROUP_UNIT = """[Unit]
Description=Make the cgroup hierarchies writable (cgroup v1 in systemd-nspawn)
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target crio.service kubelet.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/libexec/machine-config-tests-cgroup-rw

[Install]
WantedBy=sysinit.target
"""

CGROUP_SCRIPT = """#!/bin/sh
for dir in /sys/fs/cgroup/*; do
    if mountpoint -q "$dir"; then mount -o remount,bind,rw "$dir"; fi
done
# /proc/sys stays read-only (the host kernel must not change): the values kubelet's
# protectKernelDefaults wants are bound over the files whose host value differs
for file in /etc/machine-config-tests/sysctl/*; do
    [ -f "$file" ] || continue
    target=/proc/sys/$(basename "$file" | tr . /)
    if [ "$(cat "$target")" != "$(cat "$file")" ]; then mount --bind "$file" "$target"; fi
done
"""

# The node's address on the cluster bridge (values in /etc/machine-config-tests/network.env).
NETWORK_UNIT = """[Unit]
Description=The test node's address on the cluster bridge
DefaultDependencies=no
After=local-fs.target
Before=network.target network-online.target
Wants=network.target

[Service]
Type=oneshot
RemainAfterExit=yes
EnvironmentFile=/etc/machine-config-tests/network.env
ExecStart=/sbin/ip link set host0 up
ExecStart=/sbin/ip addr replace ${ADDRESS} dev host0
ExecStart=/sbin/ip route replace default via ${GATEWAY}

[Install]
WantedBy=network-online.target multi-user.target
"""


def kube_recipe() -> dict[str, object]:
    source = bin_dir()
    digests = {}
    for name in NODE_BINARIES:
        xz = source / f"{name}.xz"
        digests[name] = f"{xz.stat().st_size}-{int(xz.stat().st_mtime)}" if xz.exists() else ""
    pause_c = source / "pause.c"
    return {"base": recipe_hash(), "packages": list(PACKAGES), "binaries": digests,
            "pause.c": hashlib.sha256(pause_c.read_bytes()).hexdigest() if pause_c.exists() else "",
            "customise": CUSTOMISE}


def kube_recipe_hash() -> str:
    return hashlib.sha256(json.dumps(kube_recipe(), sort_keys=True).encode()).hexdigest()[:16]


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _enable(root: Path, unit: str, target: str) -> None:
    wants = root / "etc/systemd/system" / f"{target}.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / unit
    link.unlink(missing_ok=True)
    link.symlink_to(f"/usr/lib/systemd/system/{unit}")


def customise(root: Path, workdir: Path) -> None:
    """Everything after the packages: binaries, images, units."""
    for name in NODE_BINARIES:
        target = root / "usr/bin" / name
        shutil.copyfile(binary(name), target)
        target.chmod(0o755)
    # RHCOS keeps the CNI plugins in /usr/libexec/cni (the templates' plugin_dirs); Debian in
    # /usr/lib/cni
    libexec = root / "usr/libexec/cni"
    if not libexec.exists():
        libexec.parent.mkdir(parents=True, exist_ok=True)
        libexec.symlink_to("/usr/lib/cni")
    pause = workdir / "pause"
    pause_c = bin_dir() / "pause.c"
    if not pause_c.exists():
        raise FileNotFoundError(f"{pause_c} missing (the pause image's source)")
    run(["gcc", "-static", "-Os", "-s", "-o", str(pause), str(pause_c)], timeout=300)
    out = root / IMAGES_DIR.lstrip("/")
    images.pause_layout(out / "pause", pause)
    applets = run(["chroot", str(root), "/bin/busybox", "--list"]).stdout.split()
    images.busybox_layout(out / "busybox", root / "bin/busybox", applets)
    for ref, name in IMAGE_LAYOUTS.items():
        (out / name / "ref-name").write_text(ref + "\n")
    units = root / "usr/lib/systemd/system"
    _write(units / "crio.service", CRIO_UNIT)
    _write(units / "machine-config-tests-images.service", IMAGES_UNIT)
    _write(units / "machine-config-tests-cgroup-rw.service", CGROUP_UNIT)
    _write(units / "machine-config-tests-network.service", NETWORK_UNIT)
    _write(root / "usr/local/libexec/machine-config-tests-images", IMAGES_SCRIPT, 0o755)
    _write(root / "usr/local/libexec/machine-config-tests-cgroup-rw", CGROUP_SCRIPT, 0o755)
    _enable(root, "machine-config-tests-images.service", "multi-user.target")
    _enable(root, "machine-config-tests-cgroup-rw.service", "sysinit.target")
    _enable(root, "machine-config-tests-network.service", "multi-user.target")
    _enable(root, "machine-config-tests-network.service", "network-online.target")
    # crio.service and kubelet.service are enabled by the served config, not here


def ensure_kube_rootfs() -> Path:
    """The cached Kubernetes node rootfs for the current recipe (built if absent)."""
    base = ensure_rootfs()
    key = kube_recipe_hash()
    target = CACHE_DIR / f"kube-rootfs-{key}"
    with open(CACHE_DIR / ".kube-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").exists():
            return target
        work = CACHE_DIR / f"kube-build-{key}"
        scratch = CACHE_DIR / f"kube-scratch-{key}"
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        log.info("building the Kubernetes node rootfs %s", target)
        run(["cp", "-a", "--reflink=auto", str(base), str(work)], timeout=600)
        (work / ".complete").unlink(missing_ok=True)
        env_script = ("set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -q; "
                      "apt-get install -y -q --no-install-recommends " + " ".join(PACKAGES) +
                      "; apt-get clean; rm -rf /var/lib/apt/lists/*")
        run(["systemd-nspawn", "--quiet", "--register=no", "--keep-unit",
             "--resolv-conf=copy-host", f"--directory={work}", "/bin/sh", "-c", env_script],
            timeout=1800)
        customise(work, scratch)
        shutil.rmtree(scratch, ignore_errors=True)
        (work / ".complete").write_text(json.dumps(kube_recipe(), sort_keys=True))
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
        return target


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    print(ensure_kube_rootfs())
