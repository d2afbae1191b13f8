"""The C-scanner fast path of the Ignition parser against the exact decoder.

`decode.parse_json_fast` must build the exact decoder's tree (positions aside) or give up (None),
and never accept what the exact decoder refuses. `parse.parse` tries the fast tree first and falls
back to the exact one on any error: with the fast path disabled the results must be the same -
configs, versions, error reasons and every report entry with its line and column - on generated
configs, mutated ones (wrong types, unknown and duplicate keys, broken syntax) and random bytes.
"""
from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from machineconfig.ignition import parse as ign_parse
from machineconfig.ignition.decode import JNode, JSONSyntaxError, parse_json, parse_json_fast
from machineconfig.ignition.parse import IgnitionParseError
from machineconfig.ignition.schema import LATEST_MINOR
from tests.unit.ignition.test_ignition_merge_translate_properties import config_strategy

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _shape(node: JNode) -> Any:
    return (node.kind, node.value, [(m.key, _shape(m.node)) for m in node.members],
            [_shape(i) for i in node.items])


def _outcome(raw: bytes) -> Any:
    try:
        result = ign_parse.parse(raw)
    except IgnitionParseError as e:
        return ("error", e.reason, e.report.entries)
    return ("ok", result.version, result.config, result.typed, result.report.entries)


def _exact_outcome(raw: bytes) -> Any:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ign_parse, "parse_json_fast", lambda data: None)
        return _outcome(raw)


def _check(raw: bytes) -> None:
    fast = parse_json_fast(raw)
    try:
        exact = parse_json(raw)
    except JSONSyntaxError:
        assert fast is None
    else:
        if fast is not None:
            assert _shape(fast) == _shape(exact)
    assert _outcome(raw) == _exact_outcome(raw)


_JUNK = st.sampled_from(['"', "{", "}", "[", "]", ",", ":", "1", "-", "e", "null", "true", " ",
                         "\\", "\\u00e9", "\\ud800", "\xe9", "\x00", "\n", '"mode":', '"x":1,'])
_ODD = st.sampled_from([None, True, False, 0, -1, 1.5, 1e400, 2**64, "", "x", "0755", [], {},
                        ["a"], {"unknownKey": 1}, {"source": 5}, [{"path": 1}]]).map(copy.deepcopy)


@st.composite
def _mutated_config(draw: st.DrawFn) -> bytes:
    config: dict[str, Any] = draw(config_strategy(draw(st.integers(0, LATEST_MINOR))))
    config["ignition"]["version"] = draw(st.sampled_from(
        [config["ignition"]["version"], "3.4.0", "3.5.0", "3.6.0", "2.2.0", "3.9.0", "x"]))
    # a few odd values at random places, and maybe an unknown or a duplicate key
    for _ in range(draw(st.integers(0, 3))):
        target: Any = config
        while isinstance(target, dict) and target and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(target)))
            if isinstance(target[key], (dict, list)) and target[key]:
                nxt = target[key]
                target = nxt if isinstance(nxt, dict) else nxt[0]
            else:
                break
        if isinstance(target, dict):
            target[draw(st.sampled_from(sorted(target) + ["unknownKey", "Path", "MODE"]))] = draw(_ODD)
    text = json.dumps(config, indent=draw(st.sampled_from([None, 1, 2])))
    if draw(st.booleans()):
        # a duplicate of the first member, or junk spliced in at a random place
        if draw(st.booleans()) and text.startswith("{") and len(text) > 2:
            text = '{"storage":' + json.dumps(draw(_ODD)) + "," + text[1:]
        else:
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(_JUNK) + text[at:]
    return text.encode("utf-8", "surrogatepass")


@SETTINGS
@given(st.integers(0, LATEST_MINOR).flatmap(config_strategy))
def test_generated_configs_parse_alike(config: dict[str, Any]) -> None:
    _check(json.dumps(config).encode())


@SETTINGS
@given(_mutated_config())
def test_mutated_configs_parse_alike(raw: bytes) -> None:
    _check(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60))
