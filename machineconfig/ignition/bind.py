"""Binding a parsed JSON tree onto the typed Ignition structs the way Go's json.Unmarshal does:
case-insensitive member names, last duplicate wins (merging into structs), null leaves non-pointer
values alone, and the first type mismatch becomes `json: cannot unmarshal ...` at Go's byte offset.
"""
from __future__ import annotations

from typing import Any

from machineconfig.errors import MachineConfigError
from machineconfig.ignition import schema
from machineconfig.ignition.decode import JNode
from machineconfig.ignition.schema import BOOL, INT, LIST, STRING, STRUCT, Field

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
_KIND_WORD = {"string": "string", "number": "number", "true": "bool", "false": "bool",
              "array": "array", "object": "object", "null": "null"}


class JSONTypeError(MachineConfigError):
    """The first type mismatch; `offset` indexes the raw text like Go's UnmarshalTypeError.Offset."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


def fold_equal(a: str, b: str) -> bool:
    """Unicode simple case folding equality, as Go matches JSON names to struct fields."""
    if len(a) != len(b):
        return False
    return all(x == y or x.lower() == y.lower() or x.upper() == y.upper() for x, y in zip(a, b))


def _pointer_token(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _type_error(node: JNode, root_name: str, ptr: list[str], go_type: str, *, value: str = "",
                whole: bool = True) -> JSONTypeError:
    """`whole`: the Go decoder consumed the whole value (string/int targets) before failing;
    otherwise it failed after the first token (struct, slice and bool targets)."""
    word = value or _KIND_WORD[node.kind]
    offset = node.end if whole or node.kind not in ("object", "array") else node.start
    if ptr:
        where = f"Go struct field {root_name}.{'.'.join(ptr)}"
    else:
        where = "Go value"
    return JSONTypeError(f"json: cannot unmarshal {word} into {where} of type {go_type}", offset)


def find_field(fields: tuple[Field, ...], key: str) -> Field | None:
    """Exact JSON name first, then the first case-insensitive match in Go field order."""
    for f in fields:
        if f.name == key:
            return f
    for f in fields:
        if fold_equal(f.name, key):
            return f
    return None


class Binder:
    """Binds at one spec minor; `root_name` prefixes field paths in errors (Go's root type name)."""

    def __init__(self, minor: int, root_name: str = schema.ROOT) -> None:
        self.minor = minor
        self.root_name = root_name

    def bind_root(self, node: JNode) -> dict[str, Any]:
        typed = schema.typed_defaults(schema.ROOT, self.minor)
        self.bind_struct(node, typed, schema.ROOT, [], "types.Config")
        return typed

    def bind_struct(self, node: JNode, target: dict[str, Any], struct: str, ptr: list[str], go_type: str) -> None:
        if node.kind == "null":
            return
        if node.kind != "object":
            raise _type_error(node, self.root_name, ptr, go_type, whole=False)
        fields = schema.fields(struct, self.minor)
        by_name = schema.field_map(struct, self.minor)
        for member in node.members:
            # find_field, with its exact-name step as one dict lookup
            f = by_name.get(member.key) or find_field(fields, member.key)
            if f is not None:
                self.bind_field(member.node, target, f, ptr + [_pointer_token(member.key)])

    def bind_field(self, node: JNode, target: dict[str, Any], f: Field, ptr: list[str]) -> None:
        if node.kind == "null":
            if f.nullable:
                target[f.name] = None
            elif f.kind == LIST:
                target[f.name] = []
            return
        if f.kind == STRUCT:
            if target.get(f.name) is None:
                target[f.name] = schema.typed_defaults(f.ref, self.minor)
            self.bind_struct(node, target[f.name], f.ref, ptr, f.go_type_name())
        elif f.kind == LIST:
            target[f.name] = self.bind_list(node, target.get(f.name) or [], f, ptr)
        else:
            target[f.name] = self.scalar(node, f.kind, ptr, f.go_type_name())

    def bind_list(self, node: JNode, existing: list[Any], f: Field, ptr: list[str]) -> list[Any]:
        if node.kind != "array":
            raise _type_error(node, self.root_name, ptr, f.go_type_name(), whole=False)
        out: list[Any] = []
        for i, item in enumerate(node.items):
            # Go decodes into the existing element when a duplicate key re-fills a slice.
            if f.ref:
                elem = existing[i] if i < len(existing) else schema.typed_defaults(f.ref, self.minor)
                self.bind_struct(item, elem, f.ref, ptr + [str(i)], f.elem_go_type_name())
            else:
                elem = existing[i] if i < len(existing) else ""
                if item.kind != "null":
                    elem = self.scalar(item, STRING, ptr + [str(i)], f.elem_go_type_name())
            out.append(elem)
        return out

    def scalar(self, node: JNode, kind: str, ptr: list[str], go_type: str) -> Any:
        if kind == STRING:
            if node.kind != "string":
                raise _type_error(node, self.root_name, ptr, go_type)
            return node.value
        if kind == BOOL:
            if node.kind not in ("true", "false"):
                raise _type_error(node, self.root_name, ptr, go_type, whole=False)
            return node.kind == "true"
        assert kind == INT
        if node.kind != "number":
            raise _type_error(node, self.root_name, ptr, go_type)
        text = str(node.value)  # the literal text of the number
        # Length first: int() of thousands of digits raises instead of answering "too large".
        if any(c in text for c in ".eE") or len(text.lstrip("-")) > 19 \
                or not INT64_MIN <= int(text) <= INT64_MAX:
            raise _type_error(node, self.root_name, ptr, go_type, value=f"number {text}")
        return int(text)


def bind_version_stub(node: JNode) -> str:
    """Decode `{Ignition:{Version string}}` (Go's untagged util.versionStub); return the version."""
    version = ""
    if node.kind == "null":
        return version
    if node.kind != "object":
        raise _type_error(node, "", [], "util.versionStub", whole=False)
    for member in node.members:
        if not fold_equal("Ignition", member.key):
            continue
        ign = member.node
        ptr = [_pointer_token(member.key)]
        if ign.kind == "null":
            continue
        if ign.kind != "object":
            raise _type_error(ign, "versionStub", ptr, "struct { Version string }", whole=False)
        for inner in ign.members:
            if not fold_equal("Version", inner.key) or inner.node.kind == "null":
                continue
            if inner.node.kind != "string":
                raise _type_error(inner.node, "versionStub", ptr + [_pointer_token(inner.key)], "string")
            version = str(inner.node.value)
    return version
