"""On-disk validation: does the node's disk match a MachineConfig? (MCO's messages.)

Used after a reboot, after a rebootless update and by `mcd validate`; names the path and reason.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from machineconfig.errors import MachineConfigError
from machineconfig.reconcile import AnyConfig
from machineconfig.rendered_config import RenderedConfig
from machineconfig.ignition.dataurl import contents_digest
from mcd.file_writers import DEFAULT_FILE_MODE, SYSTEMD_DIR
from mcd import grub
from mcd.noderoot import NodeRoot, ParentDirectories
from mcd.rpm_ostree import (Runner, booted_image, missing_kernel_arguments, ostree_booted,
                            run_rpm_ostree)
from mcd.systemd import SystemdApi, unit_file_states

log = logging.getLogger(__name__)

# the running kernel's command line when the root is the running system, else None
CmdlineReader = Callable[[Path], "str | None"]

# Written by the certificate writer or the daemon itself, so their content may legitimately differ.
VALIDATION_SKIP = frozenset({
    "/etc/kubernetes/kubelet-ca.crt",
    "/etc/kubernetes/static-pod-resources/configmaps/cloud-config/ca-bundle.pem",
    "/etc/mco/internal-registry-pull-secret.json",
})

_ENABLED_REJECTS = ("disabled", "masked", "masked-runtime", "not-found")
_DISABLED_REJECTS = ("enabled", "enabled-runtime")

# Go os.FileMode type bits and letters, so mode messages read exactly like MCO's.
_GO_TYPE_BITS = [(31, "d"), (30, "a"), (29, "l"), (28, "T"), (27, "L"), (26, "D"), (25, "p"),
                 (24, "S"), (23, "u"), (22, "g"), (21, "c"), (20, "t"), (19, "?")]


class OnDiskValidationError(MachineConfigError):
    """The disk differs from the config; `str()` is MCO's wrapped message."""

    def __init__(self, config_name: str, detail: str) -> None:
        self.detail = detail
        super().__init__(f"unexpected on-disk state validating against {config_name}: {detail}")


def go_file_mode(st_mode: int) -> int:
    """A stat mode as Go's os.FileMode value."""
    mode = stat.S_IMODE(st_mode) & 0o777
    for test, bit in ((stat.S_ISDIR, 31), (stat.S_ISLNK, 27), (stat.S_ISFIFO, 25),
                      (stat.S_ISSOCK, 24), (stat.S_ISBLK, 26)):
        if test(st_mode):
            mode |= 1 << bit
    if stat.S_ISCHR(st_mode):
        mode |= (1 << 26) | (1 << 21)
    for flag, bit in ((stat.S_ISUID, 23), (stat.S_ISGID, 22), (stat.S_ISVTX, 20)):
        if st_mode & flag:
            mode |= 1 << bit
    return mode


def go_mode_string(mode: int) -> str:
    letters = "".join(letter for bit, letter in _GO_TYPE_BITS if mode & (1 << bit))
    perms = "".join(ch if mode & (1 << (8 - i)) else "-" for i, ch in enumerate("rwxrwxrwx"))
    return (letters or "-") + perms


def _mode_text(mode: int) -> str:
    return f"{go_mode_string(mode)}/{mode}/{'0' + format(mode, 'o') if mode else '0'}"


