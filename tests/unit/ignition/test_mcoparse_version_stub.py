"""mcoparse reads `ignition.version` from the C scanner's tree when it has one, instead of a second
json.loads: both must give the same answer on any bytes the fast tree exists for."""
from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from machineconfig import mcoparse
from machineconfig.ignition.decode import parse_json_fast

_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                  st.sampled_from(["3.4.0", "3.2.0", "2.2.0", "", "x", "3.6.0"]))
_VALUE = st.recursive(_LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.lists(st.tuples(st.sampled_from(["ignition", "version", "Ignition", "storage"]), inner),
             max_size=4)), max_leaves=12)


def _dump(value: object) -> str:
    """JSON text; lists of pairs become objects, duplicate keys kept."""
    if isinstance(value, list) and value and all(isinstance(p, tuple) for p in value):
        return "{" + ",".join(f"{json.dumps(k)}:{_dump(v)}" for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dump(v) for v in value) + "]"
    return json.dumps(value)


@settings(max_examples=500, deadline=None)
@given(_VALUE)
def test_version_from_tree_equals_json_loads(value: object) -> None:
    raw = _dump(value).encode()
    root = parse_json_fast(raw)
    if root is not None:
        assert mcoparse._version_text_of_tree(root) == mcoparse._version_text(raw)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
def test_version_from_tree_on_arbitrary_bytes(raw: bytes) -> None:
    root = parse_json_fast(raw)
    if root is not None:
        assert mcoparse._version_text_of_tree(root) == mcoparse._version_text(raw)


def test_duplicate_keys_last_wins() -> None:
    raw = b'{"ignition":{"version":"3.2.0","version":"3.4.0"},"ignition":{"version":"3.1.0"}}'
    root = parse_json_fast(raw)
    assert root is not None
    assert mcoparse._version_text_of_tree(root) == mcoparse._version_text(raw) == "3.1.0"
