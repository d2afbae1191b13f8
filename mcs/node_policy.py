"""What the node API lets a node do, as plain functions: which pool a label set puts a node in
(by the pools' node selectors), Kubernetes label syntax, bounded JSON bodies, and per-client rate
limits. The handlers in mcs.node_api apply them.
"""
from __future__ import annotations

import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from machineconfig import labels as label_selectors
from machineconfig.labels import label_key_error, label_value_error
from machineconfig.errors import MachineConfigError

WORKER_POOL = "worker"

MAX_LABELS = 64
MAX_JSON_DEPTH = 32


class PolicyError(MachineConfigError, ValueError):
    """A request the policy refuses; the message is one line and names the key or value."""


def check_labels(value: Any) -> dict[str, str]:
    """A node's labels as sent at registration: an object of valid Kubernetes labels."""
    if not isinstance(value, dict):
        raise PolicyError("labels must be an object")
    if len(value) > MAX_LABELS:
        raise PolicyError(f"labels: at most {MAX_LABELS} labels")
    for key, val in value.items():
        why = label_key_error(key)
        if why is not None:
            raise PolicyError(f"labels: invalid key {key[:80]!r}: {why}")
        if not isinstance(val, str):
            raise PolicyError(f"labels.{key}: the value must be a string")
        why = label_value_error(val)
        if why is not None:
            raise PolicyError(f"labels.{key}: invalid value: {why}")
    return dict(value)


def pools_selecting(pools: Iterable[Mapping[str, Any]], labels: Mapping[str, str]) -> list[str]:
    """The names of the pools whose node selector matches `labels`, sorted."""
    return sorted(str((p.get("metadata") or {}).get("name", "")) for p in pools if label_selectors.pool_selects(p, labels))


def pool_of(matched: list[str]) -> str | None:
    """The pool a node selected by exactly `matched` belongs to, or None when it is in no pool or
    its pools are ambiguous. A pool alone, or a master or custom pool together with the worker
    pool (MCO's custom pools and schedulable masters carry the worker role as well): that pool.
    Anything else (two custom pools, master with a custom pool) is ambiguous."""
    if len(matched) == 1:
        return matched[0]
    if len(matched) == 2 and WORKER_POOL in matched:
        return next(p for p in matched if p != WORKER_POOL)
    return None


def describe_pools(matched: list[str]) -> str:
    return ", ".join(matched) if matched else "no pool"


def json_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a JSON text nests arrays/objects deeper than `limit` (strings are skipped)."""
    depth = 0
    for match in _JSON_TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > limit:
                return True
        elif token in "]}":
            depth -= 1
    return False


_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """A request body that must be one JSON object of bounded depth."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PolicyError("the body is not UTF-8") from e
    if json_depth_exceeds(text):
        raise PolicyError(f"the body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        body = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise PolicyError("the body is not JSON") from e
    if not isinstance(body, dict):
        raise PolicyError("the body must be a JSON object")
    return body


class RateLimiter:
    """Token buckets per key (a peer address, a node): `burst` requests at once, then one every
    `1/rate` seconds. At most `max_keys` buckets are kept (the least recently used go first), so
    clients cannot grow the table without bound."""

    def __init__(self, rate: float, burst: int, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def retry_after(self, key: str) -> float:
        """0 when a request for `key` may go ahead now (and counts it), else the seconds to wait."""
        now = self.clock()
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate if self.rate > 0 else 3600.0
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait
