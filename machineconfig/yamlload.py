"""Load YAML or JSON documents and remember the position (line and column) of every field.

Built on PyYAML's compose API (YAML) and Ignition's positioned JSON parser (JSON) so that an
error can name the file, the line, the column and the JSON path
(`$.spec.config.storage.files.3.path`) a person has to fix. Input files are not trusted:
size, nesting depth, alias expansion and integers are bounded before anything is built.
"""
from __future__ import annotations

import bisect
import datetime
import json
import logging
import os
import re
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Union

import yaml

from machineconfig.errors import InputError
from machineconfig.ignition.decode import JNode, JSONSyntaxError, parse_json

log = logging.getLogger(__name__)

# Bounds on one input file. Kubernetes keeps an object under 1.5 MB (etcd's request limit); a
# MachineConfig nests about 10 levels deep; these leave room for anything real and stop bombs.
MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 100  # levels of mappings/sequences, aliases expanded
MAX_NODES = 200_000  # YAML nodes per file (all its documents) once aliases are expanded
# Go's decoders hold integers in 64 bits; a longer one is no configuration value.
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1
LONGEST_INT = sys.get_int_max_str_digits() or 4300  # what int() converts at all

try:  # the C loader is much faster on large inputs; both give the same nodes and marks
    BaseLoader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    BaseLoader = yaml.SafeLoader


Path = tuple[Union[str, int], ...]  # a field as its keys and list indexes from the document's root


@dataclass
class Position:
    """Where a value starts: at its key for a mapping member, at itself for a list item or a
    document; 1-based line, column in characters."""

    line: int
    col: int
    members: list[tuple[str, Position]] = field(default_factory=list)
    items: list[Position] = field(default_factory=list)

    def child(self, step: str | int) -> Position | None:
        """The item or member at `step`: the member of exactly that key, else one whose key
        differs only in case (Go's JSON decoder matches Ignition's fields so); the last wins."""
        if isinstance(step, int):
            return self.items[step] if 0 <= step < len(self.items) else None
        exact = [pos for key, pos in self.members if key == step]
        if exact:
            return exact[-1]
        folded = [pos for key, pos in self.members if key.lower() == step.lower()]
        return folded[-1] if folded else None


@dataclass
class Document:
    """One YAML/JSON document: its data and the position of each value in it (`root` None when
    the positions are unknown)."""

    data: Any
    file: str
    root: Position | None = None

    def position(self, path: Path) -> tuple[int | None, int | None]:
        """Line and column of `path`, or of its nearest ancestor present in the document."""
        node = self.root
        if node is None:
            return None, None
        for step in path:
            child = node.child(step)
            if child is None:
                break
            node = child
        return node.line, node.col

    def line_of(self, path: str) -> int | None:
        """Line of the dotted `path`, or of its nearest ancestor that has one."""
        while True:
            if path in self._lines:
                return self._lines[path]
            if "." not in path:
                return None
            path = path.rsplit(".", 1)[0]

    @cached_property
    def _lines(self) -> dict[str, int]:
        """The line of every dotted path, as errors name fields (`$.spec.config.storage`)."""
        lines: dict[str, int] = {}
        stack = [("$", self.root)] if self.root is not None else []
        while stack:
            path, pos = stack.pop()
            lines[path] = pos.line
            stack.extend(reversed([(join_path(path, i), item) for i, item in enumerate(pos.items)]))
            stack.extend(reversed([(join_path(path, key), member) for key, member in pos.members]))
        return lines


def join_path(parent: str, key: str | int) -> str:
    return f"{parent}.{key}"


