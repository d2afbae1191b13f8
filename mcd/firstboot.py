"""First boot without Ignition in an initramfs: fetch the full config a pointer config names, apply
its files, directories, links, units and users as Ignition's files stage would, then reboot into
the daemon. `complete_encapsulated` is the second step (MCO's firstboot-complete-machineconfig).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import ssl
import stat
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from machineconfig import mcoparse
from machineconfig.constants import (CURRENT_CONFIG_ANNOTATION, ENCAPSULATED_CONFIG_PATH,
                                      NODE_ANNOTATIONS_PATH)
from machineconfig.errors import MachineConfigError
from machineconfig.ignition.dataurl import decode
from machineconfig.rendered_config import RenderedConfig
from machineconfig.unitnames import install_section
from mcd import grub
from machineconfig.disruption import decoded_contents
from mcd.file_writers import (DEFAULT_DIR_MODE, SYSTEMD_DIR, FileWriter, Journal, WriteError,
                              check_unit_name, replace_with_symlink, write_private)
from mcd.noderoot import NodeRoot
from mcd.passwd import apply_passwd
from mcd.rpm_ostree import ostree_booted

log = logging.getLogger(__name__)

ACCEPT = "application/vnd.coreos.ignition+json;version=3.5.0, */*;q=0.1"
PRESET_FILE = "/etc/systemd/system-preset/20-ignition.preset"
DONE_STAMP = "/var/lib/machine-config-daemon/firstboot.done"
UNIT_SEARCH = (SYSTEMD_DIR, "/usr/local/lib/systemd/system", "/usr/lib/systemd/system",
               "/lib/systemd/system")
FETCH_TIMEOUT = 30.0
# A served config is a few MB; anything past this is refused before it is parsed.
MAX_CONFIG_BYTES = 64 << 20
BACKOFF_MAX = 60.0


class FirstbootError(MachineConfigError, RuntimeError):
    """The config could not be fetched or applied; names the URL or path."""


@dataclass
class Source:
    """Where the full config lives and how to ask for it (from flags or a pointer config)."""

    url: str
    ca_pem: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def source_from_pointer(pointer: Mapping[str, Any]) -> Source:
    """The first merge source of an Ignition pointer config, its headers and its CA."""
    ign = pointer.get("ignition") or {}
    merge = ((ign.get("config") or {}).get("merge") or [{}])[0]
    if not merge.get("source"):
        raise FirstbootError("pointer config has no ignition.config.merge[0].source")
    cas = ((ign.get("security") or {}).get("tls") or {}).get("certificateAuthorities") or []
    ca = decode(str(cas[0]["source"])) if cas else None
    headers = {str(h["name"]): str(h["value"]) for h in merge.get("httpHeaders") or []}
    return Source(str(merge["source"]), ca, headers)


def _fetch_once(source: Source, timeout: float) -> dict[str, Any]:
    headers = {"Accept": ACCEPT, "User-Agent": "mcd-firstboot", **source.headers}
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if source.url.startswith("https:"):
        context = ssl.create_default_context(
            cadata=source.ca_pem.decode() if source.ca_pem else None)
        handlers.append(urllib.request.HTTPSHandler(context=context))
    request = urllib.request.Request(source.url, headers=headers)
    with urllib.request.build_opener(*handlers).open(request, timeout=timeout) as response:
        body = response.read(MAX_CONFIG_BYTES + 1)
    if len(body) > MAX_CONFIG_BYTES:
        raise FirstbootError(f"{source.url} served more than {MAX_CONFIG_BYTES} bytes")
    config: dict[str, Any] = json.loads(body)
    if not isinstance(config, dict):
        raise FirstbootError(f"{source.url} served JSON that is not an object")
    version = str((config.get("ignition") or {}).get("version", ""))
    if not version.startswith("3."):
        raise FirstbootError(f"{source.url} served Ignition {version or '(none)'}, want 3.x")
    return config


def fetch(source: Source, retry_for: float = 0.0, timeout: float = FETCH_TIMEOUT,
          sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """GET the config, retrying with backoff (1 s doubling to 60 s); retry_for=0: for ever."""
    deadline = time.monotonic() + retry_for if retry_for else None
    delay = 1.0
    while True:
        try:
            config = _fetch_once(source, timeout)
            log.info("fetched config from %s", source.url)
            return config
        except (OSError, ValueError, FirstbootError) as err:
            # HTTPError bodies can hold the server's one-line reason; never a header (token)
            detail = f"HTTP {err.code}" if isinstance(err, urllib.error.HTTPError) else str(err)
            if deadline is not None and time.monotonic() + delay > deadline:
                raise FirstbootError(f"fetching {source.url} failed: {detail}") from err
            log.warning("fetching %s failed (%s), retrying in %.0fs", source.url, detail, delay)
            sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)


# ---- Ignition's files stage ----------------------------------------------------------------

def validate_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The fetched config checked with the controller's rules (Ignition's validation and MCO's
    MachineConfig checks, machineconfig.mcoparse) and the daemon's own (unit, drop-in and
    [Install] names are plain file names), before anything touches the disk; returns it as
    spec 3.5.0. Raises FirstbootError with the reason on one line."""
    raw = json.dumps(config).encode()
    try:
        mcoparse.check_machine_config_ignition(raw)
        converted = mcoparse.parse_and_convert_config(raw)
    except mcoparse.IgnitionConfigError as err:
        raise FirstbootError("invalid config: " + " ".join(str(err).split())) from err
    units = (converted.get("systemd") or {}).get("units") or []
    for index, unit in enumerate(units):
        where = f"$.systemd.units.{index}"
        try:
            check_unit_name(str(unit.get("name")))
            for dropin in unit.get("dropins") or []:
                check_unit_name(str(dropin.get("name")), "drop-in")
            for key, values in install_section(str(unit.get("contents") or "")).items():
                for value in values:
                    check_unit_name(value, f"[Install] {key}")
        except WriteError as err:
            raise FirstbootError(f"invalid config: {where}: {err}") from err
    return converted


