"""Validation of a typed spec 3.x config: semantic rules (pre-order walk, Go field order), then
duplicate entries, then unused keys, with positions correlated to the raw JSON like coreos/vcontext.

`validate_config` runs the semantic and duplicate passes on an already canonical dict.
"""
from __future__ import annotations

from typing import Any

from machineconfig.ignition import schema
from machineconfig.ignition.decode import JNode, line_col
from machineconfig.ignition.report import ERROR, WARNING, PathElem, Report, ReportEntry, path_string
from machineconfig.ignition.findings import Finding, Sink
from machineconfig.ignition.rules import ELEMENT_RULES, RULES
from machineconfig.ignition.schema import LIST, STRUCT

ERR_DUPLICATE = "duplicate entry defined"


def _walk(typed: dict[str, Any], struct: str, path: tuple[PathElem, ...], minor: int,
          visit: Any) -> None:
    """Pre-order over every struct value (nil pointers skipped), fields in Go declaration order."""
    visit(typed, struct, path)
    for f in schema.fields(struct, minor):
        value = typed.get(f.name)
        if f.kind == STRUCT and value is not None:
            _walk(value, f.ref, path + (f.name,), minor, visit)
        elif f.kind == LIST and f.ref:
            for i, item in enumerate(value or []):
                _walk(item, f.ref, path + (f.name, i), minor, visit)


def semantic_findings(typed: dict[str, Any], minor: int) -> list[Finding]:
    sink = Sink(minor)

    def visit(obj: dict[str, Any], struct: str, path: tuple[PathElem, ...]) -> None:
        rule = RULES.get(struct)
        if rule is not None:
            rule(sink, obj, path)
        # Named string element types with their own checks run as children, after the struct's rule.
        for f in schema.fields(struct, minor):
            element_rule = ELEMENT_RULES.get((struct, f.name))
            if element_rule is not None:
                for i, item in enumerate(obj.get(f.name) or []):
                    element_rule(sink, item, path + (f.name, i))

    _walk(typed, schema.ROOT, (), minor, visit)
    return sink.findings


def duplicate_findings(typed: dict[str, Any], minor: int) -> list[Finding]:
    out: list[Finding] = []

    def visit(obj: dict[str, Any], struct: str, path: tuple[PathElem, ...]) -> None:
        spaces: dict[str, set[str]] = {}
        ignored = schema.IGNORE_DUPS.get(struct, frozenset())
        merged = schema.MERGED_KEYS.get(struct, {})
        for f in schema.fields(struct, minor):
            if f.kind != LIST or f.name in ignored:
                continue
            seen = spaces.setdefault(merged.get(f.name, f.name), set())
            for i, item in enumerate(obj.get(f.name) or []):
                key = schema.item_key(f.ref, item) if f.ref else str(item)
                if key in seen:
                    out.append(Finding(ERROR, path + (f.name, i), ERR_DUPLICATE))
                seen.add(key)

    _walk(typed, schema.ROOT, (), minor, visit)
    return out


def _tree_get(root: JNode, path: tuple[PathElem, ...]) -> JNode | None:
    node: JNode | None = root
    for elem in path:
        if node is None:
            return None
        if isinstance(elem, int):
            node = node.items[elem] if node.kind == "array" and elem < len(node.items) else None
        else:
            node = node.child(elem) if node.kind == "object" else None
    return node


def unused_key_findings(typed: dict[str, Any], minor: int, root: JNode) -> list[Finding]:
    out: list[Finding] = []

    def visit(obj: dict[str, Any], struct: str, path: tuple[PathElem, ...]) -> None:
        node = _tree_get(root, path)
        if node is None:
            return  # not every struct has JSON behind it
        if node.kind != "object":
            out.append(Finding(WARNING, path, (
                f"context tree does not match content tree at {path_string(path)}. Line and column "
                "reporting may be inconsistent. Unused keys may not be reported")))
            return
        names = schema.field_map(struct, minor)
        for key in node.unique_keys():
            if key not in names:
                out.append(Finding(WARNING, path + (key,), f"unused key {key}", at_key=True))

    _walk(typed, schema.ROOT, (), minor, visit)
    return out


def _marker(root: JNode, finding: Finding) -> int:
    """Index of the deepest JSON node on the finding's path (vcontext getDeepestNode)."""
    path = finding.path
    if finding.at_key:
        parent = _tree_get(root, path[:-1])
        if parent is not None and parent.kind == "object":
            start = parent.key_start(str(path[-1]))
            if start is not None:
                return start
        path = path[:-1]
    while True:
        node = _tree_get(root, path)
        if node is not None:
            return node.start
        path = path[:-1]


def correlate(findings: list[Finding], root: JNode | None, raw: bytes | None) -> Report:
    entries = []
    for f in findings:
        if root is None or raw is None:
            entries.append(ReportEntry(f.kind, f.path, None, None, f.message))
        else:
            line, col = line_col(raw, _marker(root, f))
            entries.append(ReportEntry(f.kind, f.path, line, col, f.message))
    return Report(entries)


def validate_typed(typed: dict[str, Any], minor: int, root: JNode | None = None,
                   raw: bytes | None = None) -> Report:
    """All passes on a typed tree; unused keys only when the JSON tree is known."""
    findings = semantic_findings(typed, minor) + duplicate_findings(typed, minor)
    if root is not None:
        findings += unused_key_findings(typed, minor, root)
    return correlate(findings, root, raw)


def validate_config(config: dict[str, Any], version: str) -> Report:
    """Semantic and duplicate checks of a canonical config at spec `version` (no positions)."""
    minor = schema.minor_of(version)
    return validate_typed(schema.to_typed(config, schema.ROOT, minor), minor)
