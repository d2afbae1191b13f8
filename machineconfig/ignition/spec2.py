"""Spec 2.2.0: its field tree, decoding of json.loads output into a canonical 2.2 dict, and the main rules.

Messages use the legacy validator's wording. MCO's de-duplication of spec 2 configs is the renderer's job.
"""
from __future__ import annotations

import re
from typing import Any, NamedTuple

from machineconfig.errors import InputError
from machineconfig.ignition import dataurl
from machineconfig.ignition.schema import B, BN, IN, JSON, LIST, OBJ, PTR, SLIST, SN, I, S
from machineconfig.ignition.url import url_scheme

__all__ = ["TREE_V2", "parse_v2", "upgrade_to_v22", "validate_v2"]


class Field(NamedTuple):
    """One spec 2.2 JSON field: its name, shape code (schema's S ... SLIST) and struct ref."""

    name: str
    kind: str
    ref: str = ""


_f = Field


_NODE = (_f("filesystem", S), _f("group", PTR, "NodeGroup"), _f("overwrite", BN), _f("path", S),
         _f("user", PTR, "NodeUser"))
_VERIF = _f("verification", OBJ, "Verification")
_REF = (_f("source", S), _VERIF)

# Go declaration order of the spec2x v2_2 types (embedded Node flattened first), which is marshal order.
TREE_V2: dict[str, tuple[Field, ...]] = {
    "Config": (_f("ignition", OBJ, "Ignition"), _f("networkd", OBJ, "Networkd"), _f("passwd", OBJ, "Passwd"),
               _f("storage", OBJ, "Storage"), _f("systemd", OBJ, "Systemd")),
    "Ignition": (_f("config", OBJ, "IgnitionConfig"), _f("security", OBJ, "Security"),
                 _f("timeouts", OBJ, "Timeouts"), _f("version", S)),
    "IgnitionConfig": (_f("append", LIST, "ConfigReference"), _f("replace", PTR, "ConfigReference")),
    "ConfigReference": _REF,
    "CaReference": _REF,
    "Security": (_f("tls", OBJ, "TLS"),),
    "TLS": (_f("certificateAuthorities", LIST, "CaReference"),),
    "Timeouts": (_f("httpResponseHeaders", IN), _f("httpTotal", IN)),
    "Verification": (_f("hash", SN),),
    "Networkd": (_f("units", LIST, "Networkdunit"),),
    "Networkdunit": (_f("contents", S), _f("dropins", LIST, "NetworkdDropin"), _f("name", S)),
    "NetworkdDropin": (_f("contents", S), _f("name", S)),
    "Passwd": (_f("groups", LIST, "PasswdGroup"), _f("users", LIST, "PasswdUser")),
    "PasswdGroup": (_f("gid", IN), _f("name", S), _f("passwordHash", S), _f("system", B)),
    "PasswdUser": (_f("create", PTR, "Usercreate"), _f("gecos", S), _f("groups", SLIST), _f("homeDir", S),
                   _f("name", S), _f("noCreateHome", B), _f("noLogInit", B), _f("noUserGroup", B),
                   _f("passwordHash", SN), _f("primaryGroup", S), _f("sshAuthorizedKeys", SLIST), _f("shell", S),
                   _f("system", B), _f("uid", IN)),
    "Usercreate": (_f("gecos", S), _f("groups", SLIST), _f("homeDir", S), _f("noCreateHome", B),
                   _f("noLogInit", B), _f("noUserGroup", B), _f("primaryGroup", S), _f("shell", S),
                   _f("system", B), _f("uid", IN)),
    "Storage": (_f("directories", LIST, "Directory"), _f("disks", LIST, "Disk"), _f("files", LIST, "File"),
                _f("filesystems", LIST, "Filesystem"), _f("links", LIST, "Link"), _f("raid", LIST, "Raid")),
    "Directory": _NODE + (_f("mode", IN),),
    "File": _NODE + (_f("append", B), _f("contents", OBJ, "FileContents"), _f("mode", IN)),
    "FileContents": (_f("compression", S), _f("source", S), _VERIF),
    "Link": _NODE + (_f("hard", B), _f("target", S)),
    "NodeUser": (_f("id", IN), _f("name", S)),
    "NodeGroup": (_f("id", IN), _f("name", S)),
    "Disk": (_f("device", S), _f("partitions", LIST, "Partition"), _f("wipeTable", B)),
    "Partition": (_f("guid", S), _f("label", S), _f("number", I), _f("size", I), _f("start", I),
                  _f("typeGuid", S)),
    "Filesystem": (_f("mount", PTR, "Mount"), _f("name", S), _f("path", SN)),
    "Mount": (_f("create", PTR, "Create"), _f("device", S), _f("format", S), _f("label", SN),
              _f("options", SLIST), _f("uuid", SN), _f("wipeFilesystem", B)),
    "Create": (_f("force", B), _f("options", SLIST)),
    "Raid": (_f("devices", SLIST), _f("level", S), _f("name", S), _f("options", SLIST), _f("spares", I)),
    "Systemd": (_f("units", LIST, "Unit"),),
    "Unit": (_f("contents", S), _f("dropins", LIST, "SystemdDropin"), _f("enable", B), _f("enabled", BN),
             _f("mask", B), _f("name", S)),
    "SystemdDropin": (_f("contents", S), _f("name", S)),
}

