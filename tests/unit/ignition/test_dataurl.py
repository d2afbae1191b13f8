"""Data URL decoding with the Go dataurl library's strictness, and the MCO's two encodings."""
from __future__ import annotations

import pytest

from machineconfig.ignition.dataurl import DataURLError, decode, decode_url, encode_base64, encode_percent


@pytest.mark.parametrize("url, data", [
    ("data:,hello", b"hello"),
    ("data:,", b""),
    ("data:;base64,", b""),
    ("data:,a+b", b"a+b"),  # '+' is not a space
    ("data:,%41%6a%4A", b"AjJ"),  # hex digits in either case
    ("data:;base64,aGVsbG8=", b"hello"),
    ("data:;charset=utf-8,x", b"x"),
    ("data:text/plain;charset=utf-8;base64,aGk=", b"hi"),
    ("data:application/octet-stream;base64,AAEC", b"\x00\x01\x02"),
    ("data:x-custom/thing,y", b"y"),
    ('data:text/plain;a="q u",z', b"z"),
])
def test_decode_accepts(url: str, data: bytes) -> None:
    assert decode(url) == data


@pytest.mark.parametrize("url, message", [
    ("DATA:,x", "missing data prefix"),
    ("http://x", "missing data prefix"),
    ("data:foo/bar,x", "invalid media type"),
    ("data:hello", "missing media type slash"),
    ("data:", "missing comma before data"),
    ("data:text/plain", "incomplete media type"),
    ("data:;base64;charset=x,abc", "invalid character for parameter attribute"),
    ("data:;foo,abc", "expected base64, got foo"),
    ("data:,a b", "invalid data character"),
    ("data:,a#b", "invalid data character"),
    ('data:,a"b', "invalid data character"),
    ("data:,\u00e9", "invalid data character"),
    ("data:;base64,a-b_", "invalid data character"),
    ("data:,%zz", "rfc2396: invalid char 0x25 in unescape sequence"),
    ("data:,%4", "rfc2396: unexpected end of unescape sequence"),
    ("data:,%", "rfc2396: unexpected end of unescape sequence"),
    ("data:;base64,aGVsbG8", "illegal base64 data at input byte 4"),
    ("data:;base64,a===", "illegal base64 data at input byte 1"),
    ("data:;base64,aGV=sbG8", "illegal base64 data at input byte 4"),
    ('data:text/plain;a="unclosed,x', "unclosed quoted string"),
    ("data:text/plain;a=b", "missing comma before data"),
])
def test_decode_rejects(url: str, message: str) -> None:
    with pytest.raises(DataURLError) as info:
        decode(url)
    assert str(info.value) == message


def test_media_type_is_reported() -> None:
    parsed = decode_url("data:text/html;charset=utf-8,x")
    assert (parsed.media_type, parsed.subtype, parsed.params) == ("text", "html", {"charset": "utf-8"})
    assert decode_url("data:,x").params == {"charset": "US-ASCII"}


def test_encode_percent_matches_mco() -> None:
    assert encode_percent(b"a b/c\n~*'()!-_.") == "data:,a%20b%2Fc%0A~*'()!-_."
    assert encode_percent(b"\x00\xff") == "data:,%00%FF"
    assert encode_percent(b"") == "data:,"


def test_encode_base64_matches_mco() -> None:
    assert encode_base64(b"hello") == "data:text/plain;charset=utf-8;base64,aGVsbG8="


@pytest.mark.parametrize("data", [b"", b"x", b"\x00\x01\xfe\xff", bytes(range(256)), "héllo wörld\n".encode()])
def test_round_trips(data: bytes) -> None:
    assert decode(encode_percent(data)) == data
    assert decode(encode_base64(data)) == data