def _owner(writer: FileWriter, entry: Mapping[str, Any]) -> tuple[int, int]:
    return writer.owner_of(entry)


def _write_directories(writer: FileWriter, config: Mapping[str, Any]) -> None:
    fs = writer.fs
    for entry in (config.get("storage") or {}).get("directories") or []:
        path = str(entry["path"])
        st = fs.lstat(path)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            if not entry.get("overwrite"):
                raise FirstbootError(f"directory {path}: a non-directory exists there already "
                                     "and overwrite is false")
            writer.journal.record(path)
            fs.unlink(path)
        fs.makedirs(path, writer.journal.created_dirs)
        # a link at the last component is refused here, never followed
        fs.set_dir_attrs(path, int(entry.get("mode", DEFAULT_DIR_MODE)), *_owner(writer, entry))
        log.info("directory %s", path)


def _keep_existing_file(writer: FileWriter, entry: Mapping[str, Any]) -> bool:
    """Ignition's `overwrite: false` for a file: True when the node already has it (then only
    owner and mode are set, or nothing); raises when the existing node may not be replaced."""
    if entry.get("overwrite"):
        return False
    path = str(entry["path"])
    st = writer.fs.lstat(path)
    if st is None:
        return False
    if not stat.S_ISREG(st.st_mode):
        raise FirstbootError(f"file {path}: a non regular file exists there already and "
                             "overwrite is false")
    source = (entry.get("contents") or {}).get("source")
    if source is not None and writer.fs.read_bytes(path, follow=False) != \
            decoded_contents(entry):
        # the same bytes are no conflict: a first boot that crashed half-way can run again
        raise FirstbootError(f"file {path}: a file exists there already and overwrite is false")
    uid, gid = _owner(writer, entry)
    mode = int(entry["mode"]) if "mode" in entry else stat.S_IMODE(st.st_mode)
    fd = writer.fs.open(path)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    log.info("file %s exists and overwrite is false: kept", path)
    return True


