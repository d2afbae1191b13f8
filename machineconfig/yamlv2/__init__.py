"""A YAML emitter that reproduces Go gopkg.in/yaml.v2 (v2.4.0) `Marshal` byte for byte.

Input is a generic JSON-derived value (dict/list/str/int/float/bool/None), as ghodss/yaml hands
it to yaml.v2; output is the exact text MCO hashes for the rendered-config name.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from machineconfig.yamlv2.emitter import Emitter
from machineconfig.yamlv2.resolve import go_format_float
from machineconfig.yamlv2.scalar import analyze
from machineconfig.yamlv2.sorter import sorted_keys

__all__ = ["YAMLError", "analyze", "check_reader", "dump", "go_format_float", "sorted_keys"]

log = logging.getLogger(__name__)

# Characters yaml.v2's *reader* rejects in the JSON text it parses (ghodss/yaml parses Go's JSON
# with yaml.v2 first): DEL, C1 controls except NEL, U+FFFE/U+FFFF. Go's JSON escapes the rest.
_READER_REJECTS = re.compile("[\x7f\x80-\x84\x86-\x9f\ufffe\uffff]")


class YAMLError(ValueError):
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


def dump(value: Any) -> str:
    """`yaml.Marshal(value)` of yaml.v2 for a generic JSON-like value."""
    check_reader(value)
    emitter = Emitter()
    emitter.node(value, root=True)
    emitter.write_indent()  # document end
    return "".join(emitter.out)

