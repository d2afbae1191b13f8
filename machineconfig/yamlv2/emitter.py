"""The emitter state machine (emitterc.go) for generic values: block mappings and sequences,
flow `{}`/`[]` for empty ones, and the plain/single/double/literal scalar writers.
"""
from __future__ import annotations

import logging
import re
from typing import Any

from machineconfig.yamlv2.resolve import DOUBLE, LITERAL, PLAIN, SINGLE, plain_as_is, scalar_event
from machineconfig.yamlv2.scalar import ANY_BREAK, BREAKS, NON_PRINTABLE, analyze, printable
from machineconfig.yamlv2.sorter import sorted_keys

log = logging.getLogger(__name__)


BEST_INDENT = 2
BEST_WIDTH = 80
# yaml.v2 refuses a scalar as a simple (inline) key above this many bytes.
MAX_SIMPLE_KEY_BYTES = 128

_NEEDS_ESCAPE = re.compile(f"[\"\\\\{BREAKS}]|" + NON_PRINTABLE.pattern)
_ESCAPES = {0x00: "0", 0x07: "a", 0x08: "b", 0x09: "t", 0x0A: "n", 0x0B: "v", 0x0C: "f",
            0x0D: "r", 0x1B: "e", 0x22: '"', 0x5C: "\\", 0x85: "N", 0xA0: "_",
            0x2028: "L", 0x2029: "P"}


_KEY_ORDERS: dict[tuple[Any, ...], list[Any]] = {}
_SIMPLE_KEYS: dict[str, int] = {}  # 0: not simple, 1: simple, 2: simple and written as is
_NOT_SIMPLE, _SIMPLE, _SIMPLE_AS_IS = 0, 1, 2
_MEMO_LIMIT = 4096


def _key_order(value: dict[Any, Any]) -> list[Any]:
    """sorted_keys(value), memoized on the key tuple (mappings of one shape recur a lot)."""
    keys = tuple(value)
    if len(keys) > 32 or not all(type(k) is str for k in keys):
        return sorted_keys(value)
    order = _KEY_ORDERS.get(keys)
    if order is None:
        order = sorted_keys(keys)
        if len(_KEY_ORDERS) >= _MEMO_LIMIT:
            _KEY_ORDERS.clear()
        _KEY_ORDERS[keys] = order
    return order


def _simple_key(key_text: str) -> int:
    """Whether yaml.v2 writes the key inline (no line break, at most 128 bytes), and if so whether
    as a plain scalar exactly as it is (`plain_as_is`); memoized."""
    simple = _SIMPLE_KEYS.get(key_text)
    if simple is None:
        if any(c in BREAKS for c in key_text) \
                or len(key_text.encode("utf-8", "surrogatepass")) > MAX_SIMPLE_KEY_BYTES:
            simple = _NOT_SIMPLE
        else:
            simple = _SIMPLE_AS_IS if plain_as_is(key_text) else _SIMPLE
        if len(key_text) <= MAX_SIMPLE_KEY_BYTES:
            if len(_SIMPLE_KEYS) >= _MEMO_LIMIT:
                _SIMPLE_KEYS.clear()
            _SIMPLE_KEYS[key_text] = simple
    return simple