_PY_TYPES: dict[str, tuple[type, ...]] = {S: (str,), SN: (str,), I: (int,), IN: (int,), B: (bool,), BN: (bool,)}
_GO_TYPES = {S: "string", SN: "string", I: "int", IN: "int", B: "bool", BN: "bool"}


def _lookup(obj: JSON, name: str) -> tuple[bool, Any]:
    # Go's decoder matches keys case-insensitively and the last matching key in the document wins
    found, value = False, None
    for key, val in obj.items():
        if key == name or key.lower() == name.lower():
            found, value = True, val
    return found, value


def canonicalize(obj: Any, struct: str, path: str = "$") -> JSON:
    """Decode a json.loads value as the Go type `struct` would, then marshal it with omitempty."""
    if not isinstance(obj, dict):
        raise InputError(f"cannot unmarshal {type(obj).__name__} into {struct}", path=path)
    out: JSON = {}
    for f in TREE_V2[struct]:
        found, value = _lookup(obj, f.name)
        if not found or value is None:
            continue  # null means unset, like absent
        where = f"{path}.{f.name}"
        if f.kind in _PY_TYPES:
            ok = isinstance(value, _PY_TYPES[f.kind]) and not (f.kind in (I, IN) and isinstance(value, bool))
            if not ok:
                raise InputError(f"cannot unmarshal {type(value).__name__} into {_GO_TYPES[f.kind]}", path=where)
            if f.kind in (S, I, B) and not value:
                continue
            out[f.name] = value
        elif f.kind == SLIST:
            if not isinstance(value, list) or not all(isinstance(v, str) or v is None for v in value):
                raise InputError("expected a list of strings", path=where)
            if value:
                out[f.name] = ["" if v is None else v for v in value]
        elif f.kind == LIST:
            if not isinstance(value, list):
                raise InputError("expected a list", path=where)
            items = [canonicalize({} if v is None else v, f.ref, f"{where}.{i}") for i, v in enumerate(value)]
            if items:
                out[f.name] = items
        else:
            sub = canonicalize(value, f.ref, where)
            if sub or f.kind == PTR:
                out[f.name] = sub
    return out


def parse_v2(obj: JSON) -> JSON:
    """Canonical 2.2 dict from decoded JSON; raise InputError on type errors, a wrong version or fatal rules."""
    config = canonicalize(obj, "Config")
    version = config.get("ignition", {}).get("version")
    if version != "2.2.0":
        raise InputError(f"unsupported config version {version!r} (only 2.2.0 is parsed as spec 2)",
                         path="$.ignition.version")
    errors = [e for e in validate_v2(config) if e.startswith("error")]
    if errors:
        raise InputError("invalid spec 2.2 config: " + "; ".join(errors))
    return config


_GUID = re.compile(r"^(|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})$")
_FORMATS = {"ext4": 16, "btrfs": 256, "xfs": 12, "swap": 15, "vfat": 11}
_RAID_NO_SPARES = {"linear", "raid0", "0", "stripe"}
_RAID_LEVELS = _RAID_NO_SPARES | {"raid1", "1", "mirror", "raid4", "4", "raid5", "5", "raid6", "6", "raid10", "10"}
_UNIT_EXTS = (".service", ".socket", ".device", ".mount", ".automount", ".swap", ".target", ".path", ".timer",
              ".snapshot", ".slice", ".scope")
_NETWORKD_EXTS = (".link", ".netdev", ".network")


class _Report:
    def __init__(self) -> None:
        self.entries: list[str] = []

    def error(self, path: str, msg: str) -> None:
        self.entries.append(f"error at {path}: {msg}")

    def warn(self, path: str, msg: str) -> None:
        self.entries.append(f"warning at {path}: {msg}")


def _check_url(r: _Report, path: str, source: str, required: bool) -> None:
    if not source and not required:
        return
    scheme = url_scheme(source)
    if scheme in ("http", "https", "tftp", "s3", "oem"):
        return
    if scheme == "data":
        try:
            dataurl.decode(source)
        except dataurl.DataURLError as e:
            r.error(path, str(e))
        return
    r.error(path, "invalid url scheme")


