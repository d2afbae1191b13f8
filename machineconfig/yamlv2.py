"""A YAML emitter that reproduces Go gopkg.in/yaml.v2 (v2.4.0) `Marshal` byte for byte.

Input is a generic JSON-derived value (dict/list/str/int/float/bool/None), as ghodss/yaml hands
it to yaml.v2; output is the exact text MCO hashes for the rendered-config name.
"""
from __future__ import annotations

import functools
import logging
import math
import re
import unicodedata
from decimal import Decimal
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

BEST_INDENT = 2
BEST_WIDTH = 80
# yaml.v2 refuses a scalar as a simple (inline) key above this many bytes.
MAX_SIMPLE_KEY_BYTES = 128

_PLAIN, _SINGLE, _DOUBLE, _LITERAL = "plain", "single", "double", "literal"
_BREAKS = "\r\n\x85\u2028\u2029"

# Characters yaml.v2's *reader* rejects in the JSON text it parses (ghodss/yaml parses Go's JSON
# with yaml.v2 first): DEL, C1 controls except NEL, U+FFFE/U+FFFF. Go's JSON escapes the rest.
_READER_REJECTS = re.compile("[\x7f\x80-\x84\x86-\x9f\ufffe\uffff]")
_YAML_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_BASE60_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")
# Go strconv.ParseFloat syntax for a string starting with '.' (underscores between digits only).
_DOT_FLOAT = re.compile(r"^\.[0-9](_?[0-9])*([eE][-+]?[0-9](_?[0-9])*)?$")
_GO_INT = re.compile(r"^[-+]?(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)$")
_GO_UINT = re.compile(r"^(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)$")
_RESOLVE_MAP = frozenset(
    "y Y yes Yes YES true True TRUE on On ON n N no No NO false False FALSE off Off OFF "
    "~ null Null NULL .nan .NaN .NAN .inf .Inf .INF +.inf +.Inf +.INF -.inf -.Inf -.INF <<".split()
) | {""}
_HINT_M = set("yYnNtTfFoO~")
_TIMESTAMP_LAYOUTS = (
    re.compile(r"^(\d{4})-(\d\d?)-(\d\d?)[Tt](\d\d?):(\d\d?):(\d\d?)([.,]\d+)?(Z|[+-]\d\d:\d\d)$"),
    re.compile(r"^(\d{4})-(\d\d?)-(\d\d?) +(\d\d?):(\d\d?):(\d\d?)([.,]\d+)?()$"),
    re.compile(r"^(\d{4})-(\d\d?)-(\d\d?)()()()()()$"),
)
_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class YAMLError(ValueError):
    """yaml.v2 refused the value; the message is Go's (`yaml: ...`)."""


def check_reader(value: Any) -> None:
    """Raise what ghodss/yaml's yaml.v2 *parse* of Go's JSON would raise for this value."""
    for text in _strings(value):
        if _READER_REJECTS.search(text):
            raise YAMLError("yaml: control characters are not allowed")


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def dump(value: Any) -> str:
    """`yaml.Marshal(value)` of yaml.v2 for a generic JSON-like value."""
    check_reader(value)
    emitter = _Emitter()
    emitter.node(value, root=True)
    emitter.write_indent()  # document end
    return "".join(emitter.out)


# ---- scalar resolution (resolve.go) -------------------------------------------------------

