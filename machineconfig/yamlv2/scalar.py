"""yaml_emitter_analyze_scalar: which styles a string may be written in.

`analyze` uses regular expressions; `_Analysis(value)` is the character loop it must agree with.
"""
from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)


BREAKS = "\r\n\x85\u2028\u2029"


def printable(c: str) -> bool:
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
            if not printable(c):
                special = True
            if c == " ":
                leading_space = leading_space or i == 0
                trailing_space = trailing_space or i == n - 1
                break_space = break_space or previous_break
                previous_space, previous_break = True, False
            elif c in BREAKS:
                line_breaks = True
                leading_break = leading_break or i == 0
                trailing_break = trailing_break or i == n - 1
                space_break = space_break or previous_space
                previous_space, previous_break = False, True
            else:
                previous_space = previous_break = False
            preceded_by_ws = c in " \t\0" or c in BREAKS
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


NON_PRINTABLE = re.compile("[^\n\x20-\x7e\xa0-\ud7ff\ue000-\ufefe\uff00-\ufffd]")
ANY_BREAK = re.compile(f"[{BREAKS}]")
_BREAK_SPACE = re.compile(f"[{BREAKS}] ")
_SPACE_BREAK = re.compile(f" [{BREAKS}]")
_FLOW_INDICATOR = re.compile(r"[,?\[\]{}:]")
_BLOCK_COLON = re.compile(r":(?=[ \t]|$)")
_BLOCK_HASH = re.compile(f"(?<=[ \t\0{BREAKS}])#")
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
    line_breaks = ANY_BREAK.search(value) is not None
    special = NON_PRINTABLE.search(value) is not None
    edge = first in " " + BREAKS or value[-1] in " " + BREAKS
    space_break = line_breaks and _SPACE_BREAK.search(value) is not None
    break_space = line_breaks and _BREAK_SPACE.search(value) is not None
    info.multiline = line_breaks
    plain = not (edge or break_space or space_break or special or line_breaks)
    info.flow_plain = plain and not flow_ind
    info.block_plain = plain and not block_ind
    info.single = not (break_space or space_break or special)
    info.block = not (value[-1] == " " or space_break or special)
    return info

