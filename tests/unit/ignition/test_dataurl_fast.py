"""The vectorised data URL decoder against the simple per-character reference it replaced.

The reference below is the original implementation (a literal port of the Go library's loops);
the fast paths must agree with it on every string: same bytes, or the same error text.
"""
from __future__ import annotations

import base64
import urllib.parse

from hypothesis import example, given, settings
from hypothesis import strategies as st

from machineconfig.ignition import dataurl
from machineconfig.ignition.dataurl import DataURLError

_HEX = frozenset("0123456789abcdefABCDEF")


def ref_unescape(text: str) -> bytes:
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
        for k in (1, 2):
            if i + k >= len(text):
                raise DataURLError("rfc2396: unexpected end of unescape sequence")
            if text[i + k] not in _HEX:
                raise DataURLError("rfc2396: invalid char 0x25 in unescape sequence")
        out.append(int(text[i + 1:i + 3], 16))
        i += 3
    return bytes(out)


def ref_base64(text: str) -> bytes:
    values = {c: i for i, c in enumerate(dataurl._BASE64_ALPHABET)}
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
                raise DataURLError(f"illegal base64 data at input byte {si - j}")
            ch = text[si]
            si += 1
            value = values.get(ch)
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


class _RefLexer(dataurl._Lexer):
    """The header lexer is shared; data and parameter values use the reference loops."""

    def _data(self) -> None:
        payload = self.text[self.pos:]
        if self.result.base64:
            ok = all(c in dataurl._BASE64_VALUES or c == "=" for c in payload)
        else:
            ok = all(dataurl._is_url_char(c) for c in payload)
        if not ok:
            raise DataURLError("invalid data character")
        self.pos = len(self.text)
        self.result.data = ref_base64(payload) if self.result.base64 else ref_unescape(payload)

    def _emit_value(self, raw: str) -> str:
        if self.unquote_next:
            self.unquote_next = False
            return dataurl._go_unquote(raw)
        return ref_unescape(raw).decode("latin-1")


def ref_encode_percent(data: bytes) -> str:
    return "data:," + "".join(chr(b) if b in dataurl._UNRESERVED else f"%{b:02X}" for b in data)


def outcome(func, arg):  # type: ignore[no-untyped-def]
    try:
        return ("ok", func(arg))
    except DataURLError as e:
        return ("error", str(e))


# Pieces that reach every branch: escapes good and bad, padding, forbidden and non-ASCII characters.
_PIECES = st.sampled_from([
    "%", "%4", "%41", "%zz", "%a", "%G1", "%%", "=", "==", "===", "a", "Z", "0", "+", "/", "-", "_",
    "aGk", "aGVsbG8", "AAEC", "\r", "\n", "\r\n", " ", "#", '"', "\\", "\x00", "\x7f", "\x1f", "é",
    "\u20ac", "~", "*", "'", "(", ")", "!", "<", "^", "`", "{", "|", "?", ":", "@", "&", ";", ",",
])
_PAYLOADS = st.one_of(st.lists(_PIECES, max_size=20).map("".join), st.text(max_size=30),
                      st.text(alphabet=dataurl._BASE64_ALPHABET + "=\r\n", max_size=30))
_HEADERS = st.sampled_from([
    "data:,", "data:;base64,", "data:text/plain,", "data:text/plain;charset=utf-8;base64,",
    "data:application/octet-stream;base64,", "data:;a=%41%zz,", "data:;a=%4,", "data:;a=b%41;base64,",
    'data:;a="x\\"y",', "data:x-y/z;base64,", "data:text/plain;base64", "data:", "DATA:,", "data:;base64;",
])


@given(_PAYLOADS)
@settings(max_examples=400)
@example("%")
@example("ab%4")
@example("é%zz")
@example("%zzé")
@example("%4é")
@example("\\%41\\x41\\\\%5C")
def test_unescape_matches_reference(text: str) -> None:
    assert outcome(dataurl.unescape, text) == outcome(ref_unescape, text)


@given(_PAYLOADS)
@settings(max_examples=400)
@example("a===")
@example("ab=")
@example("ab=x")
@example("abc==")
@example("ab==\r\n")
@example("aGk")
@example("aGk=\nx")
@example("ab/+AB+/")
@example("ab/=")
def test_base64_matches_reference(text: str) -> None:
    assert outcome(dataurl.go_base64_decode, text) == outcome(ref_base64, text)


@given(_HEADERS, _PAYLOADS)
@settings(max_examples=600)
def test_decode_url_matches_reference(header: str, payload: str) -> None:
    url = header + payload
    fast = outcome(dataurl.decode_url, url)
    ref = outcome(lambda u: _RefLexer(u).run(), url)
    assert fast == ref


@given(st.binary(max_size=300))
def test_encode_percent_matches_reference(data: bytes) -> None:
    assert dataurl.encode_percent(data) == ref_encode_percent(data)
    assert dataurl.decode(dataurl.encode_percent(data)) == data


def test_encode_percent_every_byte() -> None:
    data = bytes(range(256)) * 2
    assert dataurl.encode_percent(data) == ref_encode_percent(data)


@given(st.binary(max_size=300))
def test_base64_fast_path_round_trips(data: bytes) -> None:
    encoded = base64.b64encode(data).decode()
    assert dataurl.go_base64_decode(encoded) == data == ref_base64(encoded)


def test_large_payloads_decode() -> None:
    # Megabyte payloads go through the regex/bytes paths without recursion or per-byte loops.
    data = bytes(range(256)) * 8192
    assert dataurl.decode(dataurl.encode_percent(data)) == data
    assert dataurl.decode(dataurl.encode_base64(data)) == data
    assert dataurl.decode("data:," + urllib.parse.quote(data, safe="")) == data
    big = "data:," + "a" * (1 << 21) + "%4"
    try:
        dataurl.decode(big)
    except DataURLError as e:
        assert str(e) == "rfc2396: unexpected end of unescape sequence"
    else:
        raise AssertionError("accepted a truncated escape")
