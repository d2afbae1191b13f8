"""RFC 2397 data URLs: a decoder with the strictness and error texts of the Go `dataurl` library
Ignition uses, and the two encodings the MCO writes (percent-escaped and base64).

`decode_contents` is what a file entry stands for: the data URL decoded, then gunzipped as a
stream that stops at a size cap (MAX_DECODED_BYTES, 256 MiB per file unless the environment's
MACHINECONFIG_MAX_FILE_BYTES says otherwise), so a small config cannot expand into gigabytes.
"""
from __future__ import annotations

import binascii
import contextlib
import functools
import hashlib
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote_from_bytes

from machineconfig.errors import MachineConfigError

__all__ = ["DataURL", "DataURLError", "ContentsTooLargeError", "contents_digest", "decode",
           "decode_contents", "decode_url", "decoded_once", "encode_base64", "encode_percent",
           "max_decoded_bytes"]

DATA_PREFIX = "data:"
MAX_DECODED_BYTES = 256 << 20
MAX_DECODED_BYTES_ENV = "MACHINECONFIG_MAX_FILE_BYTES"
_GUNZIP_CHUNK = 1 << 20

# RFC 2045 tspecials: never part of a token.
_TSPECIALS = frozenset('()<>@,;:\\"/[]?=')
# Characters the plain-data lexer refuses (RFC 2396 delims and unwise), besides controls.
_DATA_FORBIDDEN = frozenset(' <>#"{}|\\^[]`')
_BASE64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_BASE64_VALUES = {c: i for i, c in enumerate(_BASE64_ALPHABET)}
_HEX = frozenset("0123456789abcdefABCDEF")
# Bytes left alone by the MCO's percent encoding (RFC 2396 "unreserved").
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*'()")
# urllib's quote always keeps letters, digits and "_.-~"; these make up the rest of _UNRESERVED.
_QUOTE_SAFE = "!*'()"

# Whole-string versions of the per-character rules, for payloads that can be megabytes long.
# A data character: printable ASCII (no controls, no DEL) outside _DATA_FORBIDDEN.
_NOT_URL_CHAR = re.compile("[^" + re.escape("".join(
    chr(c) for c in range(0x21, 0x7F) if chr(c) not in _DATA_FORBIDDEN)) + "]")
_NOT_BASE64_CHAR = re.compile("[^" + re.escape(_BASE64_ALPHABET) + "=]")
_NON_ASCII = re.compile("[^\x00-\x7f]")
# A '%' not followed by two hex digits (the digits of a good escape can never be a '%').
_BAD_ESCAPE = re.compile("%(?![0-9a-fA-F]{2})")


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
    """Percent-decode like the library's rfc2396 Unescape ('+' stays '+').

    Errors are those of a left-to-right scan: the first non-ASCII character or bad escape wins.
    """
    bad = _BAD_ESCAPE.search(text)
    if not text.isascii():
        non_ascii = _NON_ASCII.search(text)
        assert non_ascii is not None
        if bad is None or non_ascii.start() < bad.start():
            raise DataURLError("rfc2396: non-ASCII char detected")
    if bad is None:
        if "%" not in text:
            return text.encode("ascii")
        # Every escape is valid and the text is ASCII: turn %XX into \\xXX (backslashes doubled
        # first) and let the C unicode_escape codec decode the lot; latin-1 maps chars to bytes.
        return (text.replace("\\", "\\\\").replace("%", "\\x").encode("ascii")
                .decode("unicode_escape").encode("latin-1"))
    # The library reports the '%' itself (0x25) whichever digit is wrong.
    i = bad.start()
    if i + 1 >= len(text):
        raise DataURLError("rfc2396: unexpected end of unescape sequence")
    if text[i + 1] not in _HEX:
        raise DataURLError("rfc2396: invalid char 0x25 in unescape sequence")
    if i + 2 >= len(text):
        raise DataURLError("rfc2396: unexpected end of unescape sequence")
    raise DataURLError("rfc2396: invalid char 0x25 in unescape sequence")