def _scalar(loader: yaml.SafeLoader, node: yaml.ScalarNode, file: str = "",
            path: str = "$") -> Any:
    try:
        value = loader.construct_object(node, deep=True)
    except (ValueError, OverflowError) as e:  # an integer beyond Python's conversion limit
        raise InputError(f"invalid number: {_number_problem(e)}", file=file, path=path,
                         line=node.start_mark.line + 1) from None
    # What Kubernetes' YAML-to-JSON step would store: timestamps become strings.
    if isinstance(value, (datetime.date, datetime.datetime)):
        return str(node.value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str) and _SURROGATE.search(value):
        return fix_surrogates(value)
    if isinstance(value, int) and not isinstance(value, bool) and not INT_MIN <= value <= INT_MAX:
        raise InputError("integer out of range (more than 64 bits)", file=file, path=path,
                         line=node.start_mark.line + 1)
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def fix_surrogates(text: str) -> str:
    """A `\\ud83d\\ude00` pair becomes its character and a lone surrogate U+FFFD, as Go's
    decoders do: a lone one is no text at all (it cannot be written as UTF-8)."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _fix_strings(value: Any) -> Any:
    if isinstance(value, str):
        return fix_surrogates(value) if _SURROGATE.search(value) else value
    if isinstance(value, list):
        return [_fix_strings(v) for v in value]
    if isinstance(value, dict):
        return {_fix_strings(k): _fix_strings(v) for k, v in value.items()}
    return value


def _number_problem(e: Exception) -> str:
    if "digits" in str(e):
        return f"integer of more than {LONGEST_INT} digits"
    return _one_line(str(e))[:80]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def key_text(value: Any) -> str:
    """The text of a non-string mapping key (`true:` is the key "true", as in Kubernetes)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    return str(value)


def _position(mark: yaml.Mark) -> Position:
    return Position(mark.line + 1, mark.column + 1)


def _build(loader: yaml.SafeLoader, node: yaml.Node, path: str, pos: Position,
           file: str) -> Any:
    """The value of `node`, its members' and items' positions added to `pos`."""
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # merge keys (<<)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise InputError("mapping keys must be scalars", file=file, path=path,
                                 line=key_node.start_mark.line + 1)
            key = key_text(_scalar(loader, key_node, file, path))
            child = join_path(path, key)
            if key in out:
                raise InputError(f"duplicate key {key!r}", file=file, path=child,
                                 line=key_node.start_mark.line + 1)
            member = _position(key_node.start_mark)  # point at the key, not its value
            out[key] = _build(loader, value_node, child, member, file)
            pos.members.append((key, member))
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item_node in enumerate(node.value):
            item = _position(item_node.start_mark)
            items.append(_build(loader, item_node, join_path(path, i), item, file))
            pos.items.append(item)
        return items
    assert isinstance(node, yaml.ScalarNode)
    return _scalar(loader, node, file, path)


def _children(node: yaml.Node) -> list[tuple[str | int, yaml.Node]]:
    if isinstance(node, yaml.MappingNode):
        out: list[tuple[str | int, yaml.Node]] = []
        for k, v in node.value:
            out.append(("", k))
            out.append((str(k.value) if isinstance(k, yaml.ScalarNode) else "", v))
        return out
    if isinstance(node, yaml.SequenceNode):
        return list(enumerate(node.value))
    return []