def _check_ref(r: _Report, path: str, ref: JSON, required: bool) -> None:
    _check_url(r, f"{path}.source", str(ref.get("source", "")), required)
    hash_ = ref.get("verification", {}).get("hash")
    if hash_ is None:
        return
    kind, sep, digest = str(hash_).partition("-")
    if not sep:
        r.error(f"{path}.verification.hash", "malformed hash specifier")
    elif kind != "sha512":
        r.error(f"{path}.verification.hash", "unrecognized hash function")
    elif len(digest) != 128:
        r.error(f"{path}.verification.hash", "incorrect size for hash sum")


def _check_path(r: _Report, path: str, value: str) -> None:
    if not value.startswith("/"):
        r.error(path, "path not absolute")


def validate_v2(config: JSON) -> list[str]:
    """The legacy validator's main rules on a canonical 2.2 dict, as "error|warning at <path>: <msg>"."""
    r = _Report()
    ign = config.get("ignition", {})
    if ign.get("version") != "2.2.0":
        r.error("$.ignition.version", "unsupported config version")
    for i, ref in enumerate(ign.get("config", {}).get("append", [])):
        _check_ref(r, f"$.ignition.config.append.{i}", ref, True)
    if "replace" in ign.get("config", {}):
        _check_ref(r, "$.ignition.config.replace", ign["config"]["replace"], True)
    for i, ca in enumerate(ign.get("security", {}).get("tls", {}).get("certificateAuthorities", [])):
        _check_ref(r, f"$.ignition.security.tls.certificateAuthorities.{i}", ca, True)
    storage = config.get("storage", {})
    fs_names = _check_filesystems(r, storage.get("filesystems", []))
    for kind in ("directories", "files", "links"):
        for i, node in enumerate(storage.get(kind, [])):
            _check_node(r, f"$.storage.{kind}.{i}", kind, node, fs_names)
    for i, disk in enumerate(storage.get("disks", [])):
        _check_disk(r, f"$.storage.disks.{i}", disk)
    for i, raid in enumerate(storage.get("raid", [])):
        path = f"$.storage.raid.{i}"
        level = raid.get("level", "")
        if level not in _RAID_LEVELS:
            r.error(f"{path}.level", "unrecognized raid level")
        elif level in _RAID_NO_SPARES and raid.get("spares", 0) != 0:
            r.error(f"{path}.spares", "spares unsupported for linear and raid0 arrays")
        for j, dev in enumerate(raid.get("devices", [])):
            _check_path(r, f"{path}.devices.{j}", dev)
    for i, unit in enumerate(config.get("systemd", {}).get("units", [])):
        path = f"$.systemd.units.{i}"
        if not unit.get("name", "").endswith(_UNIT_EXTS):
            r.error(f"{path}.name", "invalid systemd unit extension")
        if unit.get("enable"):
            r.warn(f"{path}.enable", "the enable field has been deprecated in favor of enabled")
        for j, dropin in enumerate(unit.get("dropins", [])):
            if not dropin.get("name", "").endswith(".conf"):
                r.error(f"{path}.dropins.{j}.name", "invalid systemd drop-in extension")
    for i, unit in enumerate(config.get("networkd", {}).get("units", [])):
        path = f"$.networkd.units.{i}"
        if not unit.get("name", "").endswith(_NETWORKD_EXTS):
            r.error(f"{path}.name", "invalid networkd unit extension")
        for j, dropin in enumerate(unit.get("dropins", [])):
            if not dropin.get("name", "").endswith(".conf"):
                r.error(f"{path}.dropins.{j}.name", "invalid networkd drop-in extension")
    for i, user in enumerate(config.get("passwd", {}).get("users", [])):
        if "create" in user:
            r.warn(f"$.passwd.users.{i}.create",
                   "the create object has been deprecated in favor of user-level options")
    return r.entries


def _check_filesystems(r: _Report, filesystems: list[JSON]) -> set[str]:
    names: set[str] = set()
    for i, fs in enumerate(filesystems):
        path = f"$.storage.filesystems.{i}"
        name = fs.get("name", "")
        if name in names:
            r.warn(f"{path}.name", f'Filesystem "{name}" shadows exising filesystem definition')
        names.add(name)
        mount = fs.get("mount")
        if mount is None and "path" not in fs:
            r.error(path, "filesystem is missing mount or path")
        elif mount is not None and "path" in fs:
            r.error(path, "filesystem has both mount and path defined")
        if "path" in fs:
            _check_path(r, f"{path}.path", fs["path"])
        if mount is None:
            continue
        _check_path(r, f"{path}.mount.device", mount.get("device", ""))
        fmt = mount.get("format", "")
        if fmt not in _FORMATS:
            r.error(f"{path}.mount.format", "invalid filesystem format")
        elif len(mount.get("label", "").encode()) > _FORMATS[fmt]:
            r.error(f"{path}.mount.label",
                    f"filesystem labels cannot be longer than {_FORMATS[fmt]} characters when using {fmt}")
        if "create" in mount:
            r.warn(f"{path}.mount.create", "the create object has been deprecated in favor of mount-level options")
            if mount.get("options"):
                r.error(f"{path}.mount", "cannot use both create object and mount-level options field")
            if mount.get("wipeFilesystem"):
                r.error(f"{path}.mount", "cannot use both create object and wipeFilesystem field")
    return names


