"""decode_url parses a header ("data:" up to the data comma) once per distinct header text and
reuses it; the outcome must equal the plain lexer's on every URL, the first time and after."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from machineconfig.ignition import dataurl
from machineconfig.ignition.dataurl import DataURLError


def outcome(func, url):  # type: ignore[no-untyped-def]
    try:
        result = func(url)
        return ("ok", result.media_type, result.subtype, result.params, result.base64, result.data)
    except DataURLError as err:
        return ("error", str(err))


def plain(url: str) -> dataurl.DataURL:
    return dataurl._Lexer(url).run()


# Header pieces that reach the lexer's branches, commas and quotes included: a comma consumed
# unchecked after a leading x, a comma inside a quoted value, bare attributes, escapes.
_PIECES = st.sampled_from([
    "data:", "DATA:", ",", ";", "=", "/", "x", "X", "-", "text", "plain", "image", "x-y", "base64",
    "charset", "utf-8", '"', '\\"', "%41", "%zz", "a", " ", "é", "\x00", "?", "q",
])
_URLS = st.lists(_PIECES, max_size=12).map("".join)
_PAYLOADS = st.sampled_from(["", "aGk=", "abc", "a%20b", "a b", ",", "%", "YQ==,x"])


@given(_URLS, _PAYLOADS)
@settings(max_examples=800)
def test_memoised_headers_decode_as_the_lexer(url: str, payload: str) -> None:
    dataurl._HEADERS.clear()  # each example stores its header, then reads it back
    for text in ("data:" + url + payload, url + payload, url + "," + payload):
        expected = outcome(plain, text)
        assert outcome(dataurl.decode_url, text) == expected  # first time: parsed, maybe kept
        assert outcome(dataurl.decode_url, text) == expected  # again: from the memory


def test_known_tricky_headers() -> None:
    for text in ["data:x,/y,abc", "data:x,/y;base64,aGk=", 'data:;a="1,2",b',
                 'data:;a="1,2";base64,aGk=', "data:text/plain;charset=utf-8;base64,aGk=",
                 "data:;base64,aGk", "data:,a,b",
                 "data:;a=%41,x", "data:;a=%zz,x", "data:" + "a" * 2000 + "/b,c"]:
        for _ in range(2):
            assert outcome(dataurl.decode_url, text) == outcome(plain, text)
    # a result's parameters are its own: changing them changes no later result
    first = dataurl.decode_url("data:text/plain;charset=utf-8,a")
    first.params["charset"] = "changed"
    assert dataurl.decode_url("data:text/plain;charset=utf-8,b").params == {"charset": "utf-8"}


def test_decoded_once_keeps_bytes_only_inside_its_block() -> None:
    url = "data:;base64,aGVsbG8="
    with dataurl.decoded_once(budget=100):
        assert dataurl.decode(url) == b"hello"
        assert dataurl._MEMO is not None and dataurl._MEMO.entries == {url: b"hello"}
        with dataurl.decoded_once():
            assert dataurl.decode(url) == b"hello"
        assert dataurl._MEMO is not None  # a nested block shares the outer memory
        big = "data:," + "z" * 200
        assert dataurl.decode(big) == b"z" * 200
        assert big not in dataurl._MEMO.entries  # over the budget: decoded, not kept
    assert dataurl._MEMO is None
    try:
        with dataurl.decoded_once():
            dataurl.decode("data:;base64,a")
    except DataURLError as err:
        assert str(err) == "illegal base64 data at input byte 0"
    assert dataurl._MEMO is None
