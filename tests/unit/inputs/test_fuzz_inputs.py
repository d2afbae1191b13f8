"""Fuzzing `mcc validate`, `mcc render` and the local store's loader with mutated test vectors:
changed types, huge integers, deep nesting, aliases, truncation, bad UTF-8, duplicate keys.

Whatever the input, each must end in a result or in a rejection of one line per problem (file,
line, field path); an exception escaping, or an error spread over several lines, fails the test.
`FUZZ_EXAMPLES=20000` runs a long campaign (CI runs a few hundred examples per target).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from machineconfig.errors import InputError
from machineconfig.store.inputs import load_objects
from mcc.cli import main
from tests.support.clusterkit import POOL

DATA = Path(__file__).resolve().parents[2] / "data"
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0")) or None
FUZZ = settings(max_examples=EXAMPLES or 300, deadline=None, derandomize=EXAMPLES is None,
                suppress_health_check=list(HealthCheck), database=None)


def _machine_configs() -> list[Any]:
    out: list[Any] = []
    for path in sorted((DATA / "vectors" / "render").glob("*.json")):
        out.extend(json.loads(path.read_text()).get("machineConfigs") or [])
    return out


def _ignition_texts() -> list[str]:
    return [json.loads(p.read_text())["config"]
            for p in sorted((DATA / "vectors" / "ignition").glob("*.json"))]


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


MACHINE_CONFIGS = _machine_configs()
IGNITION = _ignition_texts()
VALIDATE_FILES = [p.read_text() for p in sorted((DATA / "validate").glob("*"))]

# Replaced in the dumped text: values no Python object dumps to.
HOSTILE_VALUES = [
    "9" * 5000, "-" + "9" * 30, "1e999", ".nan", "[" * 150 + "]" * 150, "[" * 1200 + "]" * 1200,
    "{a: " * 120 + "1" + "}" * 120, "*undefined", "&x [*x]", "!!binary ===", "!!python/name:os",
    "2026-13-45", "0x" + "f" * 40, "0o777777777777777777777777", "~", "''", "'" + "x" * 10000 + "'",
    '"\\ud800"', "\x00", "\ufeff", "- a\n- b", "{", "]",
]
BOMB = ('{"__BOMB__": &a ["x","x","x","x","x","x","x","x","x","x"], "b": &b [*a,*a,*a,*a,*a,*a,'
        '*a,*a,*a,*a], "c": &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], "d": &d [*c,*c,*c,*c,*c,*c,*c,'
        '*c,*c,*c], "e": &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d], "f": [*e,*e,*e,*e,*e,*e,*e,*e]}')
OTHER_TYPES = [None, True, 0, -1, 420, 1.5, "", "x", [], [1, "a"], {}, {"a": 1}]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {k: (_replace(v, rest, new) if k == head else v) for k, v in value.items()}
    return [(_replace(v, rest, new) if i == head else v) for i, v in enumerate(value)]


@st.composite
def mutated_text(draw: st.DrawFn, seeds: list[Any], as_yaml: bool) -> bytes:
    """A seed object dumped as YAML or JSON after one to three mutations of the data, then
    possibly mutated as text (truncated, bytes inserted, a line repeated)."""
    obj = draw(st.sampled_from(seeds))
    markers: dict[str, str] = {}
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(obj))
        path = draw(st.sampled_from(paths))
        kind = draw(st.sampled_from(["type", "hostile", "bomb", "drop"]))
        if kind == "type":
            obj = _replace(obj, path, draw(st.sampled_from(OTHER_TYPES)))
        elif kind == "drop" and path:
            parent = path[:-1]
            holder = obj
            for p in parent:
                holder = holder[p]
            if isinstance(holder, dict):
                obj = _replace(obj, parent, {k: v for k, v in holder.items() if k != path[-1]})
        else:
            marker = f"__M{len(markers)}__"
            markers[marker] = BOMB if kind == "bomb" else draw(st.sampled_from(HOSTILE_VALUES))
            obj = _replace(obj, path, marker)
    if as_yaml:
        text = yaml.safe_dump(obj, default_flow_style=draw(st.booleans()), width=10_000)
    else:
        text = json.dumps(obj, indent=draw(st.sampled_from([None, 2])))
    for marker, value in markers.items():
        quoted = [f"'{marker}'", f'"{marker}"', marker]
        for q in quoted:
            text = text.replace(q, value)
    data = text.encode("utf-8", "surrogatepass")
    edit = draw(st.sampled_from(["none", "none", "truncate", "bytes", "duplicate-line"]))
    if edit == "truncate" and data:
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif edit == "bytes":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\x00", b"\xed\xa0\x80",
                                                 b"\t", b"\r", b"&a ", b"*a ", b"<<: *a\n"])) \
            + data[at:]
    elif edit == "duplicate-line":
        lines = data.split(b"\n")
        at = draw(st.integers(0, len(lines) - 1))
        data = b"\n".join(lines[:at + 1] + [lines[at]] + lines[at + 1:])
    return data


def run_cli(argv: list[str]) -> tuple[int, list[str]]:
    """mcc in this process; its output lines (stdout and stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue().splitlines() + out.getvalue().splitlines()


# One report line of `mcc validate`, or one of its notes; anything else is a stray line.
VALIDATE_LINE = re.compile(
    r"^((error|warning|info) at (\$|line \d+ col \d+: )|couldn't parse config: \S"
    r"|couldn't read \S|note: \S)")


@FUZZ
@given(data=st.one_of(mutated_text(MACHINE_CONFIGS, True), mutated_text(MACHINE_CONFIGS, False),
                      st.sampled_from(IGNITION + VALIDATE_FILES).map(str.encode).flatmap(
                          lambda raw: st.sampled_from([raw, raw[:len(raw) // 2],
                                                       raw.replace(b"420", b"9" * 5000),
                                                       raw.replace(b"{", b"[" * 700 + b"{")])),
                      mutated_text([json.loads(t) for t in IGNITION if _is_json(t)], False)))
@example(data=b"[" * 1200 + b"]" * 1200)
@example(data=b'kind: MachineConfig\napiVersion: v1\nspec:\n  "a\\nb": 1\n  "c\\td": ' + b"9" * 5000)
@example(data=b"kind: MachineConfig\napiVersion: v1\nspec:\n  config:\n    ignition:\n"
              b"      version: 3.2.0\n    storage: {files: [{path: /a, mode: " + b"9" * 5000
              + b"}]}\n")
@example(data=b'{"ignition": {"version": "3.2.0"}, "storage": {"files": [{"path": "/a", '
              b'"mode": ' + b"9" * 5000 + b"}]}}")
def test_fuzz_validate(tmp_path_factory: Any, data: bytes) -> None:
    path = tmp_path_factory.mktemp("v") / "in.yaml"
    path.write_bytes(data)
    code, lines = run_cli(["validate", str(path)])
    assert code in (0, 1)
    for line in lines:
        assert VALIDATE_LINE.match(line), line


@FUZZ
@given(data=st.one_of(mutated_text(MACHINE_CONFIGS, True), mutated_text(MACHINE_CONFIGS, False)))
def test_fuzz_render(tmp_path_factory: Any, data: bytes) -> None:
    tmp = tmp_path_factory.mktemp("r")
    (tmp / "pool.yaml").write_text(POOL)
    (tmp / "mc.yaml").write_bytes(data)
    code, lines = run_cli(["render", str(tmp)])
    assert code in (0, 1)
    if code == 1:
        errors = [line for line in lines if line.startswith("mcc render: ")
                  and not line.startswith("mcc render: warning: ")]
        assert len(errors) == 1, lines
        assert not [line for line in lines if not line.startswith("mcc render: ")], lines


@FUZZ
@given(data=st.one_of(mutated_text(MACHINE_CONFIGS, True), mutated_text(MACHINE_CONFIGS, False)))
def test_fuzz_store_loader(tmp_path_factory: Any, data: bytes) -> None:
    path = tmp_path_factory.mktemp("s") / "mc.yaml"
    path.write_bytes(data)
    try:
        load_objects(str(path))
    except InputError as e:
        text = str(e)
        assert "\n" not in text and text.startswith(str(path)), text

