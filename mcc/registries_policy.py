"""/etc/containers/policy.json as MCO writes it: the template's policy with the blocked scopes
rejected, or only the allowed ones accepted, for the docker and atomic transports, encoded as Go's
json.MarshalIndent does (two spaces, map keys sorted, HTML-safe escapes)."""
from __future__ import annotations

import json
from typing import Any

from machineconfig.errors import MachineConfigError

BOTH_LISTS = ("invalid images config: only one of AllowedRegistries or BlockedRegistries may be "
              "specified")


def _go_json_string(s: str) -> str:
    """Go's encoding/json string form: HTML-safe escapes, \\b \\f short forms, UTF-8 kept."""
    out = ['"']
    short = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b",
             "\f": "\\f"}
    for ch in s:
        if ch in short:
            out.append(short[ch])
        elif ord(ch) < 0x20 or ch in "<>&\u2028\u2029":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out) + '"'


def go_json_indent(value: Any, indent: str = "") -> str:
    """json.MarshalIndent(value, "", "  ") for JSON-shaped data (dict keys in the order given)."""
    inner = indent + "  "
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{_go_json_string(str(k))}: {go_json_indent(v, inner)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(inner + go_json_indent(v, inner) for v in value) + "\n" + indent + "]"
    if isinstance(value, str):
        return _go_json_string(value)
    return json.dumps(value)


def update_policy_json(data: bytes, blocked: list[str] | None, allowed: list[str] | None,
                       payload: str | None) -> bytes:
    """The template's policy.json with the blocked scopes rejected or only the allowed ones
    accepted (docker and, for scopes of at most three segments, atomic transports)."""
    if allowed and blocked:
        if not (len(allowed) == 1 and allowed[0] == payload):
            raise MachineConfigError(BOTH_LISTS)
    if allowed is None and blocked is None:
        return data
    try:
        policy = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise MachineConfigError(f"error decoding policy json: {e}") from e
    if not isinstance(policy, dict) or not isinstance(policy.get("default"), list):
        raise MachineConfigError('error decoding policy json: "default" is missing')
    transports = policy.get("transports")
    if not isinstance(transports, dict):
        transports = {}
    scopes: dict[str, list[dict[str, str]]] = {}
    if allowed:
        policy["default"] = [{"type": "reject"}]
        scopes.update((reg, [{"type": "insecureAcceptAnything"}]) for reg in allowed)
    if blocked:
        policy["default"] = [{"type": "insecureAcceptAnything"}]
        scopes.update((reg, [{"type": "reject"}]) for reg in blocked)
    if scopes:
        transports["docker"] = scopes
        transports["atomic"] = {k: v for k, v in scopes.items() if k.count("/") < 3}
    out = {"default": policy["default"],
           "transports": {t: dict(sorted(s.items())) if isinstance(s, dict) else s
                          for t, s in sorted(transports.items())}}
    return go_json_indent(out).encode()
