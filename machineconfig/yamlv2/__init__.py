"""A YAML emitter that reproduces Go gopkg.in/yaml.v2 (v2.4.0) `Marshal` byte for byte.

Input is a generic JSON-derived value (dict/list/str/int/float/bool/None), as ghodss/yaml hands
it to yaml.v2; output is the exact text MCO hashes for the rendered-config name.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from typing import Any

from machineconfig.errors import MachineConfigError
from machineconfig.yamlv2.emitter import Emitter
from machineconfig.yamlv2.resolve import go_format_float
from machineconfig.yamlv2.scalar import analyze
from machineconfig.yamlv2.sorter import sorted_keys

__all__ = ["YAMLError", "analyze", "check_reader", "dump", "go_format_float", "json_round_trip",
           "marshal", "sorted_keys"]

log = logging.getLogger(__name__)

# Characters yaml.v2's *reader* rejects in the JSON text it parses (ghodss/yaml parses Go's JSON
# with yaml.v2 first): DEL, C1 controls except NEL, U+FFFE/U+FFFF. Go's JSON escapes the rest.
_READER_REJECTS = re.compile("[\x7f\x80-\x84\x86-\x9f\ufffe\uffff]")


class YAMLError(MachineConfigError, ValueError):
    """yaml.v2 refused the value; the message is Go's (`yaml: ...`)."""


def check_reader(value: Any) -> None:
    """Raise what ghodss/yaml's yaml.v2 *parse* of Go's JSON would raise for this value."""
    for text in _strings(value):
        if _READER_REJECTS.search(text):
            raise YAMLError("yaml: control characters are not allowed")


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


_NEL_RUN = re.compile("[ \x85]*\x85[ \x85]*")


def _fold_nel(text: str) -> str:
    """What yaml.v2's double-quoted scanner makes of a raw NEL in Go's JSON text.

    Go's JSON escapes every other line break, but not U+0085, which YAML reads as a line
    break and folds: a run of spaces and n NELs becomes one space (n = 1) or n-1 newlines.
    """
    def fold(match: re.Match[str]) -> str:
        n = match.group().count("\x85")
        return " " if n == 1 else "\n" * (n - 1)
    return _NEL_RUN.sub(fold, text)


# Everything check_reader refuses, and the NEL that _fold_nel rewrites.
_READER_OR_NEL = re.compile("[\x7f-\x9f\ufffe\uffff]")


def json_round_trip(value: Any) -> Any:
    """The value yaml.v2 decodes from Go's JSON of `value` (ghodss/yaml's first step)."""
    try:
        # Fast path: one C pass over every key and string; the JSON text only adds ASCII
        # punctuation and escapes of characters below 0x20, so none of these can come from it.
        text = json.dumps(value, ensure_ascii=False, check_circular=False)
    except (TypeError, ValueError, RecursionError):
        text = None
    if text is not None and _READER_OR_NEL.search(text) is None:
        return value
    check_reader(value)
    if not any("\x85" in text for text in _strings(value)):
        return value
    return _map_strings(value)


def _map_strings(value: Any) -> Any:
    if isinstance(value, str):
        return _fold_nel(value)
    if isinstance(value, dict):
        return {_fold_nel(str(k)): _map_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(item) for item in value]
    return value


def marshal(value: Any) -> str:
    """yaml.v2's `Marshal` of a generic value (no JSON step)."""
    emitter = Emitter()
    emitter.node(value, root=True)
    emitter.write_indent()  # document end
    return "".join(emitter.out)


def dump(value: Any) -> str:
    """ghodss/yaml.Marshal of a JSON-like value: Go's JSON, parsed by yaml.v2, re-emitted."""
    return marshal(json_round_trip(value))

