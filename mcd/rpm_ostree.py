"""OS image, kernel arguments and kernel type through rpm-ostree (Fedora CoreOS/RHCOS only).

Builds the rpm-ostree command lines MCO runs (spec 5.11) and runs them; any failure drops the
staged deployment again (`rpm-ostree cleanup -p`) so the booted OS stays as it was.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from machineconfig.errors import MachineConfigError
from machineconfig.disruption import MachineConfigDiff, canonical_kernel_type
from machineconfig.rendered_config import RenderedConfig

log = logging.getLogger(__name__)

OSTREE_BOOTED = "/run/ostree-booted"
COMMAND_TIMEOUT = 1800.0  # a rebase pulls a whole OS image

DEFAULT_KERNEL = ["kernel", "kernel-core", "kernel-modules", "kernel-modules-core",
                  "kernel-modules-extra"]
SWAPPED_KERNELS = {
    "realtime": ["kernel-rt-core", "kernel-rt-modules", "kernel-rt-modules-extra"],
    "64k-pages": ["kernel-64k-core", "kernel-64k-modules", "kernel-64k-modules-core",
                  "kernel-64k-modules-extra"],
}

Runner = Callable[[Sequence[str]], str]


class OSUpdateError(MachineConfigError, RuntimeError):
    """An rpm-ostree step failed; carries the command and its output."""


def ostree_booted(root: Path) -> bool:
    return (root / OSTREE_BOOTED.lstrip("/")).exists()


# The host's root as the daemon sees it. "/" on the host itself; in a container with the host's
# / mounted at /rootfs (the kube DaemonSet), rpm-ostree runs chrooted there, as MCO's daemon does.
_host_root = Path("/")


def set_host_root(root: Path) -> None:
    global _host_root
    _host_root = root


def run_rpm_ostree(args: Sequence[str]) -> str:
    cmd = ["rpm-ostree", *args]
    if _host_root.resolve() != Path("/"):
        cmd = ["chroot", str(_host_root), *cmd]
    log.info("running %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise OSUpdateError(f"{' '.join(cmd)}: {err}") from err
    if proc.returncode != 0:
        raise OSUpdateError(f"{' '.join(cmd)} exited {proc.returncode}: "
                            f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc.stdout


def split_kernel_arguments(text: str) -> list[str]:
    """Kernel-style splitting: whitespace separates, double quotes protect spaces (kept)."""
    args: list[str] = []
    current: list[str] = []
    in_quote = False
    for char in text:
        if char.isspace() and not in_quote:
            if current:
                args.append("".join(current))
                current = []
            continue
        if char == '"':
            in_quote = not in_quote
        current.append(char)
    if current:
        args.append("".join(current))
    return args


def kernel_arguments(mc: RenderedConfig) -> list[str]:
    return [arg for entry in mc.spec.kernel_arguments or []
            for arg in split_kernel_arguments(entry)]


def os_commands(old_mc: RenderedConfig, new_mc: RenderedConfig, diff: MachineConfigDiff,
                booted_image: str | None = None) -> list[list[str]]:
    """The rpm-ostree invocations for a transition, in MCO's order (without the cleanup)."""
    new_image = new_mc.spec.os_image_url
    os_update = diff.os_update and bool(new_image) and new_image != booted_image
    if diff.os_update and not os_update:
        log.info("OS image %s already booted: no rebase", new_image or "(none)")
    old_kernel = canonical_kernel_type(old_mc.spec.kernel_type)
    new_kernel = canonical_kernel_type(new_mc.spec.kernel_type)
    commands: list[list[str]] = []
    if (os_update or diff.kernel_type) and old_kernel in SWAPPED_KERNELS:
        commands.append(["override", "reset", *DEFAULT_KERNEL,
                         *[f"--uninstall={pkg}" for pkg in SWAPPED_KERNELS[old_kernel]]])
    if os_update:
        commands.append(["rebase", "--experimental", f"ostree-unverified-registry:{new_image}"])
    if diff.kargs:
        commands.append(["kargs", *[f"--delete-if-present={a}" for a in kernel_arguments(old_mc)],
                         *[f"--append={a}" for a in kernel_arguments(new_mc)]])
    if (os_update or diff.kernel_type) and new_kernel in SWAPPED_KERNELS:
        if new_kernel == "64k-pages" and os.uname().machine != "aarch64":
            raise OSUpdateError("kernelType 64k-pages is only supported on aarch64")
        commands.append(["override", "remove", *DEFAULT_KERNEL,
                         *[f"--install={pkg}" for pkg in SWAPPED_KERNELS[new_kernel]]])
    return commands


def booted_image(run: Runner = run_rpm_ostree) -> str | None:
    """The container image the booted deployment came from, if it came from one."""
    status = json.loads(run(["status", "--json"]))
    for deployment in status.get("deployments", []):
        if deployment.get("booted"):
            reference = str(deployment.get("container-image-reference") or "")
            return reference.split(":", 1)[1] if ":" in reference else reference or None
    return None


def apply_os_changes(old_mc: RenderedConfig, new_mc: RenderedConfig,
                     diff: MachineConfigDiff, run: Runner = run_rpm_ostree) -> None:
    """Stage the new deployment; on any failure drop what was staged and re-raise."""
    commands = os_commands(old_mc, new_mc, diff,
                           booted_image(run) if diff.os_update else None)
    if not commands:
        return
    # start from the booted deployment, never from a leftover staged one
    run(["cleanup", "-p"])
    try:
        for command in commands:
            run(command)
    except OSUpdateError:
        rollback_os_changes(run)
        raise


def rollback_os_changes(run: Runner = run_rpm_ostree) -> None:
    try:
        run(["cleanup", "-p"])
        log.info("staged OS deployment dropped")
    except OSUpdateError as err:
        log.error("could not drop the staged OS deployment: %s", err)


def missing_kernel_arguments(mc: RenderedConfig, run: Runner = run_rpm_ostree) -> list[str]:
    """Expected kargs absent from the booted deployment (`rpm-ostree kargs`, split on spaces)."""
    present = set(run(["kargs"]).strip().split(" "))
    return [arg for arg in kernel_arguments(mc) if arg not in present]
