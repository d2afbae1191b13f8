"""Line and column of every JSON path in a YAML/JSON file, for validation reports.

machineconfig.yamlload keeps only lines; a report also wants the column, and for Ignition paths
the key lookup Go's decoder does (exact name first, else case-insensitive, last match wins).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Union

import yaml

from machineconfig.ignition.decode import JNode, JSONSyntaxError, parse_json
from machineconfig.yamlload import BaseLoader, Document, json_stream, key_text

Path = tuple[Union[str, int], ...]

@dataclass
class PNode:
    """A value's position: where its key (or list item) starts, 1-based, column in characters."""

    line: int
    col: int
    members: list[tuple[str, PNode]] = field(default_factory=list)
    items: list[PNode] = field(default_factory=list)

    def child(self, step: str | int) -> PNode | None:
        if isinstance(step, int):
            return self.items[step] if 0 <= step < len(self.items) else None
        exact = [node for key, node in self.members if key == step]
        if exact:
            return exact[-1]
        folded = [node for key, node in self.members if key.lower() == step.lower()]
        return folded[-1] if folded else None


@dataclass
class PositionIndex:
    """The positions of one document (`root` None when they could not be computed)."""

    root: PNode | None = None

    def position(self, path: Path) -> tuple[int | None, int | None]:
        """Position of `path`, or of its nearest ancestor present in the document."""
        node = self.root
        if node is None:
            return None, None
        for step in path:
            child = node.child(step)
            if child is None:
                break
            node = child
        return node.line, node.col


def index_documents(text: str, docs: list[Document]) -> list[PositionIndex]:
    """One index per document `yamlload.load_text(text)` returned, in the same order."""
    if text.lstrip().startswith(("{", "[")):
        indexes = _json_indexes(text)
    else:
        indexes = _yaml_indexes(text)
    if len(indexes) != len(docs):  # should not happen; lines from yamlload still work
        return [PositionIndex() for _ in docs]
    return indexes


def _yaml_indexes(text: str) -> list[PositionIndex]:
    loader = BaseLoader(text)
    out: list[PositionIndex] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            # yamlload drops empty documents and ones whose value is null: so do we.
            if node is None or (isinstance(node, yaml.ScalarNode)
                                and node.tag == "tag:yaml.org,2002:null"):
                continue
            out.append(PositionIndex(_from_yaml(loader, node, node.start_mark)))
    except (yaml.YAMLError, RecursionError):  # yamlload accepted it: lines will do
        return []
    finally:
        loader.dispose()
    return out


def _from_yaml(loader: yaml.SafeLoader, node: yaml.Node, mark: yaml.Mark) -> PNode:
    out = PNode(mark.line + 1, mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # merge keys (<<), as yamlload does
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            out.members.append((key_text(key), _from_yaml(loader, value_node, key_node.start_mark)))
    elif isinstance(node, yaml.SequenceNode):
        out.items = [_from_yaml(loader, item, item.start_mark) for item in node.value]
    return out


def _json_indexes(text: str) -> list[PositionIndex]:
    """JSON documents one after the other, positioned by Ignition's exact JSON parser."""
    data = text.encode("utf-8")
    out: list[PositionIndex] = []
    try:
        for pos, end, _ in json_stream(text):
            start_b = len(text[:pos].encode("utf-8"))
            end_b = start_b + len(text[pos:end].encode("utf-8"))
            try:
                root = parse_json(data[start_b:end_b])
            except (JSONSyntaxError, RecursionError):
                out.append(PositionIndex())
            else:
                out.append(PositionIndex(_from_json(root, data, start_b, _opening(root))))
    except json.JSONDecodeError:
        pass  # the index ends where the JSON does (yamlload reports the error)
    return out


def _from_json(node: JNode, data: bytes, base: int, at: int) -> PNode:
    line, col = _line_col(data, base + at)
    out = PNode(line, col)
    for member in node.members:
        out.members.append((member.key, _from_json(member.node, data, base, member.key_start)))
    out.items = [_from_json(item, data, base, _opening(item)) for item in node.items]
    return out


def _opening(node: JNode) -> int:
    # Ignition's nodes of objects and arrays start after the bracket; a person looks at it.
    return node.start - 1 if node.kind in ("object", "array") else node.start


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    line_start = data.rfind(b"\n", 0, offset) + 1
    col = len(data[line_start:offset].decode("utf-8", "replace")) + 1
    return data.count(b"\n", 0, offset) + 1, col


def node_path_at(raw: bytes, offset: int) -> Path:
    """Path of the deepest JSON value of `raw` that ends at or contains `offset`.

    Go's decoder reports a type mismatch at the end of the offending value, so the value
    found is the one a person has to fix.
    """
    try:
        node = parse_json(raw)
    except (JSONSyntaxError, RecursionError):
        return ()
    path: list[str | int] = []
    while True:
        for key_or_index, child in _children(node):
            if child.start <= offset <= child.end and child.start < offset:
                path.append(key_or_index)
                node = child
                break
        else:
            return tuple(path)


def _children(node: JNode) -> list[tuple[str | int, JNode]]:
    if node.kind == "object":
        return [(m.key, m.node) for m in node.members]
    if node.kind == "array":
        return list(enumerate(node.items))
    return []