def _base64_padded(text: str) -> bytes:
    """go_base64_decode for text made of alphabet characters and '=' only (what the lexer lets
    through), without a per-character loop: the padding rules decide, binascii decodes."""
    n = len(text)
    pad = text.find("=")
    if pad < 0:
        if n % 4:
            # Missing padding: Go reports where the incomplete quantum started.
            raise DataURLError(f"illegal base64 data at input byte {n - n % 4}")
    else:
        filled = pad % 4  # alphabet characters of the quantum the '=' is in
        if filled < 2:
            raise DataURLError(f"illegal base64 data at input byte {pad}")
        end = pad + 1
        if filled == 2:
            if end == n:
                raise DataURLError(f"illegal base64 data at input byte {n}")
            if text[end] != "=":
                raise DataURLError(f"illegal base64 data at input byte {pad}")
            end += 1
        if end < n:
            raise DataURLError(f"illegal base64 data at input byte {end}")
    # Well-formed and padded: binascii ignores non-zero trailing bits, as Go's StdEncoding does.
    return binascii.a2b_base64(text)


def go_base64_decode(text: str) -> bytes:
    """Standard padded base64 with Go's `illegal base64 data at input byte N` error offsets."""
    if _NOT_BASE64_CHAR.search(text) is None:
        return _base64_padded(text)
    # Line breaks (skipped) or bad characters: Go's quantum loop, for its exact error offsets.
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
        self.result.data = _payload(self.text[self.pos:], self.result.base64)
        self.pos = len(self.text)


def _payload(payload: str, base64: bool) -> bytes:
    """The data after the comma, checked and decoded (base64 or percent-escaped)."""
    if base64:
        bad = _NOT_BASE64_CHAR.search(payload) is not None
    elif payload.isascii() and payload.isprintable():
        # printable ASCII: only the few forbidden characters can be wrong (substring scans)
        bad = any(ch in payload for ch in _DATA_FORBIDDEN)
    else:
        bad = _NOT_URL_CHAR.search(payload) is not None
    if bad:
        raise DataURLError("invalid data character")
    return go_base64_decode(payload) if base64 else unescape(payload)


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


# Parsed headers ("data:" up to the data comma) by their text: a config repeats a few headers
# over thousands of files. Only headers without a '"' are kept (a quoted parameter value may
# hold a comma, so there the first comma need not end the header; without one the lexer reads
# exactly the text up to the first comma before the data, whatever follows it).
_HEADERS: dict[str, tuple[str, str, tuple[tuple[str, str], ...], bool]] = {}
_HEADERS_MAX = 256
_HEADER_MAX_CHARS = 1024


def decode_url(url: str) -> DataURL:
    """Parse a data URL into media type, parameters and bytes; raise DataURLError like upstream."""
    comma = url.find(",", 0, _HEADER_MAX_CHARS)
    if comma < 0:
        return _Lexer(url).run()
    header = url[:comma + 1]
    known = _HEADERS.get(header)
    if known is None:
        if '"' in header:
            return _Lexer(url).run()
        try:
            parsed = _Lexer(header).run()  # the header alone: its data is empty
        except DataURLError:
            return _Lexer(url).run()  # the same error, from the whole URL
        known = (parsed.media_type, parsed.subtype, tuple(parsed.params.items()), parsed.base64)
        if len(_HEADERS) < _HEADERS_MAX:
            _HEADERS[header] = known
    media_type, subtype, params, base64 = known
    return DataURL(media_type, subtype, dict(params), base64, _payload(url[comma + 1:], base64))


class _DecodedMemo:
    """Data URL bytes by URL, kept while `decoded_once()` is active, up to a byte budget."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        self.entries: dict[str, bytes] = {}


_MEMO: _DecodedMemo | None = None
DECODED_ONCE_BUDGET = 64 << 20


@contextlib.contextmanager
def decoded_once(budget: int = DECODED_ONCE_BUDGET) -> Iterator[None]:
    """Within the block, `decode` remembers each data URL's bytes (up to `budget` bytes in
    all) so one update decodes a source once for validation and writing; forgotten on exit.
    Nested blocks share the outer one's memory."""
    global _MEMO
    if _MEMO is not None:
        yield
        return
    _MEMO = _DecodedMemo(budget)
    try:
        yield
    finally:
        _MEMO = None


