"""Property: `parse` fails only with IgnitionParseError, whatever it is given."""
from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from machineconfig.ignition.parse import IgnitionParseError, ParseResult, parse

KEYS = st.sampled_from(["ignition", "version", "storage", "files", "path", "mode", "contents", "source",
                        "systemd", "units", "name", "contents", "links", "target", "hard", "disks",
                        "partitions", "number", "label", "Path", "PATH", "config", "merge", "verification",
                        "hash", "luks", "clevis", "custom", "pin", "raid", "level", "devices", "x"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5000, 5000), st.floats(allow_nan=False),
                    st.text(max_size=12), st.sampled_from(["/etc/x", "data:,x", "3.6.0", "3.2.0", "sha512-",
                                                           "http://h/x", "[Unit]\nA", "a.service"]))
JSONISH = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(KEYS, inner, max_size=5)),
                       max_leaves=25)
VERSIONS = st.sampled_from(["3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0", "3.5.0", "3.6.0", "3.7.0-experimental"])


def _check(raw: bytes | str) -> None:
    try:
        result = parse(raw)
    except IgnitionParseError as e:
        assert e.reason
        return
    assert isinstance(result, ParseResult)
    assert result.config["ignition"]["version"] == result.version


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes(raw: bytes) -> None:
    _check(raw)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='{}[]",:0123456789.-+eE truefalsnl\\/\n\t\ufeff', max_size=80))
def test_json_shaped_text(raw: str) -> None:
    _check(raw)


@settings(max_examples=400, deadline=None)
@given(VERSIONS, JSONISH, JSONISH)
def test_config_shaped_documents(version: str, storage: object, systemd: object) -> None:
    doc = {"ignition": {"version": version}, "storage": storage, "systemd": systemd}
    _check(json.dumps(doc))


@settings(max_examples=200, deadline=None)
@given(VERSIONS, st.lists(st.dictionaries(KEYS, SCALARS, max_size=6), max_size=4))
def test_file_entries(version: str, files: list[dict[str, object]]) -> None:
    _check(json.dumps({"ignition": {"version": version}, "storage": {"files": files, "links": files,
                                                                     "directories": files}}))


def test_deep_nesting_is_a_parse_error_not_a_crash() -> None:
    _check("[" * 20000 + "]" * 20000)
    _check('{"ignition":{"version":"3.6.0"},"x":' + "[" * 12000 + "]" * 12000 + "}")
