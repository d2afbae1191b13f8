"""JSON text to a position-annotated node tree, with Go encoding/json's syntax errors (the v1 API as
Go's json v2 implements it: message wording and byte offsets), and byte offset -> line/column.

Node positions follow coreos/vcontext: scalars start at their first byte, objects and arrays just
after the opening bracket, object keys at their opening quote. Duplicate keys are all kept here.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from machineconfig.errors import MachineConfigError

MAX_DEPTH = 10000  # Go's nesting limit
_WS = b" \t\r\n"
_HEX = b"0123456789abcdefABCDEF"
# The bytes a string scan must stop at (quote, backslash, controls) and runs of whitespace.
_STRING_STOP = re.compile(b'["\\\\\x00-\x1f]')
_WS_RUN = re.compile(b"[ \t\r\n]*")
_ESCAPES = {ord('"'): '"', ord("\\"): "\\", ord("/"): "/", ord("b"): "\b", ord("f"): "\f",
            ord("n"): "\n", ord("r"): "\r", ord("t"): "\t"}


class JSONSyntaxError(MachineConfigError):
    """A syntax error; `offset` is what Go reports (bytes read, including the offending character)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


@dataclass
class Member:
    key: str
    key_start: int
    node: JNode


@dataclass
class JNode:
    """kind is one of object, array, string, number, true, false, null."""

    kind: str
    start: int
    end: int = 0
    value: Any = None  # decoded str for strings, the literal text for numbers
    members: list[Member] = field(default_factory=list)
    items: list[JNode] = field(default_factory=list)

    def child(self, key: str) -> JNode | None:
        """Exact-name lookup; the last duplicate wins, as in Go maps built from the text."""
        found = None
        for m in self.members:
            if m.key == key:
                found = m.node
        return found

    def key_start(self, key: str) -> int | None:
        found = None
        for m in self.members:
            if m.key == key:
                found = m.key_start
        return found

    def unique_keys(self) -> list[str]:
        seen: dict[str, None] = {}
        for m in self.members:
            seen.setdefault(m.key, None)
        return list(seen)


def go_quote_rune(ch: str) -> str:
    """strconv.QuoteRune."""
    simple = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
              "\v": "\\v", "\\": "\\\\", "'": "\\'"}
    if ch in simple:
        return f"'{simple[ch]}'"
    code = ord(ch)
    if ch.isprintable() and not (0xD800 <= code < 0xE000):
        return f"'{ch}'"
    if code < 0x80:
        return f"'\\x{code:02x}'"
    if code < 0x10000:
        return f"'\\u{code:04x}'"
    return f"'\\U{code:08x}'"


def _rune_at(data: bytes, pos: int) -> tuple[str, int]:
    """The rune starting at pos and its byte length; invalid UTF-8 yields ('\\xNN'-quoted, 1)."""
    for width in (1, 2, 3, 4):
        chunk = data[pos:pos + width]
        try:
            return go_quote_rune(chunk.decode("utf-8")), width
        except UnicodeDecodeError:
            continue
    return f"'\\x{data[pos]:02x}'", 1


def _invalid(data: bytes, pos: int, where: str) -> JSONSyntaxError:
    quoted, width = _rune_at(data, pos)
    return JSONSyntaxError(f"invalid character {quoted} {where}", pos + width)