def _write_files(writer: FileWriter, config: Mapping[str, Any]) -> None:
    files = (config.get("storage") or {}).get("files") or []
    writer.write_files([entry for entry in files if not _keep_existing_file(writer, entry)])


def _write_links(writer: FileWriter, config: Mapping[str, Any]) -> None:
    fs, journal = writer.fs, writer.journal
    for entry in (config.get("storage") or {}).get("links") or []:
        path, target = str(entry["path"]), str(entry["target"])
        st = fs.lstat(path)
        if st is not None and not entry.get("overwrite"):
            same = fs.readlink(path) == target if stat.S_ISLNK(st.st_mode) else (
                bool(entry.get("hard")) and fs.lstat(target) is not None
                and _same_inode(st, fs.lstat(target)))
            if same:
                log.info("link %s -> %s already there", path, target)
                continue
            raise FirstbootError(f"link {path}: a different node exists there already and "
                                 "overwrite is false")
        journal.record(path)
        replace_with_symlink(fs, path, target, journal, hard=bool(entry.get("hard")))
        log.info("link %s -> %s", path, target)


def _same_inode(a: os.stat_result, b: os.stat_result | None) -> bool:
    return b is not None and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _install_section(writer: FileWriter, unit: Mapping[str, Any]) -> dict[str, list[str]]:
    """WantedBy/RequiredBy/Alias of the unit as written, or as the OS ships it."""
    text = str(unit.get("contents") or "")
    if not text:
        for directory in UNIT_SEARCH:
            node_path = f"{directory}/{unit['name']}"
            if writer.fs.is_file(node_path):
                text = writer.fs.read_text(node_path)
                break
    install = install_section(text)
    for key, values in install.items():
        for value in values:
            # the OS's own unit files are not validated with the config: checked here
            check_unit_name(value, f"[Install] {key} of {unit['name']}")
    return install


def _enablement_links(writer: FileWriter, unit: Mapping[str, Any]) -> list[str]:
    name = str(unit["name"])
    install = _install_section(writer, unit)
    links = [f"{SYSTEMD_DIR}/{target}.wants/{name}" for target in install.get("WantedBy", [])]
    links += [f"{SYSTEMD_DIR}/{target}.requires/{name}"
              for target in install.get("RequiredBy", [])]
    links += [f"{SYSTEMD_DIR}/{alias}" for alias in install.get("Alias", [])]
    return links


def _unit_file(writer: FileWriter, name: str) -> str:
    for directory in UNIT_SEARCH:
        if writer.fs.is_file(f"{directory}/{name}"):
            return f"{directory}/{name}"
    return f"{SYSTEMD_DIR}/{name}"


def _write_units(writer: FileWriter, config: Mapping[str, Any]) -> None:
    presets: list[str] = []
    for unit in (config.get("systemd") or {}).get("units") or []:
        name = str(unit["name"])
        writer.write_unit(unit)
        if unit.get("mask") or "enabled" not in unit:
            continue
        # what `systemctl enable` would do, without a running manager (we reboot next)
        for link in _enablement_links(writer, unit):
            writer.journal.record(link)
            if writer.fs.lexists(link):
                writer.fs.unlink(link)
            if unit["enabled"]:
                replace_with_symlink(writer.fs, link, _unit_file(writer, name), writer.journal)
        presets.append(f"{'enable' if unit['enabled'] else 'disable'} {name}")
        log.info("unit %s %s", name, "enabled" if unit["enabled"] else "disabled")
    if presets:
        # Ignition's record of its choices; the daemon removes it on its first start
        writer.write_text(PRESET_FILE, ("\n".join(presets) + "\n").encode())