def check_node(root: yaml.Node, file: str, budget: int = MAX_NODES) -> int:
    """Refuse a composed document that is too deep, expands to more than `budget` nodes or
    refers to itself, before anything is built from it; returns its expanded node count.

    Aliases share one node in the composed graph, so this walk (iterative, each node measured
    once) costs the size of the text, while building would cost the expanded size.
    """
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, height)
    open_nodes: set[int] = set()  # on the current path: met again means a recursive alias
    stack: list[tuple[yaml.Node, int, str, bool]] = [(root, 1, "$", False)]
    while stack:
        node, depth, path, done = stack.pop()
        key = id(node)
        line = node.start_mark.line + 1
        if done:
            size, height = 1, 0
            for _, child in _children(node):
                child_size, child_height = measured[id(child)]
                size += child_size
                height = max(height, child_height)
            open_nodes.discard(key)
            if size > budget:
                raise InputError(f"document expands to more than {MAX_NODES} nodes (aliases)",
                                 file=file, path=path, line=line)
            measured[key] = (size, height + 1)
            continue
        known = measured.get(key)
        if known is not None:
            if depth + known[1] - 1 > MAX_DEPTH:
                raise InputError(f"nested deeper than {MAX_DEPTH} levels", file=file,
                                 path=path, line=line)
            continue
        if key in open_nodes:
            raise InputError("recursive alias", file=file, path=path, line=line)
        if depth > MAX_DEPTH:
            raise InputError(f"nested deeper than {MAX_DEPTH} levels", file=file, path=path,
                             line=line)
        open_nodes.add(key)
        stack.append((node, depth, path, True))
        for name, child in _children(node):
            stack.append((child, depth + 1, join_path(path, name) if name != "" else path,
                          False))
    return measured[id(root)][0]


def check_data(data: Any, file: str) -> None:
    """The same bounds on a value parsed from JSON (no aliases there: depth and integers)."""
    stack: list[tuple[Any, int, str]] = [(data, 1, "$")]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, dict):
            items: Any = value.items()
        elif isinstance(value, list):
            items = enumerate(value)
        else:
            if isinstance(value, int) and not isinstance(value, bool) \
                    and not INT_MIN <= value <= INT_MAX:
                raise InputError("integer out of range (more than 64 bits)", file=file,
                                 path=path)
            continue
        if depth > MAX_DEPTH:
            raise InputError(f"nested deeper than {MAX_DEPTH} levels", file=file, path=path)
        for k, v in items:
            stack.append((v, depth + 1, join_path(path, k)))


def load_text(text: str, file: str) -> list[Document]:
    """Every non-empty document in `text` (YAML, or JSON which is parsed as JSON)."""
    if len(text) > MAX_FILE_BYTES:
        raise InputError(f"larger than {MAX_FILE_BYTES} bytes", file=file)
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        return _load_json_stream(text, file)
    docs: list[Document] = []
    budget = MAX_NODES  # for the whole file: many small bombs are one big one
    loader = BaseLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            budget -= check_node(node, file, budget)
            root = _position(node.start_mark)
            data = _build(loader, node, "$", root, file)
            if data is not None:
                docs.append(Document(data, file, root))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "invalid YAML"
        raise InputError(f"invalid YAML: {_one_line(problem)}", file=file,
                         line=mark.line + 1 if mark else None) from e
    except yaml.YAMLError as e:
        raise InputError(f"invalid YAML: {_one_line(str(e))}", file=file) from e
    except RecursionError:  # pragma: no cover - only the pure-Python composer recurses
        raise InputError(f"nested deeper than {MAX_DEPTH} levels", file=file) from None
    finally:
        loader.dispose()
    return docs


def safe_load(text: str, file: str) -> Any:
    """`yaml.safe_load(text)` bounded like an input file: the value of its one document (None
    without one), built as load_text builds it (timestamps as text, no duplicate keys, integers of
    64 bits). A YAML syntax error is raised as yaml.safe_load raises it; the bounds and those
    rules raise InputError naming `file`."""
    if len(text) > MAX_FILE_BYTES:
        raise InputError(f"larger than {MAX_FILE_BYTES} bytes", file=file)
    loader = BaseLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_node(node, file)
        return _build(loader, node, "$", _position(node.start_mark), file)
    finally:
        loader.dispose()