def test_random_bytes_parse_alike(raw: bytes) -> None:
    _check(raw)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='{}[]",:0123456789.-+eE truefalsnl\\/\n\t\ufeff\xe9', max_size=60))
def test_json_shaped_text_parses_alike(text: str) -> None:
    _check(text.encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("raw", [
    b'{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/a","mode":"420"}]}}',
    b'{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/a","unknown":1}]}}',
    b'{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/a"},{"path":"/a"}]}}',
    b'{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/a","mode":1e3}]}}',
    b'{"ignition":{"version":"3.4.0"},"ignition":{"version":"3.2.0"}}',
    b'{"ignition":{"version":"3.4.0","version":null}}',
    b'{"ignition":{"version":"3.4.0"},"systemd":{"units":[{"name":"a.service","contents":"[Unit]\\n\\ud800"}]}}',
    b'\xef\xbb\xbf{"ignition":{"version":"3.4.0"}}',
    b'{"ignition":{"version":"3.4.0"}} x',
    b'{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"rel","contents":{"source":"data:,%"}}]}}',
])
def test_known_cases_parse_alike(raw: bytes) -> None:
    _check(raw)


# ---- the tree built from the loaded object (decode.tree_of_object) ---------------------------

_KEYS = st.one_of(st.text(max_size=4), st.sampled_from(["\ud800", "a\\ud83d", "1"]),
                  st.integers(-3, 3), st.booleans(), st.none())
_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=10**30),
                    st.floats(), st.text(max_size=6),
                    st.sampled_from(["\udc80", "x\\udabc", "\\ud800", "é", "\x00", "𝄞"]))
_OBJECTS = st.recursive(_LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.tuples(inner, inner),
    st.dictionaries(_KEYS, inner, max_size=3)), max_leaves=12)


@SETTINGS
@given(_OBJECTS)
def test_the_tree_of_a_loaded_object_is_the_tree_of_its_dumped_bytes(value: Any) -> None:
    from machineconfig.ignition.decode import tree_of_object
    from machineconfig.mcoparse import raw_config
    try:
        raw = raw_config(value)
    except (TypeError, ValueError):
        return  # the object has no JSON text: nothing to compare with
    if raw is None:
        return  # None is "no config", as MCO's RawExtension
    tree = tree_of_object(value, raw)
    if tree is not None:
        decoded = parse_json_fast(raw)
        assert decoded is not None and _shape(tree) == _shape(decoded)


@SETTINGS
@given(config_strategy(LATEST_MINOR))
def test_a_rendered_config_parses_the_same_from_its_object(config: dict[str, Any]) -> None:
    from machineconfig import mcoparse
    from machineconfig.rendered_config import RenderedConfig
    mc = RenderedConfig({"metadata": {"name": "x"}, "spec": {"config": config}})
    assert mc.config_raw is not None
    try:
        expected: Any = ("ok", copy.deepcopy(mcoparse.converted_config(mc.config_raw)))
    except mcoparse.IgnitionConfigError as e:
        expected = ("error", str(e))
    mcoparse.clear_caches()  # so that the object's tree is the one parsed
    try:
        got: Any = ("ok", mc.ignition)
    except mcoparse.IgnitionConfigError as e:
        got = ("error", str(e))
    assert got == expected


def test_a_rendered_config_is_not_decoded_again_after_json_loads(monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    from machineconfig import mcoparse
    from machineconfig.ignition import decode
    from machineconfig.rendered_config import RenderedConfig
    decoded: list[bytes] = []
    monkeypatch.setattr(decode, "parse_json_fast", lambda data: decoded.append(data))
    mcoparse.clear_caches()
    mc = RenderedConfig(json.loads(
        '{"metadata": {"name": "x"}, "spec": {"config": {"ignition": {"version": "3.4.0"}, '
        '"storage": {"files": [{"path": "/etc/a", "mode": 420, "contents": {"source": "data:,a"}}]}}}}'))
    assert mc.ignition["storage"]["files"][0]["path"] == "/etc/a"
    assert decoded == []