class _Parser:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.n = len(data)

    def eof(self) -> JSONSyntaxError:
        return JSONSyntaxError("unexpected end of JSON input", self.n)

    def ws(self, pos: int) -> int:
        if pos < self.n and self.data[pos] in _WS:
            m = _WS_RUN.match(self.data, pos)
            assert m is not None
            return m.end()
        return pos

    def string(self, pos: int) -> tuple[str, int]:
        """Parse the string whose quote is at pos; return (text, index after closing quote)."""
        data, out, i = self.data, [], pos + 1
        seg = i
        while True:
            # Ordinary bytes are skipped in one regex step; only quote, backslash and controls stop.
            stop = _STRING_STOP.search(data, i)
            if stop is None:
                raise self.eof()
            i = stop.start()
            b = data[i]
            if b == 0x22:
                out.append(data[seg:i].decode("utf-8", "replace"))
                return "".join(out), i + 1
            if b < 0x20:
                raise _invalid(data, i, "in string")
            out.append(data[seg:i].decode("utf-8", "replace"))
            if i + 1 >= self.n:
                raise self.eof()
            e = data[i + 1]
            if e in _ESCAPES:
                out.append(_ESCAPES[e])
                i += 2
            elif e == ord("u"):
                code, i = self._unicode_escape(i)
                out.append(code)
            else:
                raise self._bad_escape(data[i:i + 2], i)
            seg = i

    def _unicode_escape(self, i: int) -> tuple[str, int]:
        hexits = self.data[i + 2:i + 6]
        if len(hexits) < 4 and all(h in _HEX for h in hexits):
            raise self.eof()
        if len(hexits) < 4 or any(h not in _HEX for h in hexits):
            raise self._bad_escape(self.data[i:i + 6], i)
        code = int(hexits, 16)
        if 0xD800 <= code < 0xDC00 and self.data[i + 6:i + 8] == b"\\u":
            low_hex = self.data[i + 8:i + 12]
            if len(low_hex) == 4 and all(h in _HEX for h in low_hex):
                low = int(low_hex, 16)
                if 0xDC00 <= low < 0xE000:
                    return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), i + 12
        if 0xD800 <= code < 0xE000:
            return "\ufffd", i + 6
        return chr(code), i + 6

    @staticmethod
    def _bad_escape(what: bytes, pos: int) -> JSONSyntaxError:
        text = what.decode("utf-8", "replace")
        if any(c == "`" or c == "\ufffd" or c.isspace() or not c.isprintable() for c in text):
            shown = go_quote(text)
        else:
            shown = f"`{text}`"
        label = "surrogate pair" if len(what) > 6 else "escape sequence"
        return JSONSyntaxError(f"invalid {label} {shown} in string", pos + 1)

    def number(self, pos: int) -> int:
        data, i = self.data, pos
        if data[i] == ord("-"):
            i += 1
        i = self._digits(i, first=True)
        if i < self.n and data[i] == ord("."):
            i = self._digits(i + 1, first=False)
        if i < self.n and data[i] in b"eE":
            i += 1
            if i < self.n and data[i] in b"+-":
                i += 1
            i = self._digits(i, first=False)
        return i

    def _digits(self, i: int, *, first: bool) -> int:
        if i >= self.n:
            raise self.eof()
        if not 0x30 <= self.data[i] <= 0x39:
            raise _invalid(self.data, i, "in numeric literal")
        if first and self.data[i] == 0x30:
            return i + 1
        while i < self.n and 0x30 <= self.data[i] <= 0x39:
            i += 1
        return i

    def literal(self, pos: int, word: bytes) -> int:
        for k, expected in enumerate(word):
            if pos + k >= self.n:
                raise self.eof()
            if self.data[pos + k] != expected:
                raise _invalid(self.data, pos + k,
                               f"in literal {word.decode()} (expecting {go_quote_rune(chr(expected))})")
        return pos + len(word)

    def key(self, pos: int) -> tuple[str, int, int]:
        """Parse `"key" :` at pos; return (key, key_start, index after the colon)."""
        if pos >= self.n:
            raise self.eof()
        if self.data[pos] != 0x22:
            raise _invalid(self.data, pos, "looking for beginning of object key string")
        text, after = self.string(pos)
        after = self.ws(after)
        if after >= self.n:
            raise self.eof()
        if self.data[after] != ord(":"):
            raise _invalid(self.data, after, "after object key")
        return text, pos, after + 1

    def run(self) -> JNode:
        data = self.data
        stack: list[tuple[JNode, str, int]] = []  # open container, pending key, key start
        pos = self.ws(0)
        while True:
            # Parse one value at pos, or open a container.
            if pos >= self.n:
                raise self.eof()
            c = data[pos]
            node: JNode
            if c in (ord("{"), ord("[")):
                if len(stack) >= MAX_DEPTH:
                    raise JSONSyntaxError("exceeded max depth", pos + 1)
                node = JNode("object" if c == ord("{") else "array", pos + 1)
                close = ord("}") if c == ord("{") else ord("]")
                pos = self.ws(pos + 1)
                if pos >= self.n:
                    raise self.eof()
                if data[pos] == close:
                    node.end = pos + 1
                    pos += 1
                else:
                    if node.kind == "object":
                        key, key_start, pos = self.key(pos)
                        stack.append((node, key, key_start))
                    else:
                        stack.append((node, "", 0))
                    pos = self.ws(pos)
                    continue
            elif c == 0x22:
                text, end = self.string(pos)
                node = JNode("string", pos, end, text)
                pos = end
            elif c == ord("-") or 0x30 <= c <= 0x39:
                end = self.number(pos)
                node = JNode("number", pos, end, data[pos:end].decode("ascii"))
                pos = end
            elif c in b"tfn":
                word = {ord("t"): b"true", ord("f"): b"false", ord("n"): b"null"}[c]
                end = self.literal(pos, word)
                node = JNode(word.decode(), pos, end, {b"true": True, b"false": False}.get(word))
                pos = end
            else:
                raise _invalid(data, pos, "looking for beginning of value")
            # A value is complete: attach it, then close containers as far as possible.
            while True:
                if not stack:
                    pos = self.ws(pos)
                    if pos < self.n:
                        raise _invalid(data, pos, "after top-level value")
                    return node
                parent, key, key_start = stack[-1]
                if parent.kind == "object":
                    parent.members.append(Member(key, key_start, node))
                else:
                    parent.items.append(node)
                pos = self.ws(pos)
                if pos >= self.n:
                    raise self.eof()
                c = data[pos]
                if c == ord(","):
                    pos = self.ws(pos + 1)
                    if parent.kind == "object":
                        key, key_start, pos = self.key(pos)
                        stack[-1] = (parent, key, key_start)
                        pos = self.ws(pos)
                    break
                if c == (ord("}") if parent.kind == "object" else ord("]")):
                    parent.end = pos + 1
                    pos += 1
                    stack.pop()
                    node = parent
                    continue
                where = "after object key:value pair" if parent.kind == "object" else "after array element"
                raise _invalid(data, pos, where)


