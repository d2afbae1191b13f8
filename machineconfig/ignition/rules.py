"""The semantic rules of each spec 3.x struct (upstream `Validate` methods), one function per struct.

Each rule receives the typed struct (every field present, pointers None when unset) and its path, and
reports findings in the order upstream does; version differences are keyed on the spec minor.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from machineconfig.ignition import storage_rules
from machineconfig.ignition.decode import is_valid_json
from machineconfig.ignition.findings import Path, Sink, nil_or_empty
from machineconfig.ignition.gopath import validate_path
from machineconfig.ignition.units import UnitParseError, deserialize
from machineconfig.ignition.url import ERR_INVALID_SCHEME, ERR_INVALID_URL, URLError, go_url_parse, \
    http_scheme, validate_url, validate_url_nil_ok

Obj = dict[str, Any]

SPECIAL_BITS = ("setuid/setgid/sticky bits are not supported or functional in spec versions older "
                "than 3.6.0")
UNIT_EXTENSIONS = frozenset({".service", ".socket", ".device", ".mount", ".automount", ".swap", ".target",
                             ".path", ".timer", ".snapshot", ".slice", ".scope"})


def _go_ext(name: str) -> str:
    """path.Ext: the suffix from the last dot in the final element."""
    for i in range(len(name) - 1, -1, -1):
        if name[i] == "/":
            break
        if name[i] == ".":
            return name[i:]
    return ""


# --- config, ignition, resources -------------------------------------------------------------

def config_rule(s: Sink, cfg: Obj, path: Path) -> None:
    unit_paths: set[str] = set()
    for unit in cfg["systemd"]["units"]:
        if not nil_or_empty(unit["contents"]):
            unit_paths.add("/etc/systemd/system/" + unit["name"])
        for dropin in unit["dropins"]:
            if not nil_or_empty(dropin["contents"]):
                unit_paths.add(f"/etc/systemd/system/{unit['name']}.d/{dropin['name']}")
    for kind in ("files", "directories", "links"):
        for i, node in enumerate(cfg["storage"][kind]):
            if node["path"] in unit_paths:
                s.error(path + ("storage", kind, i, "path"), "path conflicts with systemd unit or dropin")


def _required_source(s: Sink, res: Obj) -> str | None:
    if nil_or_empty(res["source"]):
        return "source is required"
    return validate_url(res["source"], s.minor)


def ignition_config_rule(s: Sink, obj: Obj, path: Path) -> None:
    if s.minor >= 1:
        for i, res in enumerate(obj["merge"]):
            s.error(path + ("merge", i), _required_source(s, res))


def tls_rule(s: Sink, obj: Obj, path: Path) -> None:
    if s.minor >= 1:
        for i, res in enumerate(obj["certificateAuthorities"]):
            s.error(path + ("certificateAuthorities", i), _required_source(s, res))


def proxy_rule(s: Sink, obj: Obj, path: Path) -> None:
    for name, http_ok in (("httpProxy", True), ("httpsProxy", False)):
        value = obj[name]
        if value is None:
            continue
        scheme = http_scheme(value)
        if scheme is None:
            s.error(path + (name,), ERR_INVALID_URL)
        elif scheme not in ("http", "https"):
            s.error(path + (name,), "proxies must be http(s)")
        elif scheme == "http" and not http_ok:
            s.warn(path + (name,), "insecure plaintext HTTP proxy specified for HTTPS resources")


def _compression(value: str | None) -> str | None:
    if value is not None and value not in ("", "gzip"):
        return "invalid compression method"
    return None


def resource_rule(s: Sink, res: Obj, path: Path) -> None:
    s.error(path + ("compression",), _compression(res.get("compression")))
    if res["verification"]["hash"] is not None and res["source"] is None:
        s.error(path + ("verification", "hash"), "source must be specified if verification is specified")
    s.error(path + ("source",), validate_url_nil_ok(res["source"], s.minor))
    if res.get("httpHeaders"):
        if nil_or_empty(res["source"]):
            s.error(path + ("httpHeaders",), ERR_INVALID_URL)
        else:
            scheme = http_scheme(res["source"])
            if scheme is None:
                s.error(path + ("httpHeaders",), ERR_INVALID_URL)
            elif scheme not in ("http", "https"):
                s.error(path + ("httpHeaders",), "cannot use HTTP headers with this source scheme")


def ca_reference_rule(s: Sink, res: Obj, path: Path) -> None:
    s.error(path + ("source",), validate_url(res["source"], s.minor))


def http_header_rule(s: Sink, header: Obj, path: Path) -> None:
    if header["name"] == "":
        s.error(path + ("name",), "HTTP header name can't be empty")
    if header["value"] == "":
        s.error(path + ("value",), "unable to parse HTTP header")


def verification_rule(s: Sink, obj: Obj, path: Path) -> None:
    value = obj["hash"]
    if value is None:
        return
    function, dash, digest = value.partition("-")
    if not dash:
        s.error(path + ("hash",), "malformed hash specifier")
        return
    sizes = {"sha512": 128, "sha256": 64} if s.minor >= 1 else {"sha512": 128}
    if function not in sizes:
        s.error(path + ("hash",), "unrecognized hash function")
    elif len(digest) != sizes[function]:
        s.error(path + ("hash",), "incorrect size for hash sum")


# --- files, directories, links -----------------------------------------------------------------

def _mode(s: Sink, node: Obj, path: Path) -> None:
    mode = node["mode"]
    if mode is not None and not 0 <= mode <= 0o7777:
        s.error(path + ("mode",), "illegal file mode")
    if mode is not None and s.minor <= 5 and mode & 0o7000:
        s.warn(path + ("mode",), SPECIAL_BITS)


def directory_rule(s: Sink, node: Obj, path: Path) -> None:
    s.error(path + ("path",), validate_path(node["path"]))
    _mode(s, node, path)


def file_rule(s: Sink, node: Obj, path: Path) -> None:
    s.error(path + ("path",), validate_path(node["path"]))
    _mode(s, node, path)
    if node["overwrite"] is True and node["contents"]["source"] is None:
        s.error(path + ("overwrite",), "overwrite must be false if source is unspecified")


def link_rule(s: Sink, node: Obj, path: Path) -> None:
    # Target and hard-link checks live in the Storage rule, as upstream.
    s.error(path + ("path",), validate_path(node["path"]))


def owner_rule(s: Sink, owner: Obj, path: Path) -> None:
    if owner["id"] is not None and not nil_or_empty(owner["name"]):
        s.error(path, "cannot set both id and name")


# --- luks -----------------------------------------------------------------------------------------

def _clevis_present(clevis: Obj | None) -> bool:
    if clevis is None:
        return False
    custom = clevis["custom"] or {}
    return (not nil_or_empty(custom.get("pin")) or len(clevis["tang"]) > 0 or clevis["tpm2"] is True
            or (clevis["threshold"] is not None and clevis["threshold"] != 0))


def luks_rule(s: Sink, luks: Obj, path: Path) -> None:
    if "/" in luks["name"]:
        s.error(path + ("name",), "device names cannot contain slashes")
    if luks["label"] is not None and len(luks["label"].encode()) > 47:
        s.error(path + ("label",), "luks device labels cannot be longer than 47 characters")
    if nil_or_empty(luks["device"]):
        s.error(path + ("device",), "disk device is required")
    else:
        s.error(path + ("device",), validate_path(luks["device"]))
    clevis = luks["clevis"]
    if clevis is not None:
        others = len(clevis["tang"]) > 0 or clevis["tpm2"] is True or (
            clevis["threshold"] is not None and clevis["threshold"] != 0)
        custom = clevis["custom"]
        with_custom = custom is not None if s.minor == 2 else not nil_or_empty(custom["pin"])
        if with_custom and others:
            s.error(path + ("clevis",), "cannot use custom clevis config with tpm2, tang, or threshold")
    if validate_url_nil_ok(luks["keyFile"]["source"], s.minor):
        s.error(path + ("keys",), "invalid key-file source")
    if s.minor >= 5 and luks["cex"]["enabled"] is True:
        if _clevis_present(clevis):
            s.error(path + ("cex",), "cannot use cex with clevis")
        if not nil_or_empty(luks["keyFile"]["source"]):
            s.error(path + ("cex",), "cannot use key file with cex")


def clevis_custom_rule(s: Sink, custom: Obj, path: Path) -> None:
    pin, config = custom["pin"], custom["config"]
    if nil_or_empty(pin) and nil_or_empty(config) and custom["needsNetwork"] is not True:
        return
    whitelist = ("tpm2", "tang", "sss")
    if s.minor == 2:
        if pin not in whitelist:
            s.error(path + ("pin",), "unsupported clevis pin")
    elif nil_or_empty(pin):
        s.error(path + ("pin",), "missing required custom clevis pin")
    elif s.minor <= 5 and pin not in whitelist:
        s.error(path + ("pin",), "unsupported clevis pin")
    if nil_or_empty(config):
        s.error(path + ("config",), "missing required custom clevis config")


def tang_rule(s: Sink, tang: Obj, path: Path) -> None:
    try:
        scheme: str | None = go_url_parse(tang["url"]).scheme
    except URLError:
        scheme = None
    if scheme is None:
        s.error(path + ("url",), ERR_INVALID_URL)
    elif scheme not in ("http", "https"):
        s.error(path + ("url",), ERR_INVALID_SCHEME)
    if nil_or_empty(tang["thumbprint"]):
        s.error(path + ("thumbprint",), "thumbprint is required")
    advertisement = tang.get("advertisement")
    if advertisement and not is_valid_json(advertisement):
        s.error(path + ("advertisement",), "advertisement is not valid JSON")


# --- systemd --------------------------------------------------------------------------------------

# Unit texts already parsed (a config is validated at its own version, then again at 3.5 after
# translation): text -> _unit_content_error's answer, bounded by the total length of the texts.
UNIT_CACHE_BUDGET_CHARS = 16 << 20
_unit_verdicts: dict[str, tuple[str | None, bool]] = {}
_unit_cache_size = 0


def clear_caches() -> None:
    """Forget remembered unit verdicts (benchmarks measure cold runs with it)."""
    global _unit_cache_size
    _unit_verdicts.clear()
    _unit_cache_size = 0


def _unit_content_error(contents: str | None) -> tuple[str | None, bool]:
    """(error text, has an option in [Install]); a pure function of the text, so remembered."""
    global _unit_cache_size
    if nil_or_empty(contents):
        return None, False
    assert contents is not None
    verdict = _unit_verdicts.get(contents)
    if verdict is not None:
        return verdict
    try:
        options = deserialize(contents)
    except UnitParseError as e:
        verdict = (f"invalid unit content: {e}", False)
    else:
        verdict = (None, any(o.section == "Install" for o in options))
    if len(contents) <= UNIT_CACHE_BUDGET_CHARS:
        if _unit_cache_size + len(contents) > UNIT_CACHE_BUDGET_CHARS:
            clear_caches()  # simple and bounded: start over rather than track recency
        _unit_verdicts[contents] = verdict
        _unit_cache_size += len(contents)
    return verdict


def systemd_rule(s: Sink, systemd: Obj, path: Path) -> None:
    units = {u["name"]: u for u in systemd["units"]}
    for i, unit in enumerate(systemd["units"]):
        match = re.fullmatch(r"(.+?)@(.+?)\.service", unit["name"])
        if not match or unit["enabled"] is not True:
            continue
        template = match.group(1) + "@.service"
        t = units.get(template)
        if t is None or nil_or_empty(t["contents"]):
            continue
        error, has_install = _unit_content_error(t["contents"])
        if error is None and not has_install:
            s.warn(path + ("units", i, "contents"),
                   f'template unit "{template}" for "{unit["name"]}" doesn\'t have Install section')


def unit_rule(s: Sink, unit: Obj, path: Path) -> None:
    if _go_ext(unit["name"]) not in UNIT_EXTENSIONS:
        s.error(path + ("name",), "invalid systemd unit extension")
    error, has_install = _unit_content_error(unit["contents"])
    s.error(path + ("contents",), error)
    if error is None and unit["enabled"] is True and not nil_or_empty(unit["contents"]) and not has_install:
        s.warn(path + ("contents",),
               f'unit "{unit["name"]}" is enabled, but has no install section so enable does nothing')


def dropin_rule(s: Sink, dropin: Obj, path: Path) -> None:
    s.error(path + ("contents",), _unit_content_error(dropin["contents"])[0])
    if _go_ext(dropin["name"]) != ".conf":
        s.error(path + ("name",), "invalid systemd drop-in extension")


def _device_element(s: Sink, device: str, path: Path) -> None:
    s.error(path, validate_path(device))


Rule = Callable[[Sink, Obj, Path], None]
RULES: dict[str, Rule] = {
    "Config": config_rule, "IgnitionConfig": ignition_config_rule, "TLS": tls_rule, "Proxy": proxy_rule,
    "Resource": resource_rule, "FileContents": resource_rule, "ConfigReference": resource_rule,
    "CaReference": ca_reference_rule, "HTTPHeader": http_header_rule, "Verification": verification_rule,
    "Directory": directory_rule, "File": file_rule, "Link": link_rule, "NodeUser": owner_rule,
    "NodeGroup": owner_rule, "Storage": storage_rules.storage_rule, "Disk": storage_rules.disk_rule,
    "Partition": storage_rules.partition_rule, "Filesystem": storage_rules.filesystem_rule,
    "Raid": storage_rules.raid_rule, "Luks": luks_rule, "ClevisCustom": clevis_custom_rule, "Tang": tang_rule,
    "Systemd": systemd_rule, "Unit": unit_rule, "Dropin": dropin_rule,
}
ELEMENT_RULES: dict[tuple[str, str], Callable[[Sink, Any, Path], None]] = {
    ("Raid", "devices"): _device_element,
}
