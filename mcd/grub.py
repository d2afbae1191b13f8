"""Kernel arguments on GRUB hosts without rpm-ostree (Debian and the like): a drop-in in
/etc/default/grub.d owned by the daemon, then update-grub, run in the host's root.

The drop-in holds exactly the config's kernelArguments, appended to the admin's
GRUB_CMDLINE_LINUX; that is MCO's diff (delete the old config's arguments, append the new's)
without touching arguments the admin set. The previous drop-in is kept beside it
(`.previous`, which grub-mkconfig does not read) and put back when update-grub fails.
"""
from __future__ import annotations

import logging
import os
import re
import stat
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

from machineconfig.errors import MachineConfigError
from machineconfig.rendered_config import RenderedConfig
from mcd.file_writers import DEFAULT_FILE_MODE, Journal, PriorState, atomic_write, capture, restore
from mcd.noderoot import NodeRoot
from mcd.rpm_ostree import kernel_arguments, ostree_booted, split_kernel_arguments

log = logging.getLogger(__name__)

DEFAULT_GRUB = "/etc/default/grub"
DEFAULT_GRUB_D = "/etc/default/grub.d"
DROPIN = f"{DEFAULT_GRUB_D}/50-machine-config.cfg"
# not *.cfg: grub-mkconfig sources only /etc/default/grub.d/*.cfg
PREVIOUS = DROPIN + ".previous"
# update-grub first (Debian's wrapper knows the distribution's grub.cfg), then grub-mkconfig
GENERATORS: tuple[tuple[str, ...], ...] = (
    ("/usr/sbin/update-grub",), ("/sbin/update-grub",),
    ("/usr/sbin/grub-mkconfig", "-o", "/boot/grub/grub.cfg"),
    ("/sbin/grub-mkconfig", "-o", "/boot/grub/grub.cfg"),
)
GENERATOR_TIMEOUT = 600.0  # grub-mkconfig probes every disk; minutes under emulation
PROC_CMDLINE = Path("/proc/cmdline")
# What may stand in the drop-in's double-quoted shell string and, after grub-mkconfig, on
# grub.cfg's `linux` line (GRUB script): no quote, $, `, \, ;, |, &, <, >, {, }, #, *, ?, blank.
SAFE_ARGUMENT = re.compile(r"[A-Za-z0-9._,:=/+@%~^!\[\]-]+")
SAFE_CHARACTERS = "letters, digits and ._,:=/+@%~^![]-"

UpdateGrub = Callable[[Path], None]


class GrubError(MachineConfigError, RuntimeError):
    """The kernel arguments cannot be written for GRUB, or update-grub failed."""


def generator(root: Path) -> tuple[str, ...] | None:
    """The update-grub (or grub-mkconfig) command line found in `root`, if any."""
    fs = NodeRoot(root)
    for command in GENERATORS:
        if fs.is_file(command[0]):
            return command
    return None


def not_grub_host(root: Path) -> str | None:
    """Why kernel arguments cannot go through GRUB on this node; None on a GRUB host (not
    rpm-ostree based, an update-grub or grub-mkconfig, and /etc/default/grub or grub.d)."""
    if ostree_booted(root):
        return "the node is rpm-ostree based"
    if generator(root) is None:
        return "no update-grub or grub-mkconfig in /usr/sbin or /sbin"
    fs = NodeRoot(root)
    if not (fs.is_file(DEFAULT_GRUB) or fs.is_dir(DEFAULT_GRUB_D)):
        return f"no {DEFAULT_GRUB} and no {DEFAULT_GRUB_D}"
    return None


def is_grub_host(root: Path) -> bool:
    return not_grub_host(root) is None


def checked_arguments(mc: RenderedConfig) -> list[str]:
    """The config's kernel arguments, each one safe in the drop-in and in grub.cfg; GrubError
    names the first that is not."""
    for entry in mc.spec.kernel_arguments or []:
        if any(ord(char) < 0x20 or ord(char) == 0x7f for char in str(entry)):
            raise GrubError(f"kernel argument {str(entry)!r} holds a newline or control "
                            "character: refused for the GRUB drop-in")
    args = kernel_arguments(mc)
    for arg in args:
        if not SAFE_ARGUMENT.fullmatch(arg):
            bad = next(char for char in arg if not SAFE_ARGUMENT.fullmatch(char))
            raise GrubError(f"kernel argument {arg!r} holds {bad!r}: refused for the GRUB "
                            f"drop-in (only {SAFE_CHARACTERS} are allowed there)")
    return args


def dropin_text(args: Iterable[str], config_name: str) -> bytes:
    """The drop-in for `args` (already checked: nothing in them is special to sh or GRUB)."""
    args = list(args)
    for arg in args:
        if not SAFE_ARGUMENT.fullmatch(arg):  # never reached through checked_arguments
            raise GrubError(f"kernel argument {arg!r} is not safe in a shell string")
    return (
        f"# Written by machine-config's daemon (mcd): the kernelArguments of {config_name}.\n"
        "# Replaced at each update; put your own arguments in GRUB_CMDLINE_LINUX in\n"
        f"# {DEFAULT_GRUB}, which this keeps.\n"
        f'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX {" ".join(args)}"\n').encode()


