"""The yaml.v2 emitter on its own: every vector's specYAML, plus the scalar rules one by one."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from machineconfig import yamlv2
from machineconfig.yamlv2.scalar import _Analysis

VECTORS = Path(__file__).resolve().parents[2] / "data" / "vectors" / "render"
OK_CASES = [p for p in sorted(VECTORS.glob("*.json"))
            if json.loads(p.read_text(encoding="utf-8"))["expected"]["ok"]]


@pytest.mark.parametrize("path", OK_CASES, ids=[p.stem for p in OK_CASES])
def test_vector_spec_yaml(path: Path) -> None:
    expected = json.loads(path.read_text(encoding="utf-8"))["expected"]
    assert yamlv2.dump(expected["spec"]) == expected["specYAML"]


def test_smallest_spec_from_the_spec_document() -> None:
    spec = {"osImageURL": "", "baseOSExtensionsContainerImage": "",
            "config": {"ignition": {"version": "3.5.0"}}, "kernelArguments": [],
            "extensions": [], "fips": False, "kernelType": "default"}
    assert yamlv2.dump(spec) == (
        'baseOSExtensionsContainerImage: ""\n'
        "config:\n  ignition:\n    version: 3.5.0\n"
        "extensions: []\nfips: false\nkernelArguments: []\nkernelType: default\n"
        'osImageURL: ""\n')


def item(value: Any) -> str:
    """How one list item prints (without the `- ` and the final newline)."""
    out = yamlv2.dump([value])
    assert out.startswith("- ") and out.endswith("\n")
    return out[2:-1]


@pytest.mark.parametrize("text", ["", "true", "True", "yes", "No", "on", "OFF", "y", "~", "null",
                                  "NULL", "1", "-1", "+1", "0755", "08", "1_000", "0x1F", "0o17",
                                  "0b101", "1.0", "1e5", ".5", ".inf", "-.inf", ".nan", "12:30",
                                  "2020-01-01", "2020-1-2 3:4:5", "2001-12-14t21:59:43.10-05:00"])
def test_strings_that_resolve_to_other_types_are_double_quoted(text: str) -> None:
    assert item(text) == json.dumps(text)


@pytest.mark.parametrize("text", ["a", "a:b", "a  b", "a\\b", "<<", ".", "1.2.3", "2020-13-01",
                                  "2021-02-29", "0x", "1e999", "3.5.0", "data:,a%20b",
                                  "yes please", "Nope", "-a", "?a", "a?", "a#b", "key=value"])
def test_plain_when_it_reads_back_as_the_same_string(text: str) -> None:
    assert item(text) == text


@pytest.mark.parametrize("text, printed", [
    (" a", "' a'"), ("a ", "'a '"), ("-", "'-'"), (":", "':'"), ("a: b", "'a: b'"), ("::", "'::'"),
    ("- a", "'- a'"), ("#x", "'#x'"), ("a #b", "'a #b'"), ("[x]", "'[x]'"), ("*x", "'*x'"),
    ("it's", "it's"), ("'q", "'''q'"), ("---x", "'---x'"), ("@x", "'@x'"), ("%x", "'%x'"),
])
def test_single_quoted_when_plain_is_not_allowed(text: str, printed: str) -> None:
    assert item(text) == printed


@pytest.mark.parametrize("text, printed", [
    ("\ta", '"\\ta"'), ("a\r", '"a\\r"'), ("a\fb", '"a\\fb"'), ("\x01", '"\\x01"'),
    ("\x00", '"\\0"'), ("\x1b", '"\\e"'), ("\U0001F600", '"\\U0001F600"'),
    ("\ufeffab", '"\\uFEFF\\x61\\x62"'), ("q\"", "q\""), ("\u00e9t\u00e9", "\u00e9t\u00e9"),
])
def test_escapes_in_double_quotes(text: str, printed: str) -> None:
    assert item(text) == printed


@pytest.mark.parametrize("text", ["\x7f", "a\x80", "\x9f", "\ufffe", "\uffff"])
def test_control_characters_are_refused(text: str) -> None:
    with pytest.raises(yamlv2.YAMLError, match="^yaml: control characters are not allowed$"):
        yamlv2.dump({"k": [text]})


@pytest.mark.parametrize("text, printed", [
    ("a\nb", "|-\n  a\n  b"), ("a\n", "|\n  a"), ("a\n\n", "|+\n  a\n"),
    (" a\n", "|2\n   a"), ("\n", "|2+\n"), ("a\n\nb\n", "|\n  a\n\n  b"),
    ("a \nb", '"a \\nb"'), ("a\tb\n", '"a\\tb\\n"'),
])
def test_literal_block_styles(text: str, printed: str) -> None:
    out = yamlv2.dump([text])
    assert out == "- " + printed + "\n"


def test_literal_inside_a_mapping_is_indented_under_the_key() -> None:
    assert yamlv2.dump({"units": [{"contents": "[Unit]\nA=b\n", "name": "a.service"}]}) == (
        "units:\n- contents: |\n    [Unit]\n    A=b\n  name: a.service\n")


def test_plain_scalars_fold_at_80_columns_on_single_spaces() -> None:
    words = " ".join(["word"] * 20)
    assert yamlv2.dump({"k": words}) == (
        "k: word word word word word word word word word word word word word word word word\n"
        "  word word word word\n")
    no_spaces = "x" * 120
    assert yamlv2.dump({"k": no_spaces}) == f"k: {no_spaces}\n"


def test_double_quoted_scalars_fold_and_escape_a_leading_space() -> None:
    text = "\t" + "a" * 78 + "  b"
    out = yamlv2.dump([text])
    # the fold eats one space; the next one would be lost as indentation, hence the escape
    assert out == '- "\\t' + "a" * 78 + '\n  \\ b"\n'


def test_keys_sort_naturally() -> None:
    keys = ["b", "a10", "a2", "B", "_x", "1", "a"]
    out = yamlv2.dump({k: 0 for k in keys})
    assert [line.split(":")[0] for line in out.splitlines()] == [
        "_x", '"1"', "B", "a", "a2", "a10", "b"]


def test_collections_numbers_and_nulls() -> None:
    assert yamlv2.dump({"a": {}, "b": [], "c": None, "d": [[1, 2], {"e": True}]}) == (
        "a: {}\nb: []\nc: null\nd:\n- - 1\n  - 2\n- e: true\n")
    assert yamlv2.dump([1e6, 1.5, 0.0001, 0.00001, -0.0, 123456.0, float("inf")]) == (
        "- 1e+06\n- 1.5\n- 0.0001\n- 1e-05\n- -0\n- 123456\n- .inf\n")
    assert yamlv2.dump({}) == "{}\n"


def test_long_keys_become_complex_keys() -> None:
    key = "k" * 129
    assert yamlv2.dump({key: 1}) == f"? {key}\n: 1\n"


@settings(max_examples=500, deadline=None)
@given(st.text(st.sampled_from(list("ab #:-?,[]{}'\"!|>%@`.\t\n\r\x85\u2028\u00e9\x01\ufeff"
                                    "\U0001F600")), max_size=8))
def test_fast_analysis_agrees_with_the_character_loop(text: str) -> None:
    fast, slow = yamlv2.analyze(text), _Analysis(text)
    assert {k: getattr(fast, k) for k in fast.__slots__} == \
        {k: getattr(slow, k) for k in slow.__slots__}


@pytest.mark.parametrize("text, printed", [
    ("a\x85b", "a b"), ("a \x85 b", "a b"), ("a\x85\x85b", "|-\n  a\n  b"),
    ("\x85", "' '"), ("x  \x85\x85\x85 y", "|-\n  x\n\n  y"),
])
def test_nel_is_folded_by_the_json_to_yaml_step(text: str, printed: str) -> None:
    # Go's JSON leaves U+0085 raw; yaml.v2 reads it as a line break inside the quoted scalar
    assert yamlv2.dump([text]) == f"- {printed}\n"
    assert yamlv2.marshal([text]) == '- "' + text.replace("\x85", "\\N") + '"\n'


_WORDS = st.text(st.sampled_from(list("ab #:-?,'\"\n\t\\|>{}[]!&*%@`\u00e9\U0001F600~.")),
                 max_size=90)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | _WORDS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_WORDS, inner, max_size=4),
    max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(_VALUES)
def test_output_reads_back_as_the_same_value(value: Any) -> None:
    # An independent parser (PyYAML) must read back exactly what was written.
    assert yaml.safe_load(yamlv2.marshal(value)) == value
