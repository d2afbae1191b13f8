"""The systemd unit-file lexer Ignition validates unit and drop-in contents with (coreos/go-systemd
unit/deserialize.go), reproducing its error texts and its bufio-window line-length check.
"""
from __future__ import annotations

from dataclasses import dataclass

from machineconfig.errors import MachineConfigError
from machineconfig.ignition.decode import go_quote

LINE_MAX = 2048
_BUF_SIZE = 4096  # bufio.Reader's default size decides when the line-length check can fire
_SPACE = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
                   "\u2009\u200a\u2028\u2029\u202f\u205f\u3000")


class UnitParseError(MachineConfigError, ValueError):
    """Deserialization failed; str() is go-systemd's message."""


@dataclass(frozen=True)
class UnitOption:
    section: str
    name: str


class _Reader:
    """A model of bufio.Reader over bytes: only position and buffered extent matter."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.w = 0  # absolute end of buffered data

    def _fill(self) -> None:
        self.w = min(len(self.data), self.pos + _BUF_SIZE)

    def buffered(self) -> int:
        return self.w - self.pos

    def _full_rune_buffered(self) -> bool:
        avail = self.w - self.pos
        if avail <= 0:
            return False
        lead = self.data[self.pos]
        need = 1 if lead < 0xC0 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4 if lead < 0xF8 else 1
        return avail >= need

    def read_rune(self) -> str | None:
        # bufio refills only when less than one whole rune is buffered.
        if not self._full_rune_buffered() and self.w < len(self.data):
            self._fill()
        if self.pos >= self.w:
            return None
        for width in (1, 2, 3, 4):
            try:
                ch = self.data[self.pos:self.pos + width].decode("utf-8")
            except UnicodeDecodeError:
                continue
            self.pos += width
            return ch
        self.pos += 1
        return "\ufffd"

    def unread(self, ch: str) -> None:
        self.pos -= len(ch.encode("utf-8")) if ch != "\ufffd" else 1

    def read_bytes(self, delim: int) -> tuple[bytes, bool]:
        """ReadBytes: (data including delim, found). Not found means EOF."""
        start = self.pos
        while True:
            idx = self.data.find(bytes([delim]), self.pos, self.w)
            if idx >= 0:
                self.pos = idx + 1
                return self.data[start:self.pos], True
            if self.w >= len(self.data):
                self.pos = self.w
                return self.data[start:self.pos], False
            if self.w - self.pos >= _BUF_SIZE:  # buffer full: consume it and keep reading
                self.pos = self.w
            self._fill()

    def line_too_long(self) -> bool:
        if self.buffered() < LINE_MAX:
            return False
        window = self.data[self.pos:self.pos + LINE_MAX]
        return b"\r" not in window and b"\n" not in window


def _to_eol(r: _Reader) -> tuple[bytes, bool]:
    line, found = r.read_bytes(ord("\n"))
    # Upstream trims "\r" before "\n", so a CRLF line keeps its "\r".
    return line.removesuffix(b"\r").removesuffix(b"\n"), not found


def _option_name_fast(r: _Reader) -> str | None:
    """The option_name state in one step when the buffered bytes hold an ASCII name ending at
    '=' before any line break: the rune loop would read exactly those bytes without a refill
    (every rune is one whole byte inside the buffer). None: let the rune loop decide."""
    data, pos, end = r.data, r.pos, r.w
    eq = data.find(b"=", pos, end)
    if eq < 0:
        return None
    segment = data[pos:eq]
    if not segment.isascii() or b"\n" in segment or b"\r" in segment:
        return None
    r.pos = eq + 1
    return segment.decode("ascii").strip()


def deserialize(contents: str) -> list[UnitOption]:
    """Parse unit text; return its options or raise UnitParseError."""
    r = _Reader(contents.encode("utf-8", "surrogatepass"))
    options: list[UnitOption] = []
    state = "next_section"
    section = ""
    name = ""
    after_comment = ""
    while state:
        if r.line_too_long():
            raise UnitParseError(f"line too long (max {LINE_MAX} bytes)")
        if state == "next_section" or state == "section_or_option":
            ch = r.read_rune()
            if ch is None:
                break
            if ch == "[":
                state = "section_name"
            elif ch in "#;":
                after_comment, state = state, "ignore_line"
            elif state == "section_or_option" and ch not in _SPACE:
                r.unread(ch)
                state = "option_name"
        elif state == "section_name":
            raw, found = r.read_bytes(ord("]"))
            if not found:
                raise UnitParseError("unable to find end of section")
            section = raw[:-1].decode("utf-8", "replace")
            state = "section_suffix"
        elif state == "section_suffix":
            garbage, _ = _to_eol(r)
            garbage = garbage.strip(b" \t\n\v\f\r")
            if garbage:
                raise UnitParseError(
                    f"found garbage after section name : {go_quote(garbage.decode('utf-8', 'replace'))}")
            state = "section_or_option"
        elif state == "ignore_line":
            while True:
                line, _ = _to_eol(r)
                if not line.rstrip(b" ").endswith(b"\\"):
                    break
                if r.pos >= len(r.data):
                    break
            state = after_comment
        elif state == "option_name":
            fast = _option_name_fast(r)
            if fast is not None:
                name = fast
                state = "option_value"
                continue
            partial = []
            while True:
                ch = r.read_rune()
                if ch is None:
                    raise UnitParseError("EOF")
                if ch in "\r\n":
                    raise UnitParseError("unexpected newline encountered while parsing option name")
                if ch == "=":
                    break
                partial.append(ch)
            name = "".join(partial).strip()
            state = "option_value"
        elif state == "option_value":
            line, eof = _to_eol(r)
            if line.strip() and line.endswith(b"\\") and not eof:
                continue  # a continuation line: the value goes on
            options.append(UnitOption(section, name))
            state = "section_or_option"
    return options


def has_install_section(contents: str | None) -> bool:
    """True when parsing yields an option in a section named exactly `Install`."""
    if not contents:
        return False
    try:
        return any(o.section == "Install" for o in deserialize(contents))
    except UnitParseError:
        return False