def _check_node(r: _Report, path: str, kind: str, node: JSON, fs_names: set[str]) -> None:
    fs = node.get("filesystem", "")
    if not fs:
        r.error(f"{path}.filesystem", "no filesystem specified")
    elif fs != "root" and fs not in fs_names:
        what = {"files": "File", "directories": "Directory", "links": "Link"}[kind]
        r.warn(f"{path}.filesystem", f'{what} "{node.get("path", "")}" references nonexistent filesystem "{fs}". '
               "(This is ok if it is defined in a referenced config)")
    _check_path(r, f"{path}.path", node.get("path", ""))
    if kind == "links":
        return
    mode = node.get("mode")
    if mode is None:
        default = "0644" if kind == "files" else "0755"
        r.warn(f"{path}.mode", f"permissions unset, defaulting to {default}")
    elif not 0 <= mode <= 0o7777:
        r.error(f"{path}.mode", "illegal file mode")
    if kind == "files":
        contents = node.get("contents", {})
        if contents.get("compression", "") not in ("", "gzip"):
            r.error(f"{path}.contents.compression", "invalid compression method")
        _check_ref(r, f"{path}.contents", contents, False)
        if node.get("append") and node.get("overwrite") is True:
            r.error(f"{path}.overwrite", "cannot set both append and overwrite to true")


def _check_disk(r: _Report, path: str, disk: JSON) -> None:
    _check_path(r, f"{path}.device", disk.get("device", ""))
    numbers: set[int] = set()
    spans: list[tuple[int, int]] = []
    for j, part in enumerate(disk.get("partitions", [])):
        ppath = f"{path}.partitions.{j}"
        label = part.get("label", "")
        if len(label.encode()) > 36:
            r.error(f"{ppath}.label", "partition labels may not exceed 36 characters")
        if ":" in label:
            r.error(f"{ppath}.label", "partition label will be truncated to text before the colon")
        for key in ("guid", "typeGuid"):
            if not _GUID.match(part.get(key, "")):
                r.error(f"{ppath}.{key}", 'doesn\'t match the form "01234567-89AB-CDEF-EDCB-A98765432101"')
        number = part.get("number", 0)
        if number and number in numbers:
            r.error(ppath, "partition numbers collide")
        numbers.add(number)
        start, size = part.get("start", 0), part.get("size", 0)
        if start and size:
            if any(start < s + n and s < start + size for s, n in spans):
                r.error(ppath, "partitions overlap")
            spans.append((start, size))


def upgrade_to_v22(obj: Any, minor: int) -> Any:
    """What ign2.Parse's 2.0 -> 2.1 -> 2.2 translation makes explicit, on decoded JSON of a 2.`minor` config.

    Spec 2.0 and 2.1 hold file and directory modes as plain ints, so 2.2 gets an explicit mode (0 when
    unset). Spec 2.0 holds a file's user and group as a plain int id (no name), so 2.1 gets an explicit
    id (0 when unset). Spec 2.0 has no directories or links. Values of the wrong type are left for
    canonicalize to refuse. Returns a new object; `obj` is not modified.
    """
    if minor >= 2 or not isinstance(obj, dict) or not isinstance(obj.get("storage"), dict):
        return obj
    storage = dict(obj["storage"])
    kinds = ("files",) if minor == 0 else ("files", "directories")
    for kind in kinds:
        nodes = storage.get(kind)
        if not isinstance(nodes, list):
            continue
        out = []
        for node in nodes:
            if isinstance(node, dict):
                node = dict(node)
                if node.get("mode") is None:
                    node["mode"] = 0
                if minor == 0 and kind == "files":
                    for who in ("user", "group"):
                        owner = node.get(who)
                        if owner is None:
                            node[who] = {"id": 0}
                        elif isinstance(owner, dict):
                            ident = owner.get("id")
                            node[who] = {"id": 0 if ident is None else ident}
            out.append(node)
        storage[kind] = out
    return dict(obj, storage=storage)
