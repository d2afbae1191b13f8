"""RFC 2397 data URLs: a decoder with the strictness and error texts of the Go `dataurl` library
Ignition uses, and the two encodings the MCO writes (percent-escaped and base64).

Compression is not handled here: callers gunzip the decoded bytes when `compression` says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from machineconfig.errors import MachineConfigError

__all__ = ["DataURL", "DataURLError", "decode", "decode_url", "encode_base64", "encode_percent"]

DATA_PREFIX = "data:"

# RFC 2045 tspecials: never part of a token.
_TSPECIALS = frozenset('()<>@,;:\\"/[]?=')
# Characters the plain-data lexer refuses (RFC 2396 delims and unwise), besides controls.
_DATA_FORBIDDEN = frozenset(' <>#"{}|\\^[]`')
_BASE64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_BASE64_VALUES = {c: i for i, c in enumerate(_BASE64_ALPHABET)}
_HEX = frozenset("0123456789abcdefABCDEF")
# Bytes left alone by the MCO's percent encoding (RFC 2396 "unreserved").
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()")


class DataURLError(MachineConfigError):
    """A data URL the upstream parser rejects; `str()` is the upstream message verbatim."""


@dataclass
class DataURL:
    """A decoded data URL. The media type defaults to text/plain;charset=US-ASCII like upstream."""

    media_type: str = "text"
    subtype: str = "plain"
    params: dict[str, str] = field(default_factory=lambda: {"charset": "US-ASCII"})
    base64: bool = False
    data: bytes = b""


def _is_control(ch: str) -> bool:
    # Go's unicode.IsControl for the ASCII range.
    return ord(ch) < 0x20 or ord(ch) == 0x7F


def _is_token(ch: str) -> bool:
    # unicode.IsSpace also covers \x85 and \xa0, but those are non-ASCII and already excluded.
    return ord(ch) <= 0x7F and not _is_control(ch) and ch != " " and ch not in _TSPECIALS


def _is_url_char(ch: str) -> bool:
    return ord(ch) <= 0x7F and not _is_control(ch) and ch not in _DATA_FORBIDDEN


def _is_media_family(name: str) -> bool:
    # Upstream checks prefixes only, so "textual/x" is accepted too.
    return name.startswith(("text", "image", "audio", "video", "application", "message", "multipart"))


def unescape(text: str) -> bytes:
    """Percent-decode like the library's rfc2396 Unescape ('+' stays '+')."""
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ord(ch) > 0x7F:
            raise DataURLError("rfc2396: non-ASCII char detected")
        if ch != "%":
            out.append(ord(ch))
            i += 1
            continue
        # The library reports the '%' itself (0x25) whichever digit is wrong.
        for k in (1, 2):
            if i + k >= len(text):
                raise DataURLError("rfc2396: unexpected end of unescape sequence")
            if text[i + k] not in _HEX:
                raise DataURLError("rfc2396: invalid char 0x25 in unescape sequence")
        out.append(int(text[i + 1:i + 3], 16))
        i += 3
    return bytes(out)


def go_base64_decode(text: str) -> bytes:
    """Standard padded base64 with Go's `illegal base64 data at input byte N` error offsets."""
    out = bytearray()
    n = len(text)
    si = 0
    while True:
        quantum: list[int] = []
        dlen = 4
        j = 0
        while j < 4:
            if si == n:
                if j == 0:
                    return bytes(out)
                # Missing padding: Go reports where the incomplete quantum started.
                raise DataURLError(f"illegal base64 data at input byte {si - j}")
            ch = text[si]
            si += 1
            value = _BASE64_VALUES.get(ch)
            if value is not None:
                quantum.append(value)
                j += 1
                continue
            if ch in "\r\n":
                continue
            if ch != "=" or j < 2:
                raise DataURLError(f"illegal base64 data at input byte {si - 1}")
            if j == 2:
                while si < n and text[si] in "\r\n":
                    si += 1
                if si == n:
                    raise DataURLError(f"illegal base64 data at input byte {n}")
                if text[si] != "=":
                    raise DataURLError(f"illegal base64 data at input byte {si - 1}")
                si += 1
            while si < n and text[si] in "\r\n":
                si += 1
            if si < n:
                raise DataURLError(f"illegal base64 data at input byte {si}")
            dlen = j
            break
        quantum += [0] * (4 - len(quantum))
        val = quantum[0] << 18 | quantum[1] << 12 | quantum[2] << 6 | quantum[3]
        out += val.to_bytes(3, "big")[:dlen - 1]
        if dlen < 4:
            return bytes(out)