def parse_json(data: bytes) -> JNode:
    """Parse one JSON document; raise JSONSyntaxError with Go's message and offset."""
    return _Parser(data).run()


# A \u escape of a UTF-16 surrogate: Go and Python decode those differently (see parse_json_fast).
_SURROGATE_ESCAPE = re.compile(b"\\\\u[dD][89a-fA-F]")


def _no_constants(name: str) -> Any:
    raise ValueError(name)  # NaN and Infinity are not JSON


def _fast_node(value: Any) -> JNode:
    if isinstance(value, JNode):
        return value
    if isinstance(value, str):
        return JNode("string", 0, 0, value)
    if isinstance(value, list):
        return JNode("array", 0, 0, None, [], [_fast_node(v) for v in value])
    if value is True:
        return JNode("true", 0, 0, True)
    if value is False:
        return JNode("false", 0, 0, False)
    assert value is None
    return JNode("null", 0, 0, None)


def _fast_object(pairs: list[tuple[str, Any]]) -> JNode:
    return JNode("object", 0, 0, None, [Member(k, 0, _fast_node(v)) for k, v in pairs])


def _fast_number(text: str) -> JNode:
    return JNode("number", 0, 0, text)


_FAST_DECODER = json.JSONDecoder(object_pairs_hook=_fast_object, parse_int=_fast_number,
                                 parse_float=_fast_number, parse_constant=_no_constants)


