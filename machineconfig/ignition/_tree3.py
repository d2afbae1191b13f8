"""The spec 3.x field tree as translate, merge and models need it: kinds, nullability, keys per version.

Private to translate/merge/models; the parser's own schema tables live in `schema`. No I/O.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from machineconfig.errors import MachineConfigError

JSON = dict[str, Any]

# Field kinds. "?" marks a Go pointer: present-and-zero differs from absent in canonical form.
S, SN, I, IN, B, BN = "s", "s?", "i", "i?", "b", "b?"
OBJ, PTR, LIST, SLIST = "obj", "ptr", "list", "slist"
SCALARS = frozenset({S, SN, I, IN, B, BN})
NULLABLE = frozenset({SN, IN, BN})

# Spec versions by minor number; 7 is the experimental spec.
VERSIONS: dict[int, str] = {0: "3.0.0", 1: "3.1.0", 2: "3.2.0", 3: "3.3.0", 4: "3.4.0",
                            5: "3.5.0", 6: "3.6.0", 7: "3.7.0-experimental"}
MINORS: dict[str, int] = {v: k for k, v in VERSIONS.items()}
LATEST = 7


class TranslationError(MachineConfigError):
    """A config cannot be translated to the requested version; the message names the field path."""


@dataclass(frozen=True)
class Field:
    """One JSON field. `older` holds (below_minor, kind, ref): the shape used when minor < below_minor."""

    name: str
    kind: str
    ref: str = ""
    since: int = 0
    older: tuple[tuple[int, str, str], ...] = ()

    def at(self, minor: int) -> tuple[str, str]:
        for below, kind, ref in self.older:
            if minor < below:
                return kind, ref
        return self.kind, self.ref


def _f(name: str, kind: str, ref: str = "", since: int = 0,
       older: tuple[tuple[int, str, str], ...] = ()) -> Field:
    return Field(name, kind, ref, since, older)


_NODE = (_f("group", OBJ, "NodeGroup"), _f("overwrite", BN), _f("path", S), _f("user", OBJ, "NodeUser"))
_VERIF = _f("verification", OBJ, "Verification")

# Field order is Go declaration order (alphabetical Go names, embedded structs flattened in place), which
# is also the order Go marshals keys in; keeping it makes our JSON byte-compatible.
TREE: dict[str, tuple[Field, ...]] = {
    "Config": (_f("ignition", OBJ, "Ignition"), _f("kernelArguments", OBJ, "KernelArguments", 3),
               _f("passwd", OBJ, "Passwd"), _f("storage", OBJ, "Storage"), _f("systemd", OBJ, "Systemd")),
    "Ignition": (_f("config", OBJ, "IgnitionConfig"), _f("proxy", OBJ, "Proxy", 1),
                 _f("security", OBJ, "Security"), _f("timeouts", OBJ, "Timeouts"), _f("version", S)),
    "IgnitionConfig": (_f("merge", LIST, "Resource", older=((1, LIST, "ConfigReference"),)),
                       _f("replace", OBJ, "Resource", older=((1, OBJ, "ConfigReference"),))),
    "Proxy": (_f("httpProxy", SN), _f("httpsProxy", SN), _f("noProxy", SLIST)),
    "Security": (_f("tls", OBJ, "TLS"),),
    "TLS": (_f("certificateAuthorities", LIST, "Resource", older=((1, LIST, "CaReference"),)),),
    "Timeouts": (_f("httpResponseHeaders", IN), _f("httpTotal", IN)),
    "Resource": (_f("compression", SN), _f("httpHeaders", LIST, "HTTPHeader"), _f("source", SN), _VERIF),
    "ConfigReference": (_f("source", SN), _VERIF),
    "CaReference": (_f("source", S), _VERIF),
    "FileContents": (_f("compression", SN), _f("source", SN), _VERIF),
    "HTTPHeader": (_f("name", S), _f("value", SN)),
    "Verification": (_f("hash", SN),),
    "KernelArguments": (_f("shouldExist", SLIST), _f("shouldNotExist", SLIST)),
    "Passwd": (_f("groups", LIST, "PasswdGroup"), _f("users", LIST, "PasswdUser")),
    "PasswdGroup": (_f("gid", IN), _f("name", S), _f("passwordHash", SN), _f("shouldExist", BN, since=2),
                    _f("system", BN)),
    "PasswdUser": (_f("gecos", SN), _f("groups", SLIST), _f("homeDir", SN), _f("name", S),
                   _f("noCreateHome", BN), _f("noLogInit", BN), _f("noUserGroup", BN), _f("passwordHash", SN),
                   _f("primaryGroup", SN), _f("sshAuthorizedKeys", SLIST), _f("shell", SN),
                   _f("shouldExist", BN, since=2), _f("system", BN), _f("uid", IN)),
    "Storage": (_f("directories", LIST, "Directory"), _f("disks", LIST, "Disk"), _f("files", LIST, "File"),
                _f("filesystems", LIST, "Filesystem"), _f("links", LIST, "Link"),
                _f("luks", LIST, "Luks", since=2), _f("raid", LIST, "Raid")),
    "Directory": _NODE + (_f("mode", IN),),
    "File": _NODE + (_f("append", LIST, "Resource", older=((1, LIST, "FileContents"),)),
                     _f("contents", OBJ, "Resource", older=((1, OBJ, "FileContents"),)), _f("mode", IN)),
    "Link": _NODE + (_f("hard", BN), _f("target", SN, older=((3, S, ""),))),
    "NodeUser": (_f("id", IN), _f("name", SN)),
    "NodeGroup": (_f("id", IN), _f("name", SN)),
    "Disk": (_f("device", S), _f("partitions", LIST, "Partition"), _f("wipeTable", BN)),
    "Partition": (_f("guid", SN), _f("label", SN), _f("number", I), _f("resize", BN, since=2),
                  _f("shouldExist", BN), _f("sizeMiB", IN), _f("startMiB", IN), _f("typeGuid", SN),
                  _f("wipePartitionEntry", BN)),
    "Filesystem": (_f("device", S), _f("format", SN), _f("label", SN), _f("mountOptions", SLIST, since=1),
                   _f("options", SLIST), _f("path", SN), _f("uuid", SN), _f("wipeFilesystem", BN)),
    "Luks": (_f("cex", OBJ, "Cex", since=5), _f("clevis", OBJ, "Clevis", older=((3, PTR, "Clevis"),)),
             _f("device", SN), _f("discard", BN, since=4), _f("keyFile", OBJ, "Resource"), _f("label", SN),
             _f("name", S), _f("openOptions", SLIST, since=4), _f("options", SLIST), _f("uuid", SN),
             _f("wipeVolume", BN)),
    "Cex": (_f("enabled", BN),),
    "Clevis": (_f("custom", OBJ, "ClevisCustom", older=((3, PTR, "ClevisCustom"),)),
               _f("tang", LIST, "Tang"), _f("threshold", IN), _f("tpm2", BN)),
    "ClevisCustom": (_f("config", SN, older=((3, S, ""),)), _f("needsNetwork", BN),
                     _f("pin", SN, older=((3, S, ""),))),
    "Tang": (_f("advertisement", SN, since=4), _f("thumbprint", SN), _f("url", S)),
    "Raid": (_f("devices", SLIST), _f("level", SN, older=((3, S, ""),)), _f("name", S), _f("options", SLIST),
             _f("spares", IN)),
    "Systemd": (_f("units", LIST, "Unit"),),
    "Unit": (_f("contents", SN), _f("dropins", LIST, "Dropin"), _f("enabled", BN), _f("mask", BN),
             _f("name", S)),
    "Dropin": (_f("contents", SN), _f("name", S)),
}

# Merge metadata (upstream Key(), IgnoreDuplicates(), MergedKeys()).
KEY_FIELD: dict[str, str] = {
    "HTTPHeader": "name", "Directory": "path", "File": "path", "Link": "path", "Disk": "device",
    "Filesystem": "device", "Luks": "name", "Tang": "url", "Raid": "name", "Unit": "name", "Dropin": "name",
    "PasswdUser": "name", "PasswdGroup": "name", "Resource": "source", "ConfigReference": "source",
    "CaReference": "source", "FileContents": "source",
}
IGNORE_DUPS: dict[str, frozenset[str]] = {
    "File": frozenset({"append"}), "Filesystem": frozenset({"options", "mountOptions"}),
    "Raid": frozenset({"options"}), "Luks": frozenset({"options"}),
}
HANDLES: dict[str, dict[str, str]] = {
    "Storage": {"directories": "Node", "files": "Node", "links": "Node"},
    "KernelArguments": {"shouldExist": "KernelArgument", "shouldNotExist": "KernelArgument"},
}


def item_key(struct: str, item: Any) -> str:
    """The merge/duplicate key of one list item; strings are their own key."""
    if not isinstance(item, dict):
        return str(item)
    if struct == "Partition":
        # number wins over label; a partition with neither has the empty key
        if item.get("number"):
            return f"number:{item['number']}"
        if "label" in item:
            return f"label:{item['label']}"
        return ""
    return str(item.get(KEY_FIELD.get(struct, ""), ""))


@cache
def fields(struct: str, minor: int) -> tuple[tuple[Field, str, str], ...]:
    """The fields of `struct` that exist at 3.<minor>, with their kind and ref at that version."""
    return tuple((f, *f.at(minor)) for f in TREE[struct] if f.since <= minor)


def zero_scalar(kind: str) -> Any:
    return {S: "", I: 0, B: False}.get(kind)


def prune(obj: JSON, struct: str, minor: int) -> JSON:
    """Reorder keys of an (already canonical-valued) dict into Go field order; drop unknown keys."""
    out: JSON = {}
    for f, _kind, _ref in fields(struct, minor):
        if f.name in obj:
            out[f.name] = obj[f.name]
    return out


def version_minor(version: str) -> int:
    if version not in MINORS:
        raise TranslationError(f"unsupported config version {version!r}")
    return MINORS[version]
