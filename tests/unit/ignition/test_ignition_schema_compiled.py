"""The compiled schema conversions and the validator's zero-struct skip against their references.

`schema.to_typed`, `to_canonical` and `typed_defaults` are generated Python per (struct, minor);
the table-driven `*_reference` functions define them. `validate` skips walking a struct that is
exactly its zero value with no JSON behind it when that zero value finds nothing; the findings
must be those of the full walk, also for values that are equal but not identical (False for 0).
"""
from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from machineconfig.ignition import parse as ign_parse
from machineconfig.ignition import schema, validate
from machineconfig.ignition.parse import IgnitionParseError
from tests.unit.ignition.test_ignition_merge_translate_properties import config_strategy

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
MINORS = st.integers(0, schema.LATEST_MINOR)
_ODD = st.one_of(st.none(), st.booleans(), st.integers(-1, 2), st.floats(0, 1), st.just(""),
                 st.just("x"), st.just([]), st.just({}), st.just(["a"]), st.just({"zz": 1}))


def _mutate(value: Any, data: st.DataObject) -> Any:
    """Replace a few values anywhere in the tree by odd ones (wrong types, zero look-alikes)."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out[k] = data.draw(_ODD) if data.draw(st.integers(0, 9)) == 0 else _mutate(v, data)
        if data.draw(st.integers(0, 9)) == 0:
            out[data.draw(st.sampled_from(["unknown", "mode", "overwrite", "user", "contents"]))] = \
                data.draw(_ODD)
        return out
    if isinstance(value, list):
        return [_mutate(v, data) for v in value]
    return value


@SETTINGS
@given(MINORS, st.data())
def test_compiled_conversions_equal_reference(minor: int, data: st.DataObject) -> None:
    config = _mutate(data.draw(config_strategy(minor)), data)
    typed = schema.to_typed(config, schema.ROOT, minor)
    reference = schema.to_typed_reference(config, schema.ROOT, minor)
    assert json.dumps(typed) == json.dumps(reference)  # same values, types and key order
    try:
        expected: Any = schema.to_canonical_reference(typed, schema.ROOT, minor)
    except (AttributeError, TypeError) as e:
        with pytest.raises(type(e)):
            schema.to_canonical(typed, schema.ROOT, minor)
        return
    assert json.dumps(schema.to_canonical(typed, schema.ROOT, minor)) == json.dumps(expected)


@pytest.mark.parametrize("minor", range(schema.LATEST_MINOR + 1))
@pytest.mark.parametrize("struct", sorted(schema.STRUCTS))
def test_compiled_defaults_equal_reference(struct: str, minor: int) -> None:
    fast = schema.typed_defaults(struct, minor)
    assert json.dumps(fast) == json.dumps(schema.typed_defaults_reference(struct, minor))
    assert fast is not schema.typed_defaults(struct, minor)  # a fresh tree each time
    assert schema.to_canonical(fast, struct, minor, root=False) == \
        schema.to_canonical_reference(fast, struct, minor, root=False)


def _without_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validate, "_is_zero", lambda value, struct, minor: False)


@SETTINGS
@given(MINORS, st.data())
def test_zero_struct_skip_finds_the_same(minor: int, data: st.DataObject) -> None:
    config = _mutate(data.draw(config_strategy(minor)), data)
    typed = schema.to_typed(config, schema.ROOT, minor)

    def outcome() -> Any:
        try:  # odd values may crash a rule (wrong types never get past the binder): alike, then
            return validate.typed_findings(typed, minor)
        except Exception as e:  # noqa: BLE001
            return repr(e)
    fast = outcome()
    with pytest.MonkeyPatch.context() as mp:
        _without_skip(mp)
        slow = outcome()
    assert fast == slow


@SETTINGS
@given(MINORS, st.data())
def test_zero_struct_skip_parse_reports_the_same(minor: int, data: st.DataObject) -> None:
    config = _mutate(data.draw(config_strategy(minor)), data)
    raw = json.dumps(config).encode()

    def outcome() -> Any:
        try:
            result = ign_parse.parse(raw)
        except IgnitionParseError as e:
            return ("error", e.reason, e.report.entries)
        return ("ok", result.config, result.report.entries)
    fast = outcome()
    with pytest.MonkeyPatch.context() as mp:
        _without_skip(mp)
        slow = outcome()
    assert fast == slow


@SETTINGS
@given(MINORS, MINORS, st.data())
def test_compiled_reshape_translates_like_reference(src: int, dst: int, data: st.DataObject) -> None:
    """translate() with the compiled reshape against translate() with the table-driven one. On
    mutated (non-canonical) input both may crash, not necessarily with the same exception type;
    translation errors and results must be equal."""
    from machineconfig.ignition import translate as ign_translate
    from machineconfig.ignition import translate3

    config = data.draw(config_strategy(src))
    if data.draw(st.booleans()):
        config = _mutate(config, data)

    def outcome() -> Any:
        try:
            return json.dumps(ign_translate.translate(config, schema.VERSIONS[dst]))
        except ign_translate.TranslationError as e:
            return repr(e)
        except (AttributeError, TypeError):
            return "crashed on non-canonical input"
    fast = outcome()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(translate3, "reshape", translate3.reshape_reference)
        slow = outcome()
    assert fast == slow