def decode(url: str) -> bytes:
    """Return the bytes of a data URL (not decompressed); raise DataURLError with upstream's text."""
    memo = _MEMO
    if memo is None:
        return decode_url(url).data
    data = memo.entries.get(url)
    if data is None:
        data = decode_url(url).data
        if memo.size + len(data) <= memo.budget:
            memo.entries[url] = data
            memo.size += len(data)
    return data


def encode_percent(data: bytes) -> str:
    """`data:,` plus every byte outside RFC 2396 "unreserved" as uppercase `%XX` (MCO inline files)."""
    return "data:," + quote_from_bytes(data, safe=_QUOTE_SAFE)


def encode_base64(data: bytes, mime: str = "text/plain;charset=utf-8") -> str:
    """`data:<mime>;base64,<standard base64>`, the form of MCO controller-generated files."""
    import base64

    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


class ContentsTooLargeError(DataURLError):
    """A file's decoded (decompressed) contents exceed the size cap."""


def max_decoded_bytes() -> int:
    """The cap on one file's decoded contents (the environment may lower or raise it)."""
    text = os.environ.get(MAX_DECODED_BYTES_ENV, "")
    try:
        return int(text) if text else MAX_DECODED_BYTES
    except ValueError:
        raise DataURLError(f"{MAX_DECODED_BYTES_ENV}={text!r} is not a byte count") from None


def _too_large(what: str, limit: int, how: str) -> ContentsTooLargeError:
    return ContentsTooLargeError(f"file {what or '(unnamed)'}: contents exceed {limit} bytes "
                                 f"{how} (the limit, {MAX_DECODED_BYTES_ENV})")


def gunzip_capped(data: bytes, limit: int, what: str = "") -> bytes:
    """gzip (several members allowed, as Go's reader) decompressed as a stream: never more
    than `limit` + 1 MiB of output exists at once, and more than `limit` bytes is an error."""
    if not data:
        return b""  # as gzip.decompress: no members, no bytes
    out = bytearray()
    rest = data
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        pending = rest
        while pending:
            out += inflater.decompress(pending, _GUNZIP_CHUNK)
            if len(out) > limit:
                raise _too_large(what, limit, "after gzip decompression")
            pending = inflater.unconsumed_tail
            if inflater.eof:
                break
        if not inflater.eof:
            out += inflater.flush()
            if not inflater.eof:
                raise DataURLError(f"file {what or '(unnamed)'}: gzip data is truncated")
        if len(out) > limit:
            raise _too_large(what, limit, "after gzip decompression")
        rest = inflater.unused_data
        if not rest:
            return bytes(out)


def decode_contents(source: str, compression: str = "", what: str = "",
                    limit: int | None = None) -> bytes:
    """The bytes a file entry's `contents` stand for: decoded, gunzipped when `compression` is
    "gzip", at most `limit` bytes (default `max_decoded_bytes()`); `what` names the file."""
    if limit is None:
        limit = max_decoded_bytes()
    try:
        data = decode(source)
        if compression == "gzip":
            return gunzip_capped(data, limit, what)
    except zlib.error as err:
        raise DataURLError(f"file {what or '(unnamed)'}: bad gzip data: {err}") from None
    if len(data) > limit:
        raise _too_large(what, limit, "")
    return data


@functools.lru_cache(maxsize=4096)
def contents_digest(source: str, compression: str = "", what: str = "") -> tuple[int, str]:
    """(size, SHA-256 hex) of `decode_contents`: remembered, where the bytes never are."""
    data = decode_contents(source, compression, what)
    return len(data), hashlib.sha256(data).hexdigest()