def _disk_digest(dir_fd: int, name: str, node_path: str) -> str:
    """SHA-256 hex of the regular file `name` in the resolved directory `dir_fd` (a final link
    is an error, as NodeRoot.open without `follow`)."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IsADirectoryError(errno.EISDIR, f"{node_path}: not a regular file")
        return hashlib.file_digest(handle, "sha256").hexdigest()


def check_file(root: Path, node_path: str, expected: bytes | tuple[int, str], mode: int,
               directories: ParentDirectories | None = None) -> None:
    """`node_path` (resolved inside `root`, never through a link that leaves it) has `mode` and
    `expected` contents: the bytes, or their (size, SHA-256 hex). The directory is resolved
    once (or taken from the pass's `directories`): the file is stat'ed and read through it."""
    try:
        if directories is None:
            dir_fd, name = NodeRoot(root).open_parent(node_path)
        else:
            dir_fd, name = directories.parent(node_path)
    except OSError as err:
        raise ValueError(f'could not stat file "{node_path}": lstat {node_path}: '
                         f"{os.strerror(err.errno or 0).lower()}") from None
    try:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError as err:
            raise ValueError(f'could not stat file "{node_path}": lstat {node_path}: '
                             f"{os.strerror(err.errno or 0).lower()}") from None
        received = go_file_mode(st.st_mode)
        if received != mode:
            raise ValueError(f'mode mismatch for file: "{node_path}"; expected: '
                             f"{_mode_text(mode)}; received: {_mode_text(received)}")
        size, digest = (len(expected), hashlib.sha256(expected).hexdigest()) \
            if isinstance(expected, bytes) else expected
        if st.st_size != size or _disk_digest(dir_fd, name, node_path) != digest:
            log.info("content mismatch for %s (expected %d bytes)", node_path, size)
            raise ValueError(f'content mismatch for file "{node_path}"')
    finally:
        if directories is None:
            os.close(dir_fd)


def _check_unit(root: Path, unit: Mapping[str, Any], states: Mapping[str, str] | None,
                directories: ParentDirectories | None = None) -> None:
    """`states`: the unit file state of each unit with an `enabled` setting (None: not checked)."""
    fs = NodeRoot(root)
    name = str(unit["name"])
    for dropin in unit.get("dropins") or []:
        node_path = f"{SYSTEMD_DIR}/{name}.d/{dropin['name']}"
        contents = str(dropin.get("contents") or "")
        if not contents and not fs.lexists(node_path):
            continue
        check_file(root, node_path, contents.encode(), DEFAULT_FILE_MODE, directories)
    node_path = f"{SYSTEMD_DIR}/{name}"
    if unit.get("mask"):
        # MCO checks masks only for units with contents; we check every masked unit
        link = node_path
        if fs.is_symlink(node_path):
            link = fs.readlink(node_path)
            if link != "/dev/null":
                try:
                    link = fs.canonical(node_path)
                except OSError:
                    pass
        if link != "/dev/null":
            raise ValueError(f'state validation: invalid unit masked setting. path: "{node_path}"; '
                             f"expected: /dev/null; received: {link}")
        return
    if unit.get("contents"):
        check_file(root, node_path, str(unit["contents"]).encode(), DEFAULT_FILE_MODE,
                   directories)
    if states is not None and "enabled" in unit:
        state = states[name]
        rejects = _ENABLED_REJECTS if unit["enabled"] else _DISABLED_REJECTS
        if state in rejects:
            raise ValueError(f"unit {name} is {state}, expected "
                             f"{'enabled' if unit['enabled'] else 'disabled'}")


def _expected_digest(entry: Mapping[str, Any]) -> tuple[int, str]:
    contents = entry.get("contents") or {}
    source = contents.get("source")
    compression = contents.get("compression") or ""
    if source is None:
        return 0, hashlib.sha256(b"").hexdigest()
    if compression not in ("", "gzip"):
        raise ValueError(f"file {entry.get('path')}: unsupported compression {compression!r}")
    # remembered per source: the drift monitor validates every minute without decoding again
    return contents_digest(source, compression, str(entry.get("path") or ""))


def _check_file_entry(root: Path, entry: Mapping[str, Any],
                      directories: ParentDirectories | None = None) -> None:
    if entry.get("append"):
        raise ValueError("found an append section when checking files. Append is not supported")
    try:
        expected = _expected_digest(entry)
    except (ValueError, MachineConfigError) as err:
        raise ValueError(f'couldn\'t decode file "{entry["path"]}": {err}') from err
    check_file(root, entry["path"], expected, int(entry.get("mode", DEFAULT_FILE_MODE)),
               directories)


def find_mismatches(mc: AnyConfig, root: Path = Path("/"),
                    systemd: SystemdApi | None = None, first_only: bool = False) -> list[str]:
    """Every file and unit of `mc` that differs on disk, in config order (MCO's texts)."""
    ign = RenderedConfig.of(mc).ignition
    directories = NodeRoot(root).directories()
    checks: list[tuple[Any, Mapping[str, Any]]] = [
        (_check_file_entry, entry) for entry in (ign.get("storage") or {}).get("files") or []
        if entry["path"] not in VALIDATION_SKIP]
    units = (ign.get("systemd") or {}).get("units") or []
    # the states of every unit to check, asked in one call where systemd offers it
    states = None if systemd is None else unit_file_states(systemd, [
        str(unit["name"]) for unit in units if "enabled" in unit and not unit.get("mask")])
    checks += [(lambda r, u, d: _check_unit(r, u, states, d), unit) for unit in units]
    mismatches = []
    try:
        for check, item in checks:
            try:
                check(root, item, directories)
            except ValueError as err:
                mismatches.append(str(err))
                if first_only:
                    break
    finally:
        directories.close()
    return mismatches


def validate_on_disk(mc: AnyConfig, root: Path = Path("/"),
                     systemd: SystemdApi | None = None) -> None:
    """Raise OnDiskValidationError naming the first file or unit that differs from `mc`."""
    mc = RenderedConfig.of(mc)
    mismatches = find_mismatches(mc, root, systemd, first_only=True)
    if mismatches:
        log.info("on-disk validation against %s failed: %s", mc.name, mismatches[0])
        raise OnDiskValidationError(mc.name, mismatches[0])
    log.info("on-disk state matches %s", mc.name)


def validate_os(mc: RenderedConfig, run: Runner = run_rpm_ostree) -> None:
    """rpm-ostree hosts: the booted image and every expected kernel argument (MCO's texts)."""
    want = mc.spec.os_image_url
    if want:
        have = booted_image(run) or ""
        if have != want:
            raise OnDiskValidationError(mc.name, f'expected target osImageURL "{want}", '
                                                 f'have "{have}"')
    missing = missing_kernel_arguments(mc, run)
    if missing:
        raise OnDiskValidationError(mc.name, "missing expected kernel arguments: "
                                             f"[{' '.join(missing)}]")


def validate_grub_kernel_arguments(mc: RenderedConfig, root: Path,
                                   cmdline: CmdlineReader = grub.booted_cmdline) -> None:
    """GRUB hosts: every expected kernel argument on the running kernel's command line (MCO's
    text). Not checked when `root` is not the running system: that tree booted no kernel."""
    if not mc.spec.kernel_arguments:
        return
    booted = cmdline(root)
    if booted is None:
        log.info("%s is not the running system: kernel arguments not checked", root)
        return
    missing = grub.missing_kernel_arguments(mc, booted)
    if missing:
        raise OnDiskValidationError(mc.name, "missing expected kernel arguments: "
                                             f"[{' '.join(missing)}]")


def validate_booted(mc: RenderedConfig, root: Path, run: Runner = run_rpm_ostree,
                    cmdline: CmdlineReader = grub.booted_cmdline) -> None:
    """What only the booted OS shows, checked after a boot (never by the drift monitor, which
    would flag a change made before its reboot): rpm-ostree's deployment, or on a GRUB host the
    kernel arguments on /proc/cmdline. Other hosts cannot apply kernel arguments (an update
    that changes them is Unreconcilable there), so nothing is checked."""
    if ostree_booted(root):
        validate_os(mc, run)
    elif grub.is_grub_host(root):
        validate_grub_kernel_arguments(mc, root, cmdline)