class Emitter:
    def __init__(self) -> None:
        self.out: list[str] = []
        self.column = 0
        self.whitespace = True
        self.indention = True
        self.indent = -1
        self.indents: list[int] = []
        # Context of the node being emitted (yaml_emitter_emit_node's flags).
        self.mapping_context = False
        self.simple_key_context = False

    # -- low level
    def put(self, s: str) -> None:
        self.out.append(s)
        self.column += len(s)

    def put_break(self) -> None:
        self.out.append("\n")
        self.column = 0
        self.indention = True

    def write_break_char(self, c: str) -> None:
        if c == "\n":
            self.put_break()
        else:
            self.out.append(c)
            self.column = 0
            self.indention = True

    def write_indent(self) -> None:
        indent = max(self.indent, 0)
        if not self.indention or self.column > indent or (self.column == indent and not self.whitespace):
            self.put_break()
        if self.column < indent:
            self.put(" " * (indent - self.column))
        self.whitespace = True
        self.indention = True

    def write_indicator(self, ind: str, need_ws: bool, is_ws: bool, is_indention: bool) -> None:
        if need_ws and not self.whitespace:
            self.put(" ")
        self.put(ind)
        self.whitespace = is_ws
        self.indention = self.indention and is_indention

    def increase_indent(self, flow: bool, indentless: bool) -> None:
        self.indents.append(self.indent)
        if self.indent < 0:
            self.indent = BEST_INDENT if flow else 0
        elif not indentless:
            self.indent += BEST_INDENT

    # -- nodes
    def node(self, value: Any, *, root: bool = False, mapping: bool = False,
             simple_key: bool = False) -> None:
        self.mapping_context = mapping
        self.simple_key_context = simple_key
        cls = type(value)
        if cls is int or (cls is str and plain_as_is(value)):
            # Fast path: a scalar written plain exactly as it is (no quoting, folding or
            # escaping can apply), as `scalar` would write it.
            if not self.whitespace:
                self.out.append(" ")
                self.column += 1
            text = str(value)
            self.out.append(text)
            self.column += len(text)
            self.whitespace = False
            self.indention = False
            return
        if isinstance(value, dict):
            if not value:
                self.write_indicator("{", True, True, False)
                self.write_indicator("}", False, False, False)
            else:
                self.block_mapping(value)
        elif isinstance(value, list):
            if not value:
                self.write_indicator("[", True, True, False)
                self.write_indicator("]", False, False, False)
            else:
                self.block_sequence(value)
        else:
            self.scalar(*scalar_event(value))

    def block_mapping(self, value: dict[str, Any]) -> None:
        self.increase_indent(False, False)
        out = self.out
        for key in _key_order(value):
            self.write_indent()
            key_text = str(key)
            simple = _simple_key(key_text)
            if simple == _SIMPLE_AS_IS:
                # node(key, simple_key=True) and the ":" indicator, in one piece: right after
                # write_indent no separating space is due.
                out.append(key_text + ":")
                self.column += len(key_text) + 1
                self.whitespace = False
                self.indention = False
            elif simple:
                self.node(key_text, mapping=True, simple_key=True)
                self.write_indicator(":", False, False, False)
            else:
                self.write_indicator("?", True, False, True)
                self.node(key_text, mapping=True)
                self.write_indent()
                self.write_indicator(":", True, False, True)
            self.node(value[key], mapping=True)
        self.indent = self.indents.pop()

    def block_sequence(self, value: list[Any]) -> None:
        self.increase_indent(False, self.mapping_context and not self.indention)
        for item in value:
            self.write_indent()
            self.write_indicator("-", True, False, True)
            self.node(item)
        self.indent = self.indents.pop()

    def scalar(self, text: str, style: str) -> None:
        info = analyze(text)
        if self.simple_key_context and info.multiline:
            style = DOUBLE
        if style == PLAIN:
            if not info.block_plain or (not text and self.simple_key_context):
                style = SINGLE
        if style == SINGLE and not info.single:
            style = DOUBLE
        if style == LITERAL and (not info.block or self.simple_key_context):
            style = DOUBLE
        self.increase_indent(True, False)
        allow_breaks = not self.simple_key_context
        if style == PLAIN:
            self.write_plain(text, allow_breaks)
        elif style == SINGLE:
            self.write_single(text, allow_breaks)
        elif style == DOUBLE:
            self.write_double(text, allow_breaks)
        else:
            self.write_literal(text)
        self.indent = self.indents.pop()

    # -- scalar writers
    def write_plain(self, value: str, allow_breaks: bool) -> None:
        if not self.whitespace:
            self.put(" ")
        if " " not in value and not ANY_BREAK.search(value):
            self.put(value)  # nothing to fold at: the common case, written in one piece
        else:
            self._write_folding(value, allow_breaks, quote=False)
        self.whitespace = False
        self.indention = False

    def write_single(self, value: str, allow_breaks: bool) -> None:
        self.write_indicator("'", True, False, False)
        self._write_folding(value, allow_breaks, quote=True)
        self.write_indicator("'", False, False, False)
        self.whitespace = False
        self.indention = False

    def _write_folding(self, value: str, allow_breaks: bool, quote: bool) -> None:
        spaces = breaks = False
        n = len(value)
        for i, c in enumerate(value):
            if c == " ":
                nxt_space = i + 1 < n and value[i + 1] == " "
                fold = allow_breaks and not spaces and self.column > BEST_WIDTH and not nxt_space
                if quote:
                    fold = fold and 0 < i < n - 1
                if fold:
                    self.write_indent()
                else:
                    self.put(c)
                spaces = True
            elif c in BREAKS:
                if not breaks and c == "\n":
                    self.put_break()
                self.write_break_char(c)
                breaks = True
            else:
                if breaks:
                    self.write_indent()
                self.put("''" if quote and c == "'" else c)
                self.indention = False
                spaces = breaks = False

    def write_double(self, value: str, allow_breaks: bool) -> None:
        spaces = False
        self.write_indicator('"', True, False, False)
        bom = value.startswith("\ufeff")  # Go's is_bom looks at byte 0 for every position
        if not bom and " " not in value and not _NEEDS_ESCAPE.search(value):
            self.put(value)
            self.write_indicator('"', False, False, False)
            self.whitespace = False
            self.indention = False
            return
        n = len(value)
        for i, c in enumerate(value):
            o = ord(c)
            if bom or not printable(c) or c in BREAKS or c in '"\\':
                esc = _ESCAPES.get(o)
                if esc is None:
                    esc = f"x{o:02X}" if o <= 0xFF else (f"u{o:04X}" if o <= 0xFFFF else f"U{o:08X}")
                self.put("\\" + esc)
                spaces = False
            elif c == " ":
                if allow_breaks and not spaces and self.column > BEST_WIDTH and 0 < i < n - 1:
                    self.write_indent()
                    if value[i + 1] == " ":
                        self.put("\\")
                else:
                    self.put(c)
                spaces = True
            else:
                self.put(c)
                spaces = False
        self.write_indicator('"', False, False, False)
        self.whitespace = False
        self.indention = False

    def write_literal(self, value: str) -> None:
        self.write_indicator("|", True, False, False)
        if value[:1] == " " or (value[:1] and value[0] in BREAKS):
            self.write_indicator(str(BEST_INDENT), False, False, False)
        chomp = ""
        if not value or value[-1] not in BREAKS:
            chomp = "-"
        elif len(value) == 1 or value[-2] in BREAKS:
            chomp = "+"
        if chomp:
            self.write_indicator(chomp, False, False, False)
        self.put_break()
        self.indention = True
        self.whitespace = True
        if "\r" not in value and "\x85" not in value and "\u2028" not in value \
                and "\u2029" not in value:
            lines = value.split("\n")
            last = len(lines) - 1
            for i, line in enumerate(lines):
                if line:
                    self.write_indent()
                    self.put(line)
                    self.indention = False
                if i < last:
                    self.put_break()
            return
        breaks = True
        for c in value:
            if c in BREAKS:
                self.write_break_char(c)
                breaks = True
            else:
                if breaks:
                    self.write_indent()
                self.put(c)
                self.indention = False
                breaks = False
