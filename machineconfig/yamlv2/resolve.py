"""yaml.v2's scalar resolution (resolve.go) and how its encoder turns Go values into scalars.

Decides which strings must be quoted because they would read back as another type.
"""
from __future__ import annotations

import logging
import math
import re
from decimal import Decimal
from typing import Any

log = logging.getLogger(__name__)


PLAIN, SINGLE, DOUBLE, LITERAL = "plain", "single", "double", "literal"

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


# A string yaml.v2 writes plain and unchanged whatever the context: printable ASCII without
# spaces (so never folded, escaped or multi-line), no indicator first and no ':' last (so a plain
# block scalar, also as a simple key), a first character that no non-string resolution starts
# with (digits, signs, '.', and the y/n/t/f/o/~ words are left to the full path), not "---"/"...".
_PLAIN_AS_IS = re.compile(r"[A-Za-z/_=$^()<;\\][\x21-\x7e]*(?<!:)")


def plain_as_is(text: str) -> bool:
    """True when `text` is emitted as a plain scalar exactly as it is (a fast path of the
    emitter: scalar_event gives PLAIN and `analyze` allows a plain block scalar and simple key)."""
    return _PLAIN_AS_IS.fullmatch(text) is not None and text not in _RESOLVE_MAP


def scalar_event(value: Any) -> tuple[str, str]:
    """(text, requested style) as yaml.v2's encoder produces them for a Go value."""
    if value is None:
        return "null", PLAIN
    if value is True:
        return "true", PLAIN
    if value is False:
        return "false", PLAIN
    if isinstance(value, int):
        return str(value), PLAIN
    if isinstance(value, float):
        return go_format_float(value), PLAIN
    text = str(value)
    if "\n" in text:
        return text, LITERAL
    if not text or _resolves_non_string(text) or _is_base60_float(text):
        return text, DOUBLE
    return text, PLAIN