class _Lexer:
    """The library's state machine, run eagerly; errors raise DataURLError."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.result = DataURL()
        # Upstream sets "unquote" on an opening quote and clears it only when a value is
        # emitted; an empty quoted value emits nothing, so the flag leaks to the next value.
        self.unquote_next = False

    def run(self) -> DataURL:
        if not self.text.startswith(DATA_PREFIX):
            raise DataURLError("missing data prefix")
        self.pos = len(DATA_PREFIX)
        ch = self._peek()
        if ch == ";":
            self._params()
        elif ch == ",":
            self.pos += 1
            self._data()
        elif ch == "":
            raise DataURLError("missing comma before data")
        elif _is_token(ch):
            self._media_type()
        else:
            raise DataURLError("invalid character after data prefix")
        return self.result

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _media_type(self) -> None:
        start = self.pos
        # After a leading x/X upstream consumes the next character unchecked; `x-` marks an
        # extension type, which skips the family check.
        extension = False
        i = start + 1
        if self.text[start] in ("x", "X"):
            extension = self.text[start + 1:start + 2] == "-"
            i = start + 2
        # The family check happens only once the slash is found, so bad characters win over it.
        while True:
            ch = self.text[i] if i < len(self.text) else ""
            if ch == "/":
                break
            if ch == "":
                raise DataURLError("missing media type slash")
            if not _is_token(ch):
                raise DataURLError("invalid character for media type")
            i += 1
        name = self.text[start:i]
        if not extension and not _is_media_family(name):
            raise DataURLError("invalid media type")
        self.result.media_type = name
        self.result.params.pop("charset", None)
        i += 1
        sub_start = i
        while True:
            ch = self.text[i] if i < len(self.text) else ""
            if ch in (";", ",") and ch:
                break
            if ch == "":
                raise DataURLError("incomplete media type")
            if not _is_token(ch):
                raise DataURLError("invalid character for media subtype")
            i += 1
        self.result.subtype = self.text[sub_start:i]
        self.pos = i
        if ch == ";":
            self._params()
        else:
            self.pos += 1
            self._data()

    def _params(self) -> None:
        # Positioned on a ';'. Loops over `;attr=value` until the data comma.
        while True:
            self.pos += 1  # the ';'
            ch = self._peek()
            if ch in ("", "=", ","):
                raise DataURLError("unterminated parameter sequence")
            if not _is_token(ch):
                raise DataURLError("invalid character for parameter attribute")
            start = self.pos
            while True:
                ch = self._peek()
                if ch == "=":
                    break
                if ch == ",":
                    # A bare attribute is only legal as the final `;base64`.
                    word = self.text[start:self.pos]
                    if word != "base64":
                        raise DataURLError(f"expected base64, got {word}")
                    self.result.base64 = True
                    self.pos += 1
                    self._data()
                    return
                if ch == "":
                    raise DataURLError("unterminated parameter sequence")
                if not _is_token(ch):
                    raise DataURLError("invalid character for parameter attribute")
                self.pos += 1
            attr = self.text[start:self.pos]
            self.pos += 1  # the '='
            value = self._param_value()
            if value is not None:
                self.result.params[attr] = value
            ch = self._peek()
            if ch == ",":
                self.pos += 1
                self._data()
                return
            if ch == "":
                raise DataURLError("missing comma before data")
            if ch != ";":
                raise DataURLError("expected semicolon or comma")

    def _param_value(self) -> str | None:
        ch = self._peek()
        if ch == '"':
            self.unquote_next = True
            self.pos += 1
            start = self.pos
            while True:
                ch = self._peek()
                if ch == "":
                    raise DataURLError("unclosed quoted string")
                self.pos += 1
                if ch == "\\":
                    esc = self._peek()
                    if esc == "":
                        # upstream's "unexpected eof" branch is unreachable: EOF sorts as ASCII
                        raise DataURLError("unclosed quoted string")
                    if ord(esc) > 0x7F:
                        raise DataURLError("invalid escaped character")
                    self.pos += 1
                elif ch == '"':
                    return self._emit_value(self.text[start:self.pos - 1]) if self.pos - 1 > start else None
                elif ord(ch) > 0x7F:
                    raise DataURLError("invalid character for parameter value")
        if ch == "":
            raise DataURLError("missing comma before data")
        if not _is_token(ch):
            raise DataURLError("invalid character for parameter value")
        start = self.pos
        while True:
            ch = self._peek()
            if ch in (";", ",") and ch:
                return self._emit_value(self.text[start:self.pos])
            if ch == "":
                raise DataURLError("missing comma before data")
            if not _is_token(ch):
                raise DataURLError("invalid character for parameter value")
            self.pos += 1

    def _emit_value(self, raw: str) -> str:
        if self.unquote_next:
            self.unquote_next = False
            return _go_unquote(raw)
        return unescape(raw).decode("latin-1")

    def _data(self) -> None:
        payload = self.text[self.pos:]
        allowed = (lambda c: c in _BASE64_VALUES or c == "=") if self.result.base64 else _is_url_char
        for ch in payload:
            if not allowed(ch):
                raise DataURLError("invalid data character")
        self.pos = len(self.text)
        self.result.data = go_base64_decode(payload) if self.result.base64 else unescape(payload)


_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                   "\\": "\\", '"': '"'}


def _go_unquote(body: str) -> str:
    """Go strconv.Unquote of a double-quoted literal; any failure is `invalid syntax`."""
    out: list[str] = []
    i = 0
    syntax = DataURLError("invalid syntax")
    while i < len(body):
        ch = body[i]
        if ch == '"' or ch == "\n":
            raise syntax
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 >= len(body):
            raise syntax
        esc = body[i + 1]
        i += 2
        if esc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[esc])
        elif esc in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[esc]
            digits = body[i:i + width]
            if len(digits) != width or any(d not in _HEX for d in digits):
                raise syntax
            code = int(digits, 16)
            if esc != "x" and (code > 0x10FFFF or 0xD800 <= code < 0xE000):
                raise syntax
            out.append(chr(code))
            i += width
        elif esc in "01234567":
            digits = body[i - 1:i + 2]
            if len(digits) != 3 or any(d not in "01234567" for d in digits) or int(digits, 8) > 255:
                raise syntax
            out.append(chr(int(digits, 8)))
            i += 2
        else:
            raise syntax
    return "".join(out)


def decode_url(url: str) -> DataURL:
    """Parse a data URL into media type, parameters and bytes; raise DataURLError like upstream."""
    return _Lexer(url).run()


def decode(url: str) -> bytes:
    """Return the bytes of a data URL (not decompressed); raise DataURLError with upstream's text."""
    return decode_url(url).data


def encode_percent(data: bytes) -> str:
    """`data:,` plus every byte outside RFC 2396 "unreserved" as uppercase `%XX` (MCO inline files)."""
    return "data:," + "".join(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in data)


def encode_base64(data: bytes, mime: str = "text/plain;charset=utf-8") -> str:
    """`data:<mime>;base64,<standard base64>`, the form of MCO controller-generated files."""
    import base64

    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