def run_update_grub(root: Path) -> None:
    """update-grub inside `root`: chrooted there when it is not "/" (the DaemonSet's /rootfs),
    as the daemon runs rpm-ostree, so it reads the host's /etc/default and writes its /boot."""
    command = generator(root)
    if command is None:
        raise GrubError(f"no update-grub or grub-mkconfig under {root}")
    cmd = list(command)
    if root.resolve() != Path("/"):
        cmd = ["chroot", str(root), *cmd]
    log.info("running %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=GENERATOR_TIMEOUT,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})
    except (OSError, subprocess.TimeoutExpired) as err:
        raise GrubError(f"{' '.join(cmd)}: {err}") from err
    if proc.returncode != 0:
        output = (proc.stderr.strip() or proc.stdout.strip())[-1000:]
        raise GrubError(f"{' '.join(cmd)} exited {proc.returncode}: {output}")


def _put(fs: NodeRoot, node_path: str, data: bytes | None, journal: Journal) -> None:
    if data is None:
        if fs.lexists(node_path):
            fs.unlink(node_path)
            journal.dirs_to_sync.add(os.path.dirname(node_path))
    else:
        fs.makedirs(os.path.dirname(node_path))
        atomic_write(fs, node_path, data, DEFAULT_FILE_MODE, 0, 0, journal)


def apply_kernel_arguments(root: Path, mc: RenderedConfig,
                           update_grub: UpdateGrub = run_update_grub) -> PriorState:
    """Write `mc`'s drop-in (removed when it has no kernel arguments) and run update-grub.

    Returns the drop-in as it was, for `rollback_kernel_arguments`. When update-grub fails, the
    previous drop-in is put back, update-grub runs again and GrubError says why."""
    args = checked_arguments(mc)
    name = mc.name
    fs = NodeRoot(root)
    prior = capture(fs, DROPIN)
    journal = Journal(fs)
    # the previous drop-in beside it, for an admin and for a crash between here and update-grub
    _put(fs, PREVIOUS, prior.data if prior.kind == "file" else None, journal)
    _put(fs, DROPIN, dropin_text(args, name) if args else None, journal)
    journal.sync()
    log.info("kernel arguments of %s in %s: %s", name, DROPIN, " ".join(args) or "(none)")
    try:
        update_grub(root)
    except GrubError as err:
        log.error("update-grub failed, putting the previous %s back: %s", DROPIN, err)
        rollback_kernel_arguments(root, prior, update_grub)
        raise GrubError(f"kernel arguments not applied: {err}") from err
    return prior


def rollback_kernel_arguments(root: Path, prior: PriorState,
                              update_grub: UpdateGrub = run_update_grub) -> None:
    """Put the drop-in back as `prior` and regenerate grub.cfg from it; errors are logged (the
    update already failed for its own reason)."""
    fs = NodeRoot(root)
    journal = Journal(fs)
    try:
        restore(fs, DROPIN, prior, journal)
        journal.sync()
    except OSError as err:
        log.error("could not put %s back: %s", DROPIN, err)
        return
    try:
        update_grub(root)
        log.info("previous %s restored and grub.cfg regenerated", DROPIN)
    except GrubError as err:
        log.error("update-grub after restoring %s failed too: %s", DROPIN, err)


# ---- after boot --------------------------------------------------------------------------

def booted_cmdline(root: Path) -> str | None:
    """The running kernel's command line, when `root` is the running system's root.

    /proc/cmdline is not namespaced: every /proc shows the one running kernel's. So "/" reads
    its own; another root (the DaemonSet's /rootfs) is the running system when the host's /proc
    is mounted in it (the DaemonSet's HostToContainer mount of / brings it) or when it is the
    directory PID 1 sees as / (a hostPID pod); any other tree (an image, a test dir) booted no
    kernel, and None says so."""
    if root.resolve() == Path("/"):
        return PROC_CMDLINE.read_text()
    fs = NodeRoot(root)
    try:
        top = os.stat(root)
    except OSError:
        return None
    proc = fs.lstat("/proc")  # a link there is no mount
    if proc is not None and stat.S_ISDIR(proc.st_mode) and proc.st_dev != top.st_dev:
        try:  # something is mounted on the root's /proc: the host's procfs
            return fs.read_text(str(PROC_CMDLINE), follow=False)
        except OSError:
            pass
    try:
        init = os.stat("/proc/1/root")
    except OSError:
        return None  # PID 1's root cannot be looked at (not a hostPID pod, or not allowed)
    if (top.st_dev, top.st_ino) == (init.st_dev, init.st_ino):
        return PROC_CMDLINE.read_text()
    return None


def missing_kernel_arguments(mc: RenderedConfig, cmdline: str) -> list[str]:
    present = set(split_kernel_arguments(cmdline))
    return [arg for arg in kernel_arguments(mc) if arg not in present]
