"""The unit parser's one-step option name against the rune-by-rune loop it short-cuts."""
from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from machineconfig.ignition import units

_PIECES = st.sampled_from(["[Unit]\n", "[Service]\n", "[Install]\n", "Description=x\n", "A = b\n",
                           "Exec\\\n", "=v\n", " Name=é\n", "é=1\n", "K=v\\\nmore\n", "# c\n",
                           "; c\\\n", "x\r\n", "N\rM=1\n", "\n", " ", "=", "\t", "[bad", "]\n",
                           "Key=" + "v" * 5000 + "\n", "L" * 3000 + "=1\n", "\udcff", "\x00"])
_TEXT = st.one_of(st.lists(_PIECES, max_size=12).map("".join), st.text(max_size=60))


def _outcome(text: str) -> Any:
    try:
        return units.deserialize(text)
    except units.UnitParseError as e:
        return ("error", str(e))


@settings(max_examples=600, deadline=None)
@given(_TEXT)
def test_fast_option_names_parse_alike(text: str) -> None:
    fast = _outcome(text)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(units, "_option_name_fast", lambda r: None)
        slow = _outcome(text)
    assert fast == slow