def _create_users(writer: FileWriter, config: Mapping[str, Any]) -> None:
    try:
        passwd = writer.fs.read_text("/etc/passwd")
    except (FileNotFoundError, NotADirectoryError):
        passwd = ""
    known = {line.split(":")[0] for line in passwd.splitlines()}
    for user in (config.get("passwd") or {}).get("users") or []:
        name = str(user["name"])
        if name in known:
            continue
        if shutil.which("useradd") is None:
            log.warning("user %s missing and no useradd: not created", name)
            continue
        command = ["useradd", "--create-home", "--user-group", name]
        if writer.root != Path("/"):
            command[1:1] = ["--root", str(writer.root)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            log.warning("useradd %s failed: %s", name, result.stderr.strip())
        else:
            log.info("user %s created", name)


def apply_config(config: Mapping[str, Any], root: Path) -> None:
    """Ignition's files stage onto `root`: the config validated first, then directories, files,
    links, units and users, every path resolved inside `root` (mcd.noderoot); a failure undoes
    every file, link and directory written so far."""
    checked = validate_config(config)
    journal = Journal()
    writer = FileWriter(root, journal)
    try:
        _write_directories(writer, checked)
        _write_files(writer, checked)
        _write_links(writer, checked)
        _write_units(writer, checked)
        _create_users(writer, checked)
        apply_passwd(writer, {}, checked)
        journal.sync()
    except FirstbootError:
        journal.rollback()
        raise
    except (OSError, ValueError, MachineConfigError) as err:
        journal.rollback()
        raise FirstbootError(f"applying the config failed, nothing kept: {err}") from err


def config_name(root: Path) -> str:
    """The rendered config the node was served (from the annotations file)."""
    try:
        annotations = json.loads(NodeRoot(root).read_text(NODE_ANNOTATIONS_PATH))
    except (OSError, ValueError):
        return ""
    return str(annotations.get(CURRENT_CONFIG_ANNOTATION, ""))


def mark_done(root: Path, name: str) -> None:
    write_private(root, DONE_STAMP, (name + "\n").encode())


def _encapsulated(fs: NodeRoot) -> RenderedConfig | None:
    """The full rendered config the served config carried, if it is still there."""
    if not fs.lexists(ENCAPSULATED_CONFIG_PATH):
        return None
    return RenderedConfig(json.loads(fs.read_text(ENCAPSULATED_CONFIG_PATH, follow=False)))


def apply_first_kernel_arguments(root: Path,
                                 update_grub: grub.UpdateGrub = grub.run_update_grub) -> bool:
    """The encapsulated config's kernelArguments, before the first reboot, on a GRUB host: the
    drop-in and update-grub, as the daemon applies them at each update. True when applied."""
    mc = _encapsulated(NodeRoot(root))
    kargs = mc.spec.kernel_arguments if mc is not None else None
    if mc is None or not kargs:
        return False
    if ostree_booted(root):
        # TODO: rebase and kargs through rpm-ostree at first boot, as MCO does
        log.warning("OS-level first-boot changes on rpm-ostree hosts are not applied yet")
        return False
    not_grub = grub.not_grub_host(root)
    if not_grub:
        log.warning("kernel arguments %s not applied: they need rpm-ostree or GRUB, and %s",
                    kargs, not_grub)
        return False
    try:
        grub.apply_kernel_arguments(root, mc, update_grub)
    except grub.GrubError as err:
        raise FirstbootError(str(err)) from err
    return True


def complete_encapsulated(root: Path,
                          update_grub: grub.UpdateGrub = grub.run_update_grub) -> bool:
    """MCO's firstboot-complete-machineconfig: True when a reboot is needed for OS changes."""
    fs = NodeRoot(root)
    mc = _encapsulated(fs)
    if mc is None:
        log.info("no %s: nothing to complete", ENCAPSULATED_CONFIG_PATH)
        return False
    if ostree_booted(root) and (mc.spec.extensions or mc.spec.kernel_type not in ("", "default")):
        # TODO: rebase through rpm-ostree at first boot, as MCO does
        log.warning("OS-level first-boot changes on rpm-ostree hosts are not applied yet")
    reboot = apply_first_kernel_arguments(root, update_grub)
    fs.rename(ENCAPSULATED_CONFIG_PATH, ENCAPSULATED_CONFIG_PATH + ".bak")
    log.info("first boot of %s complete", mc.name)
    return reboot
