"""The emitter's fast paths against the full scalar analysis they short-cut.

`plain_as_is` lets the emitter write a string unchanged; that must only happen when
`scalar_event` asks for a plain scalar and `analyze` allows it as a block scalar and as a simple
key (no line breaks). `json_round_trip`'s one-pass check must agree with `check_reader` and the
NEL folding, and the memoized key order with `sorted_keys`.
"""
from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from machineconfig import yamlv2
from machineconfig.yamlv2 import emitter
from machineconfig.yamlv2.resolve import PLAIN, plain_as_is, scalar_event
from machineconfig.yamlv2.scalar import _Analysis

_ALPHABET = st.sampled_from(list("abyYnNtTfFoO~-+.:#,[]{}&*!|>'\"%@`?=/_<$^();\\ \t\n\r0123456789eExX")
                            + ["\x85", "\x7f", "\x9f", "\ufffe", "\u2028", "é", "\x00", "\ufeff"])
_TEXT = st.one_of(st.text(_ALPHABET, max_size=12), st.text(max_size=12),
                  st.sampled_from(["yes", "No", "~", "<<", "null", ".inf", "0x1F", "1_000", "12:30",
                                   "2001-12-14", "data:,a%20b", "a:", "a:b", "---x", "...x", "-x", "-",
                                   "/etc/x", "=x", "\\x"]))


def _reference_plain(text: str) -> bool:
    """What the full path decides: plain requested, allowed in block and simple-key context."""
    if scalar_event(text) != (text, PLAIN):
        return False
    info = _Analysis(text)
    return bool(text) and info.block_plain and not info.multiline


@given(_TEXT)
@settings(max_examples=3000)
@example("yes")
@example("<<")
@example("a:")
@example("data:,%23%20x")
def test_plain_as_is_implies_plain(text: str) -> None:
    if plain_as_is(text):
        assert _reference_plain(text)


@given(_TEXT)
@settings(max_examples=1000)
def test_fast_path_output_equals_full_path(text: str) -> None:
    for value in ({text: text}, [text, {"k": text}], {"a": [text], text + "z": 5}):
        fast = yamlv2.marshal(value)
        emitter._KEY_ORDERS.clear()
        emitter._SIMPLE_KEYS.clear()
        orig = emitter.plain_as_is
        emitter.plain_as_is = lambda _t: False  # type: ignore[assignment]
        try:
            slow = yamlv2.marshal(value)
        finally:
            emitter.plain_as_is = orig  # type: ignore[assignment]
        assert fast == slow


@given(st.integers(min_value=-2**70, max_value=2**70))
def test_int_fast_path(n: int) -> None:
    assert scalar_event(n) == (str(n), PLAIN)
    info = _Analysis(str(n))
    assert info.block_plain and not info.multiline


_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), _TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(_TEXT, inner, max_size=4)),
    max_leaves=20)


def _reference_round_trip(value: object) -> object:
    yamlv2.check_reader(value)
    if not any("\x85" in t for t in yamlv2._strings(value)):
        return value
    return yamlv2._map_strings(value)


@given(_JSON)
@settings(max_examples=1000)
def test_json_round_trip_fast_equals_reference(value: object) -> None:
    try:
        expected: object = _reference_round_trip(value)
    except yamlv2.YAMLError as e:
        with pytest.raises(yamlv2.YAMLError, match=str(e)):
            yamlv2.json_round_trip(value)
        return
    assert yamlv2.json_round_trip(value) == expected


def test_json_round_trip_non_json_keys_fall_back() -> None:
    assert yamlv2.json_round_trip({("a", 1): "x"}) == {("a", 1): "x"}

    class Key:
        def __str__(self) -> str:
            return "a\x7f"

    with pytest.raises(yamlv2.YAMLError):
        yamlv2.json_round_trip({Key(): "x"})


@given(st.lists(st.text(st.sampled_from(list("ab01Zé_ 9")), max_size=5), max_size=8, unique=True))
def test_key_order_memo_equals_sorted_keys(keys: list[str]) -> None:
    value = dict.fromkeys(keys, 1)
    assert emitter._key_order(value) == yamlv2.sorted_keys(keys)
    assert emitter._key_order(value) == yamlv2.sorted_keys(keys)  # memoized answer too
