"""Validation of a typed spec 3.x config: semantic rules (pre-order walk, Go field order), then
duplicate entries, then unused keys, with positions correlated to the raw JSON like coreos/vcontext.

`validate_config` runs the semantic and duplicate passes on an already canonical dict.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from machineconfig.ignition import schema
from machineconfig.ignition.decode import JNode, line_col
from machineconfig.ignition.report import ERROR, WARNING, PathElem, Report, ReportEntry, path_string
from machineconfig.ignition.findings import Finding, Sink
from machineconfig.ignition.rules import ELEMENT_RULES, RULES
from machineconfig.ignition.schema import LIST, STRUCT

ERR_DUPLICATE = "duplicate entry defined"


@dataclass(frozen=True)
class _Plan:
    """What the passes need of one struct at one minor version, computed once."""

    rule: Any  # RULES entry or None
    element_rules: tuple[tuple[str, Any], ...]  # (field, rule) in field order
    dup_lists: tuple[tuple[str, str, str], ...]  # (field, key space, ref) of checked lists
    children: tuple[tuple[str, bool, str], ...]  # (field, is list, ref) walked into
    names: dict[str, Any]


@cache
def _clean_default(struct: str, minor: int) -> tuple[dict[str, Any], tuple[tuple[tuple[str, ...], type], ...]] | None:
    """The struct's typed zero value when walking it finds nothing (the rules only use their path
    to name findings, so then it finds nothing anywhere), with the paths of its int and bool
    leaves and their types; None when the walk finds something."""
    defaults = schema.typed_defaults(struct, minor)
    passes = _Passes(minor, True, True, False)
    passes.walk(defaults, struct, (), None)
    assert passes.sink is not None and passes.duplicates is not None
    if passes.sink.findings or passes.duplicates:
        return None
    leaves: list[tuple[tuple[str, ...], type]] = []

    def collect(obj: dict[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in obj.items():
            if isinstance(value, dict):
                collect(value, prefix + (key,))
            elif type(value) in (int, bool):
                leaves.append((prefix + (key,), type(value)))
    collect(defaults, ())
    return defaults, tuple(leaves)


def _is_zero(value: Any, struct: str, minor: int) -> bool:
    """`value` is exactly the clean zero value of `struct`: equal, and its int/bool leaves of the
    same type (== alone takes False for 0 and 0.0 for 0, which rules may tell apart)."""
    clean = _clean_default(struct, minor)
    if clean is None or value != clean[0]:
        return False
    for keys, kind in clean[1]:
        leaf = value
        for key in keys:
            leaf = leaf[key]
        if type(leaf) is not kind:
            return False
    return True


@cache
def _plan(struct: str, minor: int) -> _Plan:
    ignored = schema.IGNORE_DUPS.get(struct, frozenset())
    merged = schema.MERGED_KEYS.get(struct, {})
    fields = schema.fields(struct, minor)
    return _Plan(
        RULES.get(struct),
        tuple((f.name, ELEMENT_RULES[(struct, f.name)]) for f in fields
              if (struct, f.name) in ELEMENT_RULES),
        tuple((f.name, merged.get(f.name, f.name), f.ref) for f in fields
              if f.kind == LIST and f.name not in ignored),
        tuple((f.name, f.kind == LIST, f.ref) for f in fields
              if f.kind == STRUCT or (f.kind == LIST and f.ref)),
        schema.field_map(struct, minor))


class _Passes:
    """The semantic, duplicate and unused-key passes in one pre-order walk (every struct value, nil
    pointers skipped, fields in Go declaration order). Each pass keeps its own list, so the
    findings are exactly those of three separate walks, concatenated."""

    def __init__(self, minor: int, semantic: bool, duplicates: bool, unused: bool) -> None:
        self.minor = minor
        self.sink = Sink(minor) if semantic else None
        self.duplicates: list[Finding] | None = [] if duplicates else None
        self.unused: list[Finding] | None = [] if unused else None
        self.plans: dict[str, _Plan] = {}

    def walk(self, typed: dict[str, Any], struct: str, path: tuple[PathElem, ...],
             node: JNode | None) -> None:
        plans = self.plans
        plan = plans.get(struct)
        if plan is None:
            plan = plans[struct] = _plan(struct, self.minor)
        sink = self.sink
        if sink is not None:
            if plan.rule is not None:
                plan.rule(sink, typed, path)
            # Named string element types with their own checks run as children, after the rule.
            for name, element_rule in plan.element_rules:
                for i, item in enumerate(typed.get(name) or []):
                    element_rule(sink, item, path + (name, i))
        dups = self.duplicates
        if dups is not None and plan.dup_lists:
            spaces: dict[str, set[str]] = {}
            for name, space, ref in plan.dup_lists:
                items = typed.get(name)
                if not items:
                    continue
                seen = spaces.setdefault(space, set())
                for i, item in enumerate(items):
                    key = schema.item_key(ref, item) if ref else str(item)
                    if key in seen:
                        dups.append(Finding(ERROR, path + (name, i), ERR_DUPLICATE))
                    seen.add(key)
        unused = self.unused
        is_object = node is not None and node.kind == "object"
        # JSON members by key, the last duplicate winning (JNode.child), to find each field's node.
        members: dict[str, JNode] = ({m.key: m.node for m in node.members}  # type: ignore[union-attr]
                                     if is_object else {})
        if unused is not None and node is not None:  # not every struct has JSON behind it
            if not is_object:
                unused.append(Finding(WARNING, path, (
                    f"context tree does not match content tree at {path_string(path)}. Line and "
                    "column reporting may be inconsistent. Unused keys may not be reported")))
            elif not members.keys() <= plan.names.keys():
                names = plan.names
                reported: set[str] = set()
                for member in node.members:  # each unknown key once, at its first occurrence
                    key = member.key
                    if key not in names and key not in reported:
                        reported.add(key)
                        unused.append(Finding(WARNING, path + (key,), f"unused key {key}", at_key=True))
        minor = self.minor
        for name, is_list, ref in plan.children:
            value = typed.get(name)
            # The JSON node at path + (name,), as _tree_get would find it.
            sub = members.get(name)
            if not is_list:
                if value is not None:
                    if sub is None:
                        # A zero struct with no JSON behind it finds nothing if its zero value
                        # does not: skip the walk (most optional structs are absent).
                        if _is_zero(value, ref, minor):
                            continue
                    self.walk(value, ref, path + (name,), sub)
                continue
            if not value:
                continue
            items = sub.items if sub is not None and sub.kind == "array" else []
            n = len(items)
            for i, item in enumerate(value):
                self.walk(item, ref, path + (name, i), items[i] if i < n else None)


def semantic_findings(typed: dict[str, Any], minor: int) -> list[Finding]:
    passes = _Passes(minor, True, False, False)
    passes.walk(typed, schema.ROOT, (), None)
    assert passes.sink is not None
    return passes.sink.findings


def duplicate_findings(typed: dict[str, Any], minor: int) -> list[Finding]:
    passes = _Passes(minor, False, True, False)
    passes.walk(typed, schema.ROOT, (), None)
    assert passes.duplicates is not None
    return passes.duplicates


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
    passes = _Passes(minor, False, False, True)
    passes.walk(typed, schema.ROOT, (), root)
    assert passes.unused is not None
    return passes.unused


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
    return correlate(typed_findings(typed, minor, root), root, raw)


def typed_findings(typed: dict[str, Any], minor: int, root: JNode | None = None) -> list[Finding]:
    """validate_typed's findings before they are placed in the raw text (only the shape of the
    JSON tree matters here, not its positions)."""
    passes = _Passes(minor, True, True, root is not None)
    passes.walk(typed, schema.ROOT, (), root)
    assert passes.sink is not None and passes.duplicates is not None
    return passes.sink.findings + passes.duplicates + (passes.unused or [])


def validate_config(config: dict[str, Any], version: str) -> Report:
    """Semantic and duplicate checks of a canonical config at spec `version` (no positions)."""
    minor = schema.minor_of(version)
    return validate_typed(schema.to_typed(config, schema.ROOT, minor), minor)
