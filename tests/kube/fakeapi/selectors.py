"""Label and field selectors as kube-apiserver parses them (the subset of the grammar in use:
`a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x,y)`, `a`, `!a`, comma-separated)."""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Requirement = Callable[[Mapping[str, str]], bool]


class SelectorError(ValueError):
    """str() is the message of the 400 BadRequest Status."""


_SET = re.compile(r"^\s*([^\s!=()]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def parse_labels(text: str) -> list[Requirement]:
    reqs: list[Requirement] = []
    for raw in _split(text or ""):
        part = raw.strip()
        if not part:
            continue
        m = _SET.match(part)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in":
                reqs.append(lambda labels, k=key, vs=values: k in labels and labels[k] in vs)
            else:
                reqs.append(lambda labels, k=key, vs=values: k not in labels or labels[k] not in vs)
            continue
        for op in ("!=", "==", "="):
            if op in part:
                key, value = (s.strip() for s in part.split(op, 1))
                if not key:
                    raise SelectorError(f"unable to parse requirement: found '{op}', expected: identifier")
                if op == "!=":
                    reqs.append(lambda labels, k=key, v=value: labels.get(k) != v)
                else:
                    reqs.append(lambda labels, k=key, v=value: k in labels and labels[k] == v)
                break
        else:
            if part.startswith("!"):
                key = part[1:].strip()
                reqs.append(lambda labels, k=key: k not in labels)
            elif re.match(r"^[A-Za-z0-9._/-]+$", part):
                reqs.append(lambda labels, k=part: k in labels)
            else:
                raise SelectorError(f"unable to parse requirement: {part!r}")
    return reqs


def parse_fields(text: str, known: Mapping[str, Callable[[Mapping[str, Any]], str]]
                 ) -> list[Callable[[Mapping[str, Any]], bool]]:
    """Field selectors support =, == and != on the fields the resource declares."""
    reqs: list[Callable[[Mapping[str, Any]], bool]] = []
    for raw in _split(text or ""):
        part = raw.strip()
        if not part:
            continue
        for op in ("!=", "==", "="):
            if op in part:
                key, value = (s.strip() for s in part.split(op, 1))
                break
        else:
            raise SelectorError(f"invalid selector: '{part}'; can't understand '{part}'")
        if key not in known:
            names = ", ".join(f'"{k}"' for k in known)
            raise SelectorError(f'"{key}" is not a known field selector: only {names}')
        getter = known[key]
        if op == "!=":
            reqs.append(lambda obj, g=getter, v=value: g(obj) != v)
        else:
            reqs.append(lambda obj, g=getter, v=value: g(obj) == v)
    return reqs