def _load_json_stream(text: str, file: str) -> list[Document]:
    """One or more JSON documents one after the other (JSON lines included)."""
    docs: list[Document] = []
    raw = text.encode("utf-8", "surrogatepass")
    newlines = [m.start() for m in re.finditer(b"\n", raw)]
    try:
        for start, end, data in _json_stream(text):
            docs.append(_load_json(text, raw, newlines, start, end, data, file))
    except json.JSONDecodeError as e:
        raise InputError(f"invalid JSON: {e.msg} (column {e.colno})", file=file,
                         line=e.lineno) from e
    except RecursionError:
        raise InputError(f"nested deeper than {MAX_DEPTH} levels", file=file) from None
    except ValueError as e:  # an integer beyond Python's conversion limit
        long_number = re.search(r"\d{%d}" % LONGEST_INT, text)
        line = text.count("\n", 0, long_number.start()) + 1 if long_number else None
        raise InputError(f"invalid number: {_number_problem(e)}", file=file,
                         line=line) from None
    return docs


def _json_stream(text: str) -> Iterator[tuple[int, int, Any]]:
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


def _load_json(text: str, raw: bytes, newlines: list[int], start: int, end: int, data: Any,
               file: str) -> Document:
    """The document `data` that json.loads read from text[start:end], positioned by Ignition's
    exact JSON parser (best effort: positions are left unknown where it disagrees)."""
    check_data(data, file)
    if _SURROGATE_ESCAPE.search(text, start, end):  # rare: only then walk every string
        data = _fix_strings(data)
    base = len(text[:start].encode("utf-8", "surrogatepass"))
    length = len(text[start:end].encode("utf-8", "surrogatepass"))
    try:
        node = parse_json(raw[base:base + length])
    except (JSONSyntaxError, RecursionError):
        # Python's JSON reads what Go's refuses (NaN, Infinity): position it the slow way
        return Document(data, file, _composed_positions(text, start, end, file))
    def position(node: JNode, at: int) -> Position:
        offset = base + at
        line = bisect.bisect_left(newlines, offset)  # newlines before `offset`
        line_start = newlines[line - 1] + 1 if line else 0
        out = Position(line + 1, len(raw[line_start:offset].decode("utf-8", "replace")) + 1)
        out.members = [(m.key, position(m.node, m.key_start)) for m in node.members]
        out.items = [position(item, _opening(item)) for item in node.items]
        return out
    return Document(data, file, position(node, _opening(node)))


def _composed_positions(text: str, start: int, end: int, file: str) -> Position | None:
    """Positions of the JSON document text[start:end] as load_text finds a YAML document's (a
    second parse, only for a document Ignition's parser refuses), so its errors still name a
    line: padded to its place in `text`, so the marks are the file's."""
    line_start = text.rfind("\n", 0, start) + 1
    loader = BaseLoader("\n" * text.count("\n", 0, start) + " " * (start - line_start)
                        + text[start:end])
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        root = _position(node.start_mark)
        _build(loader, node, "$", root, file)
        return root
    except (yaml.YAMLError, InputError, RecursionError):
        return None  # positions stay unknown, as before this fallback
    finally:
        loader.dispose()


def _opening(node: JNode) -> int:
    # Ignition's nodes of objects and arrays start after the bracket; a person looks at it.
    return node.start - 1 if node.kind in ("object", "array") else node.start


def read_bounded(path: str) -> bytes:
    """The bytes of a regular file of at most MAX_FILE_BYTES; InputError naming it otherwise."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise InputError("not a regular file", file=path)
            data = f.read(MAX_FILE_BYTES + 1)
    except IsADirectoryError:
        raise InputError("not a regular file (a directory)", file=path) from None
    except FileNotFoundError:
        if os.path.islink(path):
            raise InputError(f"dangling symlink (to {os.readlink(path)})", file=path) from None
        raise InputError("cannot read: No such file or directory", file=path) from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", file=path) from None
    if len(data) > MAX_FILE_BYTES:
        raise InputError(f"larger than {MAX_FILE_BYTES} bytes", file=path)
    return data


def decode_text(data: bytes, file: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(f"not UTF-8 text: {e.reason} at byte {e.start}", file=file,
                         line=line) from None


def load_file(path: str) -> list[Document]:
    """All documents of one file; a read or decode error names the file."""
    return load_text(decode_text(read_bounded(path), path), path)
