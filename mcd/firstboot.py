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
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from machineconfig.constants import CURRENT_CONFIG_ANNOTATION
from machineconfig.ignition.dataurl import decode
from mcd.file_writers import DEFAULT_DIR_MODE, SYSTEMD_DIR, FileWriter, Journal, make_parents
from mcd.passwd import apply_passwd
from mcd.rpm_ostree import ostree_booted

log = logging.getLogger(__name__)

ACCEPT = "application/vnd.coreos.ignition+json;version=3.5.0, */*;q=0.1"
ENCAPSULATED = "/etc/ignition-machine-config-encapsulated.json"
NODE_ANNOTATIONS = "/etc/machine-config-daemon/node-annotations.json"
PRESET_FILE = "/etc/systemd/system-preset/20-ignition.preset"
DONE_STAMP = "/var/lib/machine-config-daemon/firstboot.done"
UNIT_SEARCH = (SYSTEMD_DIR, "/usr/local/lib/systemd/system", "/usr/lib/systemd/system",
               "/lib/systemd/system")
FETCH_TIMEOUT = 30.0
BACKOFF_MAX = 60.0


class FirstbootError(RuntimeError):
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
        config: dict[str, Any] = json.loads(response.read())
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

def _owner(writer: FileWriter, entry: Mapping[str, Any]) -> tuple[int, int]:
    return writer.owner_of(entry)


def _write_directories(writer: FileWriter, config: Mapping[str, Any]) -> None:
    for entry in (config.get("storage") or {}).get("directories") or []:
        target = writer.host_path(str(entry["path"]))
        make_parents(target / "x", writer.journal)
        os.chmod(target, int(entry.get("mode", DEFAULT_DIR_MODE)))
        os.chown(target, *_owner(writer, entry))
        log.info("directory %s", entry["path"])


def _write_links(writer: FileWriter, config: Mapping[str, Any]) -> None:
    for entry in (config.get("storage") or {}).get("links") or []:
        target = writer.host_path(str(entry["path"]))
        make_parents(target, writer.journal)
        if target.exists() or target.is_symlink():
            target.unlink()
        if entry.get("hard"):
            os.link(writer.host_path(str(entry["target"])), target)
        else:
            target.symlink_to(str(entry["target"]))
        log.info("link %s -> %s", entry["path"], entry["target"])


def _install_section(writer: FileWriter, unit: Mapping[str, Any]) -> dict[str, list[str]]:
    """WantedBy/RequiredBy/Alias of the unit as written, or as the OS ships it."""
    text = str(unit.get("contents") or "")
    if not text:
        for directory in UNIT_SEARCH:
            path = writer.host_path(f"{directory}/{unit['name']}")
            if path.is_file():
                text = path.read_text()
                break
    install: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Install]" and "=" in line:
            key, _, value = line.partition("=")
            install.setdefault(key.strip(), []).extend(value.split())
    return install


def _enablement_links(writer: FileWriter, unit: Mapping[str, Any]) -> list[Path]:
    name = str(unit["name"])
    install = _install_section(writer, unit)
    links = [writer.host_path(f"{SYSTEMD_DIR}/{target}.wants/{name}")
             for target in install.get("WantedBy", [])]
    links += [writer.host_path(f"{SYSTEMD_DIR}/{target}.requires/{name}")
              for target in install.get("RequiredBy", [])]
    links += [writer.host_path(f"{SYSTEMD_DIR}/{alias}") for alias in install.get("Alias", [])]
    return links


def _unit_file(writer: FileWriter, name: str) -> str:
    for directory in UNIT_SEARCH:
        if writer.host_path(f"{directory}/{name}").is_file():
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
            if link.is_symlink() or link.exists():
                link.unlink()
            if unit["enabled"]:
                make_parents(link, writer.journal)
                link.symlink_to(_unit_file(writer, name))
        presets.append(f"{'enable' if unit['enabled'] else 'disable'} {name}")
        log.info("unit %s %s", name, "enabled" if unit["enabled"] else "disabled")
    if presets:
        # Ignition's record of its choices; the daemon removes it on its first start
        writer.write_text(PRESET_FILE, ("\n".join(presets) + "\n").encode())


def _create_users(writer: FileWriter, config: Mapping[str, Any]) -> None:
    passwd = writer.host_path("/etc/passwd")
    known = {line.split(":")[0] for line in passwd.read_text().splitlines()} \
        if passwd.exists() else set()
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
    """Ignition's files stage onto `root`: directories, files, links, units, then users."""
    journal = Journal()
    writer = FileWriter(root, journal)
    _write_directories(writer, config)
    writer.write_files((config.get("storage") or {}).get("files") or [])
    _write_links(writer, config)
    _write_units(writer, config)
    _create_users(writer, config)
    apply_passwd(writer, {}, config)
    journal.sync()


def config_name(root: Path) -> str:
    """The rendered config the node was served (from the annotations file)."""
    path = root / NODE_ANNOTATIONS.lstrip("/")
    try:
        annotations = json.loads(path.read_text())
    except (OSError, ValueError):
        return ""
    return str(annotations.get(CURRENT_CONFIG_ANNOTATION, ""))


def mark_done(root: Path, name: str) -> None:
    stamp = root / DONE_STAMP.lstrip("/")
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(name + "\n")


def complete_encapsulated(root: Path) -> bool:
    """MCO's firstboot-complete-machineconfig: True when a reboot is needed for OS changes."""
    path = root / ENCAPSULATED.lstrip("/")
    if not path.exists():
        log.info("no %s: nothing to complete", ENCAPSULATED)
        return False
    mc = json.loads(path.read_text())
    spec = mc.get("spec") or {}
    if ostree_booted(root) and (spec.get("kernelArguments") or spec.get("extensions")
                                or spec.get("kernelType") not in (None, "", "default")):
        # TODO: rebase and kargs through rpm-ostree at first boot, as MCO does
        log.warning("OS-level first-boot changes on rpm-ostree hosts are not applied yet")
    elif spec.get("kernelArguments"):
        log.warning("kernel arguments %s need rpm-ostree: not applied on this host",
                    spec["kernelArguments"])
    path.replace(path.with_name(path.name + ".bak"))
    log.info("first boot of %s complete", (mc.get("metadata") or {}).get("name", "?"))
    return False