def _valid_date(y: str, mo: str, d: str) -> bool:
    year, month, day = int(y), int(mo), int(d)
    if not 1 <= month <= 12:
        return False
    days = _DAYS[month - 1]
    if month == 2 and (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
        days = 29
    return 1 <= day <= days


def _is_timestamp(s: str) -> bool:
    if not (len(s) > 4 and s[:4].isascii() and s[:4].isdigit() and s[4] == "-"):
        return False
    for layout in _TIMESTAMP_LAYOUTS:
        m = layout.match(s)
        if not m or not _valid_date(m.group(1), m.group(2), m.group(3)):
            continue
        if m.group(4):
            if int(m.group(4)) > 23 or int(m.group(5)) > 59 or int(m.group(6)) > 59:
                continue
            tz = m.group(8)
            # Go's offset range check uses > (24h and 60min offsets are accepted).
            if tz and tz != "Z" and (int(tz[1:3]) > 24 or int(tz[4:6]) > 60):
                continue
        return True
    return False


def _go_parse_float(s: str) -> bool:
    try:
        return not math.isinf(float(s))
    except ValueError:
        return False


def _resolves_non_string(s: str) -> bool:
    """True when yaml.v2's resolve("", s) would not give !!str."""
    if s in _RESOLVE_MAP:
        return s != "<<"  # "<<" has hint 0, so the map is never consulted for it
    c = s[0]
    if c in _HINT_M:
        return False
    if c == ".":
        return bool(_DOT_FLOAT.match(s)) and _go_parse_float(s.replace("_", ""))
    if not (c in "+-" or "0" <= c <= "9"):
        return False
    if _is_timestamp(s):
        return True
    plain = s.replace("_", "")
    if _GO_INT.match(plain) and _int_fits(plain, signed=True):
        return True
    if _GO_UINT.match(plain) and _int_fits(plain, signed=False):
        return True
    if _YAML_FLOAT.match(plain) and _go_parse_float(plain):
        return True
    if plain.startswith("0b"):  # ParseInt(plain[2:], 2) also takes a sign
        m = re.match(r"^[+-]?([01]+)$", plain[2:])
        return m is not None and int(m.group(1), 2) < 2**64
    return False


def _int_fits(text: str, signed: bool) -> bool:
    neg = text.startswith("-")
    body = text.lstrip("+-")
    if body[:2].lower() in ("0x", "0o", "0b"):
        value = int(body[2:], {"x": 16, "o": 8, "b": 2}[body[1].lower()])
    elif len(body) > 1 and body[0] == "0":
        value = int(body, 8)
    else:
        value = int(body)
    if not signed:
        return value < 2**64
    return value <= 2**63 if neg else value < 2**63


def _is_base60_float(s: str) -> bool:
    return bool(s) and (s[0] in "+-" or "0" <= s[0] <= "9") and ":" in s \
        and bool(_BASE60_FLOAT.match(s))


def go_format_float(f: float) -> str:
    """strconv.FormatFloat(f, 'g', -1, 64) with yaml.v2's .inf/.nan spelling."""
    if math.isnan(f):
        return ".nan"
    if math.isinf(f):
        return ".inf" if f > 0 else "-.inf"
    sign = "-" if math.copysign(1.0, f) < 0 else ""
    if f == 0:
        return sign + "0"
    tup = Decimal(repr(abs(f))).normalize().as_tuple()
    digits = "".join(map(str, tup.digits))
    point = len(digits) + int(tup.exponent)
    exp = point - 1
    # Go switches to %e when the exponent is < -4 or >= 6 for the shortest representation.
    if exp < -4 or exp >= 6:
        body = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{body}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


# ---- key order (sorter.go) ----------------------------------------------------------------

def _is_letter(c: str) -> bool:
    return unicodedata.category(c).startswith("L")


def _is_digit(c: str) -> bool:
    return unicodedata.category(c) == "Nd"


def _key_less(a: str, b: str) -> bool:
    for i in range(min(len(a), len(b))):
        ca, cb = a[i], b[i]
        if ca == cb:
            continue
        al, bl = _is_letter(ca), _is_letter(cb)
        if al and bl:
            return ca < cb
        if al or bl:
            return bl
        an = bn = 0
        if ca == "0" or cb == "0":
            j = i - 1
            while j >= 0 and _is_digit(a[j]):
                if a[j] != "0":
                    an = bn = 1
                    break
                j -= 1
        ai = i
        while ai < len(a) and _is_digit(a[ai]):
            an = an * 10 + ord(a[ai]) - 48
            ai += 1
        bi = i
        while bi < len(b) and _is_digit(b[bi]):
            bn = bn * 10 + ord(b[bi]) - 48
            bi += 1
        if an != bn:
            return an < bn
        if ai != bi:
            return ai < bi
        return ca < cb
    return len(a) < len(b)


_LETTER_KEYS = re.compile(r"[A-Za-z]*")


def sorted_keys(keys: Iterable[str]) -> list[str]:
    """Map keys in yaml.v2's "natural" order."""
    keys = list(keys)
    if all(_LETTER_KEYS.fullmatch(k) for k in keys):
        return sorted(keys)  # letters only: natural order is code-point order

    def cmp(a: str, b: str) -> int:
        return -1 if _key_less(a, b) else (1 if _key_less(b, a) else 0)
    return sorted(keys, key=functools.cmp_to_key(cmp))


# ---- the emitter (emitterc.go) -----------------------------------------------------------

def _printable(c: str) -> bool:
    o = ord(c)
    return o == 0x0A or 0x20 <= o <= 0x7E or (0xA0 <= o <= 0xD7FF) \
        or (0xE000 <= o <= 0xFFFD and o != 0xFEFF)


class _Analysis:
    __slots__ = ("multiline", "flow_plain", "block_plain", "single", "block")

    def __init__(self, value: str) -> None:
        if not value:
            self.multiline, self.flow_plain, self.block_plain = False, False, True
            self.single, self.block = True, False
            return
        block_ind = flow_ind = line_breaks = special = False
        leading_space = leading_break = trailing_space = trailing_break = False
        break_space = space_break = previous_space = previous_break = False
        if value.startswith("---") or value.startswith("..."):
            block_ind = flow_ind = True
        preceded_by_ws = True
        n = len(value)
        for i, c in enumerate(value):
            followed_by_ws = i + 1 >= n or value[i + 1] in " \t"
            if i == 0:
                if c in "#,[]{}&*!|>'\"%@`":
                    flow_ind = block_ind = True
                elif c in "?:":
                    flow_ind = True
                    block_ind = block_ind or followed_by_ws
                elif c == "-" and followed_by_ws:
                    flow_ind = block_ind = True
            else:
                if c in ",?[]{}":
                    flow_ind = True
                elif c == ":":
                    flow_ind = True
                    block_ind = block_ind or followed_by_ws
                elif c == "#" and preceded_by_ws:
                    flow_ind = block_ind = True
            if not _printable(c):
                special = True
            if c == " ":
                leading_space = leading_space or i == 0
                trailing_space = trailing_space or i == n - 1
                break_space = break_space or previous_break
                previous_space, previous_break = True, False
            elif c in _BREAKS:
                line_breaks = True
                leading_break = leading_break or i == 0
                trailing_break = trailing_break or i == n - 1
                space_break = space_break or previous_space
                previous_space, previous_break = False, True
            else:
                previous_space = previous_break = False
            preceded_by_ws = c in " \t\0" or c in _BREAKS
        self.multiline = line_breaks
        self.flow_plain = self.block_plain = self.single = self.block = True
        if leading_space or leading_break or trailing_space or trailing_break:
            self.flow_plain = self.block_plain = False
        if trailing_space:
            self.block = False
        if break_space:
            self.flow_plain = self.block_plain = self.single = False
        if space_break or special:
            self.flow_plain = self.block_plain = self.single = self.block = False
        if line_breaks:
            self.flow_plain = self.block_plain = False
        if flow_ind:
            self.flow_plain = False
        if block_ind:
            self.block_plain = False


_B = "\r\n\x85\u2028\u2029"
_NON_PRINTABLE = re.compile("[^\n\x20-\x7e\xa0-\ud7ff\ue000-\ufefe\uff00-\ufffd]")
_ANY_BREAK = re.compile(f"[{_B}]")
_BREAK_SPACE = re.compile(f"[{_B}] ")
_SPACE_BREAK = re.compile(f" [{_B}]")
_FLOW_INDICATOR = re.compile(r"[,?\[\]{}:]")
_BLOCK_COLON = re.compile(r":(?=[ \t]|$)")
_BLOCK_HASH = re.compile(f"(?<=[ \t\0{_B}])#")
_FIRST_INDICATORS = frozenset("#,[]{}&*!|>'\"%@`")


def analyze(value: str) -> _Analysis:
    """yaml_emitter_analyze_scalar with regular expressions (same result as `_Analysis`)."""
    if not value:
        return _Analysis(value)
    first = value[0]
    followed = len(value) == 1 or value[1] in " \t"
    flow_ind = block_ind = value.startswith(("---", "..."))
    if first in _FIRST_INDICATORS:
        flow_ind = block_ind = True
    elif first in "?:":
        flow_ind = True
        block_ind = block_ind or followed
    elif first == "-" and followed:
        flow_ind = block_ind = True
    rest = value[1:]
    if rest:
        if not flow_ind and _FLOW_INDICATOR.search(rest):
            flow_ind = True
        if not block_ind and (_BLOCK_COLON.search(rest) or _BLOCK_HASH.search(value, 1)):
            flow_ind = block_ind = True
    info = _Analysis.__new__(_Analysis)
    line_breaks = _ANY_BREAK.search(value) is not None
    special = _NON_PRINTABLE.search(value) is not None
    edge = first in " " + _B or value[-1] in " " + _B
    space_break = line_breaks and _SPACE_BREAK.search(value) is not None
    break_space = line_breaks and _BREAK_SPACE.search(value) is not None
    info.multiline = line_breaks
    plain = not (edge or break_space or space_break or special or line_breaks)
    info.flow_plain = plain and not flow_ind
    info.block_plain = plain and not block_ind
    info.single = not (break_space or space_break or special)
    info.block = not (value[-1] == " " or space_break or special)
    return info


_NEEDS_ESCAPE = re.compile(f"[\"\\\\{_B}]|" + _NON_PRINTABLE.pattern)
_ESCAPES = {0x00: "0", 0x07: "a", 0x08: "b", 0x09: "t", 0x0A: "n", 0x0B: "v", 0x0C: "f",
            0x0D: "r", 0x1B: "e", 0x22: '"', 0x5C: "\\", 0x85: "N", 0xA0: "_",
            0x2028: "L", 0x2029: "P"}


class _Emitter:
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
            self.scalar(*_scalar_event(value))

    def block_mapping(self, value: dict[str, Any]) -> None:
        self.increase_indent(False, False)
        for key in sorted_keys(value):
            self.write_indent()
            key_text = str(key)
            simple = "\n" not in key_text and not any(c in _BREAKS for c in key_text) \
                and len(key_text.encode("utf-8", "surrogatepass")) <= MAX_SIMPLE_KEY_BYTES
            if simple:
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
            style = _DOUBLE
        if style == _PLAIN:
            if not info.block_plain or (not text and self.simple_key_context):
                style = _SINGLE
        if style == _SINGLE and not info.single:
            style = _DOUBLE
        if style == _LITERAL and (not info.block or self.simple_key_context):
            style = _DOUBLE
        self.increase_indent(True, False)
        allow_breaks = not self.simple_key_context
        if style == _PLAIN:
            self.write_plain(text, allow_breaks)
        elif style == _SINGLE:
            self.write_single(text, allow_breaks)
        elif style == _DOUBLE:
            self.write_double(text, allow_breaks)
        else:
            self.write_literal(text)
        self.indent = self.indents.pop()

    # -- scalar writers
    def write_plain(self, value: str, allow_breaks: bool) -> None:
        if not self.whitespace:
            self.put(" ")
        if " " not in value and not _ANY_BREAK.search(value):
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
            elif c in _BREAKS:
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
            if bom or not _printable(c) or c in _BREAKS or c in '"\\':
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
        if value[:1] == " " or (value[:1] and value[0] in _BREAKS):
            self.write_indicator(str(BEST_INDENT), False, False, False)
        chomp = ""
        if not value or value[-1] not in _BREAKS:
            chomp = "-"
        elif len(value) == 1 or value[-2] in _BREAKS:
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
            if c in _BREAKS:
                self.write_break_char(c)
                breaks = True
            else:
                if breaks:
                    self.write_indent()
                self.put(c)
                self.indention = False
                breaks = False


def _scalar_event(value: Any) -> tuple[str, str]:
    """(text, requested style) as yaml.v2's encoder produces them for a Go value."""
    if value is None:
        return "null", _PLAIN
    if value is True:
        return "true", _PLAIN
    if value is False:
        return "false", _PLAIN
    if isinstance(value, int):
        return str(value), _PLAIN
    if isinstance(value, float):
        return go_format_float(value), _PLAIN
    text = str(value)
    if "\n" in text:
        return text, _LITERAL
    if not text or _resolves_non_string(text) or _is_base60_float(text):
        return text, _DOUBLE
    return text, _PLAIN
