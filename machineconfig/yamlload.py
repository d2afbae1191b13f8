"""Load YAML or JSON documents and remember the line of every field.

Built on PyYAML's compose API so that a schema error can name the file, the line and the JSON
path (`$.spec.config.storage.files.3.path`) a person has to fix.
"""
from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from machineconfig.errors import InputError

log = logging.getLogger(__name__)

try:  # the C loader is much faster on large inputs; both give the same nodes and marks
    BaseLoader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    BaseLoader = yaml.SafeLoader


@dataclass
class Document:
    """One YAML/JSON document: its data and the 1-based line of each JSON path in it."""

    data: Any
    file: str
    lines: dict[str, int] = field(default_factory=dict)

    def line_of(self, path: str) -> int | None:
        """Line of `path`, or of its nearest ancestor that has one."""
        while True:
            if path in self.lines:
                return self.lines[path]
            if "." not in path:
                return None
            path = path.rsplit(".", 1)[0]


def join_path(parent: str, key: str | int) -> str:
    return f"{parent}.{key}"


def _scalar(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    value = loader.construct_object(node, deep=True)
    # What Kubernetes' YAML-to-JSON step would store: timestamps become strings.
    if isinstance(value, (datetime.date, datetime.datetime)):
        return str(node.value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def key_text(value: Any) -> str:
    """The text of a non-string mapping key (`true:` is the key "true", as in Kubernetes)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    return str(value)


def _build(loader: yaml.SafeLoader, node: yaml.Node, path: str, lines: dict[str, int],
           file: str) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # merge keys (<<)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise InputError("mapping keys must be scalars", file=file, path=path,
                                 line=key_node.start_mark.line + 1)
            key = key_text(_scalar(loader, key_node))
            child = join_path(path, key)
            if key in out:
                raise InputError(f"duplicate key {key!r}", file=file, path=child,
                                 line=key_node.start_mark.line + 1)
            out[key] = _build(loader, value_node, child, lines, file)
            lines[child] = key_node.start_mark.line + 1  # point at the key, not its value
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, join_path(path, i), lines, file)
                for i, item in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    return _scalar(loader, node)


def load_text(text: str, file: str) -> list[Document]:
    """Every non-empty document in `text` (YAML, or JSON which is parsed as JSON)."""
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        return _load_json_stream(text, file)
    docs: list[Document] = []
    loader = BaseLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines: dict[str, int] = {}
            data = _build(loader, node, "$", lines, file)
            if data is not None:
                docs.append(Document(data, file, lines))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "invalid YAML"
        raise InputError(f"invalid YAML: {problem}", file=file,
                         line=mark.line + 1 if mark else None) from e
    except yaml.YAMLError as e:
        raise InputError(f"invalid YAML: {e}", file=file) from e
    finally:
        loader.dispose()
    return docs


def _load_json_stream(text: str, file: str) -> list[Document]:
    """One or more JSON documents one after the other (JSON lines included)."""
    docs: list[Document] = []
    try:
        for start, end, data in json_stream(text):
            first_line = text.count("\n", 0, start)
            docs.append(_load_json("\n" * first_line + text[start:end], data, file))
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON: {e.msg} (column {e.colno})", file=file,
                         line=e.lineno) from e
    return docs


def json_stream(text: str) -> Iterator[tuple[int, int, Any]]:
    """(start, end, value) of each JSON document in `text`, one after the other; raises
    json.JSONDecodeError at the first that does not parse."""
    decoder = json.JSONDecoder()
    pos = 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos >= len(text):
            return
        start = pos
        data, pos = decoder.raw_decode(text, pos)
        yield start, pos, data


def _load_json(text: str, data: Any, file: str) -> Document:
    lines: dict[str, int] = {}
    try:  # JSON is YAML: compose it only for the line numbers, best effort
        loader = BaseLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                _build(loader, node, "$", lines, file)
        finally:
            loader.dispose()
    except (yaml.YAMLError, InputError):
        lines = {}
    return Document(data, file, lines)


def load_file(path: str) -> list[Document]:
    """All documents of one file; a read or decode error names the file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text: {e.reason}", file=path) from e
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", file=path) from e
    return load_text(text, path)
