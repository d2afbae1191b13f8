"""Go encoding/json behaviour of the Ignition parser: syntax errors, positions, case-insensitive keys,
duplicate keys, nulls and type mismatches (spec section 1.4)."""
from __future__ import annotations

import pytest

from machineconfig.ignition.decode import JSONSyntaxError, line_col, parse_json
from machineconfig.ignition.parse import IgnitionParseError, parse

V = '{"ignition":{"version":"3.6.0"}'


def outcome(text: str) -> tuple[str | None, list[str]]:
    try:
        return None, parse(text).report.lines()
    except IgnitionParseError as e:
        return e.reason, e.report.lines()


@pytest.mark.parametrize("text, line", [
    ('{"ignition":{"version":"3.6.0"}', "error at line 0 col 0: unexpected end of JSON input"),
    ("  ", "error at line 0 col 0: unexpected end of JSON input"),
    ('{"ignition":{"version":"3.6.0"}} true', "error at line 1 col 35: invalid character 't' after top-level value"),
    ('\ufeff{"ignition":{}}', "error at line 1 col 4: invalid character '\\ufeff' looking for beginning of value"),
    ('{"a":1,}', "error at line 0 col 0: invalid character '}' looking for beginning of object key string"),
    ('{"a":1, }\n', "error at line 1 col 10: invalid character '}' looking for beginning of object key string"),
    ('{"a" 1}', "error at line 1 col 7: invalid character '1' after object key"),
    ('{"a":1 "b":2}', "error at line 1 col 9: invalid character '\"' after object key:value pair"),
    ('[1 2]', "error at line 1 col 5: invalid character '2' after array element"),
    ('[1,]\n', "error at line 1 col 5: invalid character ']' looking for beginning of value"),
    ('{"a":-x}', "error at line 1 col 8: invalid character 'x' in numeric literal"),
    ('{"a":01}', "error at line 1 col 8: invalid character '1' after object key:value pair"),
    ('{"a":nul}', "error at line 0 col 0: invalid character '}' in literal null (expecting 'l')"),
    ('{"a":"\x01"}', "error at line 1 col 8: invalid character '\\x01' in string"),
    ('{"a":"\\q"}', "error at line 1 col 8: invalid escape sequence `\\q` in string"),
    ('{\n  "a": x\n}', "error at line 2 col 9: invalid character 'x' looking for beginning of value"),
])
def test_syntax_errors(text: str, line: str) -> None:
    assert outcome(text) == ("config is not valid", [line])


def test_crlf_counts_columns_in_bytes() -> None:
    data = b'{\r\n"a":\xc3\xa9x}'
    assert line_col(data, data.index(b"x")) == (2, 7)
    assert line_col(data, len(data)) == (0, 0)


@pytest.mark.parametrize("text, line", [
    ("[1]", "error at line 1 col 2: json: cannot unmarshal array into Go value of type util.versionStub"),
    ('{"ignition":{"version":3.6}}',
     "error at line 1 col 27: json: cannot unmarshal number into Go struct field versionStub.ignition.version "
     "of type string"),
    (V + ',"storage":{"files":[{"path":"/etc/x","mode":"0644"}]}}',
     "error at line 1 col 83: json: cannot unmarshal string into Go struct field Config.storage.files.0.mode "
     "of type int"),
    (V + ',"storage":{"files":[{"path":"/a","mode":420.0}]}}',
     "error at line 1 col 78: json: cannot unmarshal number 420.0 into Go struct field Config.storage.files.0.mode "
     "of type int"),
    (V + ',"storage":{"files":[{"path":"/a","overwrite":"true"}]}}',
     "error at line 1 col 84: json: cannot unmarshal string into Go struct field Config.storage.files.0.overwrite "
     "of type bool"),
    (V + ',"storage":[]}',
     "error at line 1 col 44: json: cannot unmarshal array into Go struct field Config.storage of type types.Storage"),
    (V + ',"storage":{"files":{}}}',
     "error at line 1 col 53: json: cannot unmarshal object into Go struct field Config.storage.files of type "
     "[]types.File"),
    (V + ',"kernelArguments":{"shouldExist":[1]}}',
     "error at line 1 col 68: json: cannot unmarshal number into Go struct field Config.kernelArguments.shouldExist.0 "
     "of type types.KernelArgument"),
])
def test_type_errors_are_fatal_and_unpathed(text: str, line: str) -> None:
    assert outcome(text) == ("config is not valid", [line])


