"""The field tree of every Ignition spec 3.x version (3.0.0 ... 3.7.0-experimental) as plain data.

For each Go struct: its fields in Go declaration order (the order upstream validates and marshals in),
JSON name, Go name, kind, nullability (Go pointer), the minor version range a field shape applies to,
and the duplicate/merge key metadata. The one description of the 3.x tree: the parser, validator,
translate, merge and any module that walks configs read it (`shaped_fields` is the view by shape code).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

JSON = dict[str, Any]

# Field kinds.
STRING, INT, BOOL, STRUCT, LIST = "string", "int", "bool", "struct", "list"
SCALAR_KINDS = frozenset({STRING, INT, BOOL})

# Shape codes: a field's kind and nullability as one code, for code that dispatches on shape (translate,
# merge, spec 2's own tree). "?" marks a Go pointer; OBJ/PTR a value/pointer struct; LIST (as above, "list")
# a list of structs and SLIST a list of strings.
S, SN, I, IN, B, BN = "s", "s?", "i", "i?", "b", "b?"
OBJ, PTR, SLIST = "obj", "ptr", "slist"
SCALARS = frozenset({S, SN, I, IN, B, BN})
NULLABLE = frozenset({SN, IN, BN})

# Spec versions by minor number; minor 7 is the experimental spec.
VERSIONS: dict[int, str] = {0: "3.0.0", 1: "3.1.0", 2: "3.2.0", 3: "3.3.0", 4: "3.4.0",
                            5: "3.5.0", 6: "3.6.0", 7: "3.7.0-experimental"}
MINOR_OF: dict[str, int] = {v: k for k, v in VERSIONS.items()}
LATEST_MINOR = 7
ROOT = "Config"


@dataclass(frozen=True)
class Field:
    """One JSON field of a struct, valid for minors in [since, until).

    `ref` names the struct type of a STRUCT field or of the elements of a LIST of structs; `elem`
    names the Go string type of a LIST of strings (e.g. KernelArgument). `go_type` overrides the
    Go type name shown in decode errors (a named slice type such as HTTPHeaders).
    """

    name: str
    go_name: str
    kind: str
    nullable: bool = False
    ref: str = ""
    elem: str = ""
    since: int = 0
    until: int = LATEST_MINOR + 1
    go_type: str = ""

    @property
    def is_struct_list(self) -> bool:
        return self.kind == LIST and bool(self.ref)

    def go_type_name(self) -> str:
        """The Go type as `reflect.Type.String()` prints it, for `cannot unmarshal` messages."""
        if self.go_type:
            return self.go_type
        if self.kind == STRUCT:
            return "types." + self.ref
        if self.kind == LIST:
            return "[]types." + (self.ref or self.elem)
        return self.kind

    def elem_go_type_name(self) -> str:
        """The Go type of one list element."""
        return "types." + (self.ref or self.elem) if self.elem or self.ref else "string"


def _f(name: str, kind: str, *, null: bool = False, ref: str = "", elem: str = "", since: int = 0,
       until: int = LATEST_MINOR + 1, go_name: str = "", go_type: str = "") -> Field:
    return Field(name, go_name or name[:1].upper() + name[1:], kind, null, ref, elem, since, until, go_type)


def _sn(name: str, **kw: Any) -> Field:
    return _f(name, STRING, null=True, **kw)


def _in(name: str, **kw: Any) -> Field:
    return _f(name, INT, null=True, **kw)


def _bn(name: str, **kw: Any) -> Field:
    return _f(name, BOOL, null=True, **kw)


# Directory, File and Link embed Node; Go flattens embedded fields in place, Node first.
_NODE = (_f("group", STRUCT, ref="NodeGroup"), _bn("overwrite"), _f("path", STRING),
         _f("user", STRUCT, ref="NodeUser"))
_VERIFICATION = _f("verification", STRUCT, ref="Verification")

STRUCTS: dict[str, tuple[Field, ...]] = {
    "Config": (_f("ignition", STRUCT, ref="Ignition"),
               _f("kernelArguments", STRUCT, ref="KernelArguments", since=3),
               _f("passwd", STRUCT, ref="Passwd"), _f("storage", STRUCT, ref="Storage"),
               _f("systemd", STRUCT, ref="Systemd")),
    "Ignition": (_f("config", STRUCT, ref="IgnitionConfig"), _f("proxy", STRUCT, ref="Proxy", since=1),
                 _f("security", STRUCT, ref="Security"), _f("timeouts", STRUCT, ref="Timeouts"),
                 _f("version", STRING)),
    "IgnitionConfig": (_f("merge", LIST, ref="ConfigReference", until=1),
                       _f("merge", LIST, ref="Resource", since=1),
                       _f("replace", STRUCT, ref="ConfigReference", until=1),
                       _f("replace", STRUCT, ref="Resource", since=1)),
    "Proxy": (_sn("httpProxy", go_name="HTTPProxy"), _sn("httpsProxy", go_name="HTTPSProxy"),
              _f("noProxy", LIST, elem="NoProxyItem")),
    "Security": (_f("tls", STRUCT, ref="TLS", go_name="TLS"),),
    "TLS": (_f("certificateAuthorities", LIST, ref="CaReference", until=1),
            _f("certificateAuthorities", LIST, ref="Resource", since=1)),
    "Timeouts": (_in("httpResponseHeaders", go_name="HTTPResponseHeaders"),
                 _in("httpTotal", go_name="HTTPTotal")),
    "Resource": (_sn("compression"),
                 _f("httpHeaders", LIST, ref="HTTPHeader", go_name="HTTPHeaders", go_type="types.HTTPHeaders"),
                 _sn("source"), _VERIFICATION),
    "ConfigReference": (_sn("source"), _VERIFICATION),
    "CaReference": (_f("source", STRING), _VERIFICATION),
    "FileContents": (_sn("compression"), _sn("source"), _VERIFICATION),
    "HTTPHeader": (_f("name", STRING), _sn("value")),
    "Verification": (_sn("hash"),),
    "KernelArguments": (_f("shouldExist", LIST, elem="KernelArgument"),
                        _f("shouldNotExist", LIST, elem="KernelArgument")),
    "Passwd": (_f("groups", LIST, ref="PasswdGroup"), _f("users", LIST, ref="PasswdUser")),
    "PasswdGroup": (_in("gid"), _f("name", STRING), _sn("passwordHash"), _bn("shouldExist", since=2),
                    _bn("system")),
    "PasswdUser": (_sn("gecos"), _f("groups", LIST, elem="Group"), _sn("homeDir"), _f("name", STRING),
                   _bn("noCreateHome"), _bn("noLogInit"), _bn("noUserGroup"), _sn("passwordHash"),
                   _sn("primaryGroup"), _f("sshAuthorizedKeys", LIST, elem="SSHAuthorizedKey",
                                           go_name="SSHAuthorizedKeys"),
                   _sn("shell"), _bn("shouldExist", since=2), _bn("system"), _in("uid", go_name="UID")),
    "Storage": (_f("directories", LIST, ref="Directory"), _f("disks", LIST, ref="Disk"),
                _f("files", LIST, ref="File"), _f("filesystems", LIST, ref="Filesystem"),
                _f("links", LIST, ref="Link"), _f("luks", LIST, ref="Luks", since=2),
                _f("raid", LIST, ref="Raid")),
    "Directory": _NODE + (_in("mode"),),
    "File": _NODE + (_f("append", LIST, ref="FileContents", until=1), _f("append", LIST, ref="Resource", since=1),
                     _f("contents", STRUCT, ref="FileContents", until=1),
                     _f("contents", STRUCT, ref="Resource", since=1), _in("mode")),
    "Link": _NODE + (_bn("hard"), _f("target", STRING, until=3), _sn("target", since=3)),
    "NodeUser": (_in("id", go_name="ID"), _sn("name")),
    "NodeGroup": (_in("id", go_name="ID"), _sn("name")),
    "Disk": (_f("device", STRING), _f("partitions", LIST, ref="Partition"), _bn("wipeTable")),
    "Partition": (_sn("guid", go_name="GUID"), _sn("label"), _f("number", INT), _bn("resize", since=2),
                  _bn("shouldExist"), _in("sizeMiB"), _in("startMiB"), _sn("typeGuid", go_name="TypeGUID"),
                  _bn("wipePartitionEntry")),
    "Filesystem": (_f("device", STRING), _sn("format"), _sn("label"),
                   _f("mountOptions", LIST, elem="MountOption", since=1),
                   _f("options", LIST, elem="FilesystemOption"), _sn("path"), _sn("uuid", go_name="UUID"),
                   _bn("wipeFilesystem")),
    "Luks": (_f("cex", STRUCT, ref="Cex", since=5),
             _f("clevis", STRUCT, null=True, ref="Clevis", until=3), _f("clevis", STRUCT, ref="Clevis", since=3),
             _sn("device"), _bn("discard", since=4), _f("keyFile", STRUCT, ref="Resource"), _sn("label"),
             _f("name", STRING), _f("openOptions", LIST, elem="OpenOption", since=4),
             _f("options", LIST, elem="LuksOption"), _sn("uuid", go_name="UUID"), _bn("wipeVolume")),
    "Cex": (_bn("enabled"),),
    "Clevis": (_f("custom", STRUCT, null=True, ref="ClevisCustom", until=3),
               _f("custom", STRUCT, ref="ClevisCustom", since=3),
               _f("tang", LIST, ref="Tang"), _in("threshold"), _bn("tpm2")),
    "ClevisCustom": (_f("config", STRING, until=3), _sn("config", since=3), _bn("needsNetwork"),
                     _f("pin", STRING, until=3), _sn("pin", since=3)),
    "Tang": (_sn("advertisement", since=4), _sn("thumbprint"), _f("url", STRING, go_name="URL")),
    "Raid": (_f("devices", LIST, elem="Device"), _f("level", STRING, until=3), _sn("level", since=3),
             _f("name", STRING), _f("options", LIST, elem="RaidOption"), _in("spares")),
    "Systemd": (_f("units", LIST, ref="Unit"),),
    "Unit": (_sn("contents"), _f("dropins", LIST, ref="Dropin"), _bn("enabled"), _bn("mask"),
             _f("name", STRING)),
    "Dropin": (_sn("contents"), _f("name", STRING)),
}

# Duplicate detection and merging (upstream Key(), IgnoreDuplicates(), MergedKeys()).
# The field whose value is an item's key; Partition has a computed key (see item_key).
KEY_FIELD: dict[str, str] = {
    "HTTPHeader": "name", "Directory": "path", "File": "path", "Link": "path", "Disk": "device",
    "Filesystem": "device", "Luks": "name", "Tang": "url", "Raid": "name", "Unit": "name",
    "Dropin": "name", "PasswdUser": "name", "PasswdGroup": "name", "Resource": "source",
    "ConfigReference": "source", "CaReference": "source", "FileContents": "source",
}
# Lists that concatenate on merge and are never checked for duplicates.
IGNORE_DUPS: dict[str, frozenset[str]] = {
    "File": frozenset({"append"}), "Filesystem": frozenset({"options", "mountOptions"}),
    "Raid": frozenset({"options"}), "Luks": frozenset({"options"}),
}
# Lists sharing one key space within a struct: field -> shared space name.
MERGED_KEYS: dict[str, dict[str, str]] = {
    "Storage": {"directories": "Node", "files": "Node", "links": "Node"},
    "KernelArguments": {"shouldExist": "KernelArgument", "shouldNotExist": "KernelArgument"},
}


def minor_of(version: str) -> int:
    """The minor number of a supported spec version string; KeyError if unsupported."""
    return MINOR_OF[version]


@cache
def fields(struct: str, minor: int) -> tuple[Field, ...]:
    """The fields `struct` has at spec 3.<minor>, in Go declaration order."""
    return tuple(f for f in STRUCTS[struct] if f.since <= minor < f.until)


def shape(f: Field) -> str:
    """The shape code of a field (see S ... SLIST)."""
    if f.kind == STRUCT:
        return PTR if f.nullable else OBJ
    if f.kind == LIST:
        return LIST if f.ref else SLIST
    code = {STRING: S, INT: I, BOOL: B}[f.kind]
    return code + "?" if f.nullable else code


@cache
def shaped_fields(struct: str, minor: int) -> tuple[tuple[Field, str, str], ...]:
    """`fields(struct, minor)` as (field, shape code, ref) triples."""
    return tuple((f, shape(f), f.ref) for f in fields(struct, minor))


@cache
def field_map(struct: str, minor: int) -> dict[str, Field]:
    """JSON name -> field, for the fields that exist at 3.<minor>."""
    return {f.name: f for f in fields(struct, minor)}


def zero_value(f: Field) -> Any:
    """The Go zero value of a field as the typed tree holds it (None for pointers)."""
    if f.nullable:
        return None
    return {STRING: "", INT: 0, BOOL: False}.get(f.kind)


def item_key(struct: str, item: Any) -> str:
    """Duplicate/merge key of one list item at the typed level; strings are their own key."""
    if not isinstance(item, dict):
        return str(item)
    if struct == "Partition":
        if item.get("number"):
            return f"number:{item['number']}"
        if item.get("label") is not None:
            return f"label:{item['label']}"
        return ""
    value = item.get(KEY_FIELD.get(struct, ""))
    return "" if value is None else str(value)


def typed_defaults(struct: str, minor: int) -> dict[str, Any]:
    """A typed struct with every field at its zero value (nested structs filled, lists empty)."""
    return _compiled("defaults", struct, minor)()  # type: ignore[no-any-return]


def to_typed(canonical: Any, struct: str, minor: int) -> dict[str, Any]:
    """Expand a canonical dict into the typed tree (every field present); unknown keys are dropped."""
    return _compiled("typed", struct, minor)(canonical)  # type: ignore[no-any-return]


def to_canonical(typed: dict[str, Any], struct: str, minor: int, *, root: bool = True) -> dict[str, Any]:
    """Drop nil pointers, zero non-pointer values and empty lists/objects; keep ignition.version."""
    return _compiled("canonical", struct, minor)(typed, root)  # type: ignore[no-any-return]


# The three conversions above are compiled once per (struct, minor) into straight-line Python
# (one dict display per struct, no per-field dispatch), which is several times faster than
# walking the field tables; the *_reference functions below are the table-driven definitions
# they must agree with (tests/unit/ignition/test_ignition_schema_compiled.py).
_NAMESPACE: dict[str, Any] = {}


def _fn_name(what: str, struct: str, minor: int) -> str:
    return f"_{what}_{struct}_{minor}"


def _compiled(what: str, struct: str, minor: int) -> Any:
    fn = _NAMESPACE.get(_fn_name(what, struct, minor))
    if fn is None:
        for ref in _refs(struct, minor):
            _compile(what, ref, minor)
        fn = _NAMESPACE[_fn_name(what, struct, minor)]
    return fn


def _refs(struct: str, minor: int) -> list[str]:
    """`struct` and every struct it refers to, dependencies first."""
    out: list[str] = []

    def visit(name: str) -> None:
        if name in out:
            return
        for f in fields(name, minor):
            if f.ref:
                visit(f.ref)
        out.append(name)
    visit(struct)
    return out


def _defaults_expr(struct: str, minor: int) -> str:
    items = []
    for f in fields(struct, minor):
        if f.kind == STRUCT:
            value = "None" if f.nullable else _defaults_expr(f.ref, minor)
        elif f.kind == LIST:
            value = "[]"
        else:
            value = repr(zero_value(f))
        items.append(f"{f.name!r}: {value}")
    return "{" + ", ".join(items) + "}"


def _compile(what: str, struct: str, minor: int) -> None:
    name = _fn_name(what, struct, minor)
    if name in _NAMESPACE:
        return
    if what == "defaults":
        src = f"def {name}():\n    return {_defaults_expr(struct, minor)}\n"
    elif what == "typed":
        items = []
        for f in fields(struct, minor):
            get = f"g({f.name!r})"
            if f.kind == STRUCT:
                sub = _fn_name("typed", f.ref, minor)
                value = (f"(None if (v := {get}) is None else {sub}(v))" if f.nullable
                         else f"{sub}({get})")
            elif f.kind == LIST:
                conv = f"[{_fn_name('typed', f.ref, minor)}(i) for i in v]" if f.ref else "list(v)"
                value = f"({conv} if isinstance(v := {get}, list) else [])"
            else:
                value = f"({zero_value(f)!r} if (v := {get}) is None else v)"
            items.append(f"{f.name!r}: {value}")
        src = (f"def {name}(canonical):\n"
               f"    g = (canonical if isinstance(canonical, dict) else _EMPTY).get\n"
               f"    return {{{', '.join(items)}}}\n")
    else:
        lines = [f"def {name}(typed, root):", "    out = {}", "    g = typed.get"]
        for f in fields(struct, minor):
            key = repr(f.name)
            lines.append(f"    v = g({key})")
            if f.kind == STRUCT:
                keep = "sub or root" if f.name == "ignition" else "sub"
                lines += ["    if v is not None:",
                          f"        sub = {_fn_name('canonical', f.ref, minor)}(v, False)",
                          f"        if {keep}:",
                          f"            out[{key}] = sub"]
            elif f.kind == LIST:
                conv = (f"[{_fn_name('canonical', f.ref, minor)}(i, False) for i in v]" if f.ref
                        else "list(v)")
                lines += ["    if v:", f"        out[{key}] = {conv}"]
            elif f.nullable:
                lines += ["    if v is not None:", f"        out[{key}] = v"]
            elif struct == "Ignition" and f.name == "version":
                lines += [f"    out[{key}] = v"]
            else:
                lines += [f"    if v != {zero_value(f)!r}:", f"        out[{key}] = v"]
        lines.append("    return out")
        src = "\n".join(lines) + "\n"
    exec(compile(src, f"<schema {what} {struct} 3.{minor}>", "exec"), _NAMESPACE)


_NAMESPACE["_EMPTY"] = {}


def typed_defaults_reference(struct: str, minor: int) -> dict[str, Any]:
    """A typed struct with every field at its zero value (nested structs filled, lists empty)."""
    out: dict[str, Any] = {}
    for f in fields(struct, minor):
        if f.kind == STRUCT:
            out[f.name] = None if f.nullable else typed_defaults_reference(f.ref, minor)
        elif f.kind == LIST:
            out[f.name] = []
        else:
            out[f.name] = zero_value(f)
    return out


def to_typed_reference(canonical: Any, struct: str, minor: int) -> dict[str, Any]:
    """Expand a canonical dict into the typed tree (every field present); unknown keys are dropped."""
    src = canonical if isinstance(canonical, dict) else {}
    out: dict[str, Any] = {}
    for f in fields(struct, minor):
        value = src.get(f.name)
        if f.kind == STRUCT:
            if f.nullable and value is None:
                out[f.name] = None
            else:
                out[f.name] = to_typed_reference(value, f.ref, minor)
        elif f.kind == LIST:
            items = value if isinstance(value, list) else []
            out[f.name] = [to_typed_reference(i, f.ref, minor) for i in items] if f.ref else list(items)
        else:
            out[f.name] = zero_value(f) if value is None else value
    return out


def to_canonical_reference(typed: dict[str, Any], struct: str, minor: int, *, root: bool = True) -> dict[str, Any]:
    """Drop nil pointers, zero non-pointer values and empty lists/objects; keep ignition.version."""
    out: dict[str, Any] = {}
    for f in fields(struct, minor):
        value = typed.get(f.name)
        if f.kind == STRUCT:
            if value is None:
                continue
            sub = to_canonical_reference(value, f.ref, minor, root=False)
            if sub or (root and f.name == "ignition"):
                out[f.name] = sub
        elif f.kind == LIST:
            if value:
                out[f.name] = [to_canonical_reference(i, f.ref, minor, root=False) for i in value] if f.ref else list(value)
        elif f.nullable:
            if value is not None:
                out[f.name] = value
        elif value != zero_value(f) or (struct == "Ignition" and f.name == "version"):
            out[f.name] = value
    return out