def parse_json_fast(data: bytes) -> JNode | None:
    """The tree parse_json builds, without positions (every start/end/key_start is 0), by the C
    JSON scanner; None when it cannot vouch for the result (then use parse_json).

    Only for inputs that parse_json would accept with the same tree: valid UTF-8 (Go replaces bad
    bytes), no surrogate escapes (Go replaces unpaired ones), no NaN/Infinity, nesting within
    Python's recursion limit. Callers that need positions (errors, report entries) must re-parse.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if _SURROGATE_ESCAPE.search(data):
        return None
    try:
        return _fast_node(_FAST_DECODER.decode(text))
    except (ValueError, RecursionError):
        return None


class _NotVouched(Exception):
    """tree_of_object cannot promise parse_json_fast's tree for this value."""


def _object_node(value: Any) -> JNode:
    if isinstance(value, str):
        return JNode("string", 0, 0, value if type(value) is str else str(value))
    if isinstance(value, dict):
        members = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise _NotVouched  # json.dumps writes other keys as text of its own
            members.append(Member(key, 0, _object_node(item)))
        return JNode("object", 0, 0, None, members)
    if isinstance(value, (list, tuple)):
        return JNode("array", 0, 0, None, [], [_object_node(item) for item in value])
    if value is True:
        return JNode("true", 0, 0, True)
    if value is False:
        return JNode("false", 0, 0, False)
    if value is None:
        return JNode("null", 0, 0, None)
    if type(value) is int:
        return JNode("number", 0, 0, int.__repr__(value))
    if type(value) is float and math.isfinite(value):
        return JNode("number", 0, 0, float.__repr__(value))
    raise _NotVouched  # NaN and Infinity (not JSON), or a type json.dumps would refuse


def tree_of_object(value: Any, data: bytes) -> JNode | None:
    """parse_json_fast(data) where `data` is `value` as json.dumps writes it (mcoparse's
    raw_config), built from the object instead of decoding those bytes again. None where
    parse_json_fast gives None (its surrogate check, made on the same bytes) or might differ
    (a key that is not a str, a non-finite float, a type that is not JSON's, nesting past the
    recursion limit): then decode the bytes."""
    if _SURROGATE_ESCAPE.search(data):
        return None
    try:
        return _object_node(value)
    except (_NotVouched, RecursionError, ValueError):  # ValueError: an int past str()'s limit
        return None


def node_path_at(raw: bytes, offset: int) -> tuple[str | int, ...]:
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
        for key_or_index, child in _path_steps(node):
            if child.start <= offset <= child.end and child.start < offset:
                path.append(key_or_index)
                node = child
                break
        else:
            return tuple(path)


def _path_steps(node: JNode) -> list[tuple[str | int, JNode]]:
    if node.kind == "object":
        return [(m.key, m.node) for m in node.members]
    if node.kind == "array":
        return list(enumerate(node.items))
    return []


def is_valid_json(text: str) -> bool:
    """Go json.Valid."""
    try:
        parse_json(text.encode("utf-8", "surrogatepass"))
    except JSONSyntaxError:
        return False
    return True


def line_col(data: bytes, index: int) -> tuple[int, int]:
    """1-based line and byte column of index; (0, 0) when index is past the last byte (vcontext)."""
    if index < 0 or index >= len(data):
        return 0, 0
    line = data.count(b"\n", 0, index) + 1
    col = index - (data.rfind(b"\n", 0, index) + 1) + 1
    return line, col


def go_quote(text: str) -> str:
    """strconv.Quote of a string."""
    out = []
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "'":
            out.append("'")
        else:
            out.append(go_quote_rune(ch)[1:-1])
    return '"' + "".join(out) + '"'