def test_only_the_first_type_error_is_reported() -> None:
    reason, lines = outcome(V + ',"storage":{"files":[{"path":1,"mode":"x"}]}}')
    assert reason == "config is not valid"
    assert len(lines) == 1 and "files.0.path of type string" in lines[0]


def test_case_insensitive_keys_are_used_and_warned() -> None:
    assert outcome('{"Ignition":{"Version":"3.6.0"}}') == (
        None, ["warning at $.Ignition, line 1 col 2: unused key Ignition"])
    reason, lines = outcome(V + ',"storage":{"files":[{"PATH":"rel"}]}}')
    assert reason == "config is not valid"
    assert lines == ["error at $.storage.files.0.path, line 1 col 54: path not absolute",
                     "warning at $.storage.files.0.PATH, line 1 col 54: unused key PATH"]


def test_duplicate_keys_last_wins_without_warning() -> None:
    result = parse(V + ',"storage":{"files":[{"path":"rel","path":"/etc/ok"}]}}')
    assert result.report.lines() == []
    assert result.config["storage"]["files"] == [{"path": "/etc/ok"}]


def test_null_means_unset_and_null_objects_warn() -> None:
    assert outcome(V + ',"storage":{"files":[{"path":null}]}}') == (
        "config is not valid", ["error at $.storage.files.0.path, line 1 col 61: path not specified"])
    reason, lines = outcome(V + ',"storage":null}')
    assert reason is None
    assert lines == ["warning at $.storage, line 1 col 43: context tree does not match content tree at $.storage. "
                     "Line and column reporting may be inconsistent. Unused keys may not be reported"]


def test_unknown_and_newer_keys_are_warnings() -> None:
    assert outcome(V + ',"filesystems":[]}') == (None, ["warning at $.filesystems, line 1 col 33: unused key filesystems"])
    text = ('{"ignition":{"version":"3.0.0"},"storage":{"files":[{"path":"/a","contents":'
            '{"httpHeaders":[{"name":"a"}]}}]}}')
    reason, lines = outcome(text)
    assert reason is None and lines == [
        "warning at $.storage.files.0.contents.httpHeaders, line 1 col 78: unused key httpHeaders"]


def test_canonical_config_drops_zero_values_and_unknown_keys() -> None:
    result = parse('{"ignition":{"version":"03.6.0","config":{}},"storage":{"files":[{"path":"/a","mode":0,'
                   '"overwrite":false,"contents":{"source":""}}],"links":[]},"bogus":1}')
    assert result.version == "3.6.0"
    # mode and overwrite are pointers: an explicit zero is kept, unlike the empty `config` and `links`.
    assert result.config == {"ignition": {"version": "3.6.0"},
                             "storage": {"files": [{"overwrite": False, "path": "/a",
                                                    "contents": {"source": ""}, "mode": 0}]}}


def test_deep_nesting_is_rejected() -> None:
    with pytest.raises(JSONSyntaxError) as info:
        parse_json(b"[" * 10001 + b"]" * 10001)
    assert info.value.message == "exceeded max depth"
    assert parse_json(b"[" * 5000 + b"]" * 5000).kind == "array"


def test_string_escapes_decode_like_go() -> None:
    node = parse_json(b'["\\u00e9\\ud83d\\ude00\\ud800x\\/"]')
    assert node.items[0].value == "\u00e9\U0001f600\ufffdx/"
