"""What a drain means on a host without Kubernetes: systemd units to stop and hooks to run.

A pool declares it in the annotation POOL_ANNOTATION (YAML, as the maintenance window):

    stopUnits: [web.service, "app-*.service"]   # stopped before the update, started after
    hooks:
      - name: lb-deregister                      # named in logs and blocked reasons
        command: [/usr/local/bin/lb, deregister] # argv; argv[0] absolute; no shell
        timeoutSeconds: 30                       # 1 .. 3600, default 60
        phase: beforeDrain                       # beforeDrain | afterDrain | afterReturn
    nodes:                                       # optional per-node replacement of the above
      edge-3: {stopUnits: [db.service]}

The controller publishes each node's effective policy (the node's entry, else the pool's) as
normalized JSON in the node annotation NODE_ANNOTATION, or `{"invalid": reason}` when the pool's
annotation does not parse, so the daemon refuses to drain rather than reboot with nothing stopped.
Unit names and patterns: one plain unit name with a suffix systemd knows, glob characters `*?[]`
allowed (systemd's own fnmatch, as `systemctl stop 'app-*.service'`), but never a pattern that is
only wildcards before its suffix.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from machineconfig.errors import InputError
from machineconfig.yamlload import load_text

POOL_ANNOTATION = "machine-config.io/local-drain"
NODE_ANNOTATION = "machine-config.io/local-drain-policy"

BEFORE_DRAIN, AFTER_DRAIN, AFTER_RETURN = "beforeDrain", "afterDrain", "afterReturn"
PHASES = (BEFORE_DRAIN, AFTER_DRAIN, AFTER_RETURN)
DEFAULT_TIMEOUT, MAX_TIMEOUT = 60, 3600
MAX_UNITS, MAX_HOOKS, MAX_ARGS, MAX_ARG_BYTES, MAX_NODES = 100, 32, 64, 4096, 1000
UNIT_SUFFIXES = (".service", ".socket", ".timer", ".path", ".target", ".scope", ".slice",
                 ".mount", ".automount", ".swap", ".device")
_UNIT = re.compile(r"^[A-Za-z0-9:_.\-@\\*?\[\]]{1,255}$")
_HOOK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")
_KEYS = {"stopUnits", "hooks", "nodes"}
_NODE_KEYS = {"stopUnits", "hooks"}
_HOOK_KEYS = {"name", "command", "timeoutSeconds", "phase"}


@dataclass(frozen=True)
class Hook:
    name: str
    command: tuple[str, ...]
    timeout: int = DEFAULT_TIMEOUT
    phase: str = BEFORE_DRAIN

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "command": list(self.command),
                "timeoutSeconds": self.timeout, "phase": self.phase}


@dataclass(frozen=True)
class DrainPolicy:
    """One node's local drain; empty when the pool declares none."""

    stop_units: tuple[str, ...] = ()
    hooks: tuple[Hook, ...] = ()
    invalid: str = ""  # the pool's annotation did not parse: every drain is refused with this

    @property
    def empty(self) -> bool:
        return not (self.stop_units or self.hooks or self.invalid)

    def hooks_in(self, phase: str) -> list[Hook]:
        return [h for h in self.hooks if h.phase == phase]

    def to_json(self) -> str:
        if self.invalid:
            return json.dumps({"invalid": self.invalid}, sort_keys=True)
        return json.dumps({"stopUnits": list(self.stop_units),
                           "hooks": [h.to_dict() for h in self.hooks]}, sort_keys=True)


@dataclass(frozen=True)
class PoolDrainPolicy:
    default: DrainPolicy
    nodes: Mapping[str, DrainPolicy] = field(default_factory=dict)

    def for_node(self, node: str) -> DrainPolicy:
        return self.nodes.get(node, self.default)


def _error(message: str, path: str, source: str = POOL_ANNOTATION) -> InputError:
    return InputError(message, file=source, path="$" + path)


def unit_pattern_problem(name: object) -> str | None:
    """Why `name` is not a unit name or pattern the daemon may stop (None when it is)."""
    if not isinstance(name, str) or not _UNIT.match(name):
        return f"{name!r} is not a unit name (letters, digits, ':_.-@\\' and the globs '*?[]')"
    suffix = next((s for s in UNIT_SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        return f"{name!r} has no unit suffix ({', '.join(UNIT_SUFFIXES[:6])}, ...)"
    stem = name[:-len(suffix)]
    if not re.sub(r"\[[^\]]*\]|[*?]", "", stem):  # nothing literal: only wildcards
        return f"{name!r} would match every {suffix[1:]} unit: name the workload"
    return None


def _units(value: object, path: str, source: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_UNITS:
        raise _error(f"must be a list of at most {MAX_UNITS} unit names", path, source)
    out: list[str] = []
    for i, item in enumerate(value):
        problem = unit_pattern_problem(item)
        if problem:
            raise _error(problem, f"{path}[{i}]", source)
        if item not in out:
            out.append(str(item))
    return tuple(out)


def _hook(item: object, path: str, source: str) -> Hook:
    if not isinstance(item, Mapping):
        raise _error("must be a mapping (name, command, timeoutSeconds, phase)", path, source)
    unknown = sorted(set(map(str, item)) - _HOOK_KEYS)
    if unknown:
        raise _error(f"unknown key(s) {', '.join(unknown)}", path, source)
    command = item.get("command")
    if not isinstance(command, list) or not command or len(command) > MAX_ARGS or \
            not all(isinstance(a, str) and "\0" not in a and len(a.encode()) <= MAX_ARG_BYTES
                    for a in command):
        raise _error(f"must be a list of 1 to {MAX_ARGS} strings (argv; no shell unless you "
                     "write one, e.g. [/bin/sh, -c, '...'])", f"{path}.command", source)
    if not command[0].startswith("/"):
        raise _error(f"{command[0]!r}: the program must be an absolute path (hooks run with a "
                     "clean environment)", f"{path}.command[0]", source)
    default_name = command[0].rsplit("/", 1)[-1] or "hook"
    name = item.get("name", default_name)
    if not isinstance(name, str) or not _HOOK_NAME.match(name):
        raise _error(f"{name!r} is not a hook name (letters, digits, '_.-', at most 63)",
                     f"{path}.name", source)
    timeout = item.get("timeoutSeconds", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or \
            not 1 <= timeout <= MAX_TIMEOUT:
        raise _error(f"must be whole seconds from 1 to {MAX_TIMEOUT}", f"{path}.timeoutSeconds",
                     source)
    phase = item.get("phase", BEFORE_DRAIN)
    if phase not in PHASES:
        raise _error(f"{phase!r} is not a phase ({', '.join(PHASES)})", f"{path}.phase", source)
    return Hook(name, tuple(command), timeout, str(phase))


def _policy(data: Mapping[str, Any], path: str, source: str) -> DrainPolicy:
    raw = data.get("hooks")
    if raw is None:
        raw = []
    if not isinstance(raw, list) or len(raw) > MAX_HOOKS:
        raise _error(f"must be a list of at most {MAX_HOOKS} hooks", f"{path}.hooks", source)
    hooks = [_hook(item, f"{path}.hooks[{i}]", source) for i, item in enumerate(raw)]
    names = [h.name for h in hooks]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise _error(f"hook name {dup!r} is used twice (give each a name)", f"{path}.hooks",
                     source)
    return DrainPolicy(_units(data.get("stopUnits"), f"{path}.stopUnits", source), tuple(hooks))


def parse(text: str, source: str = POOL_ANNOTATION) -> PoolDrainPolicy:
    """A pool's local drain from its annotation's value; InputError naming the field."""
    try:
        docs = load_text(text, source)
    except InputError as e:
        raise _error(f"not YAML: {e.message}", "", source) from e
    data = docs[0].data if len(docs) == 1 else None
    if not isinstance(data, Mapping):
        raise _error("must be one YAML mapping (stopUnits, hooks, nodes)", "", source)
    unknown = sorted(set(map(str, data)) - _KEYS)
    if unknown:
        raise _error(f"unknown key(s) {', '.join(unknown)}", "", source)
    default = _policy(data, "", source)
    nodes_raw = data.get("nodes") or {}
    if not isinstance(nodes_raw, Mapping) or len(nodes_raw) > MAX_NODES:
        raise _error(f"must map at most {MAX_NODES} node names to their own stopUnits and hooks",
                     ".nodes", source)
    nodes = {}
    for name, entry in nodes_raw.items():
        path = f".nodes.{name}"
        if not isinstance(entry, Mapping):
            raise _error("must be a mapping (stopUnits, hooks)", path, source)
        unknown = sorted(set(map(str, entry)) - _NODE_KEYS)
        if unknown:
            raise _error(f"unknown key(s) {', '.join(unknown)}", path, source)
        nodes[str(name)] = _policy(entry, path, source)
    return PoolDrainPolicy(default, nodes)


def pool_policy(pool: Mapping[str, Any]) -> PoolDrainPolicy | None:
    """The pool's local drain, None when it declares none. Raises InputError."""
    annotations = (pool.get("metadata") or {}).get("annotations") or {}
    text = annotations.get(POOL_ANNOTATION)
    if text is None:
        return None
    if not isinstance(text, str):
        raise _error("must be a string holding YAML", "")
    return parse(text)


def publisher(pool: Mapping[str, Any]) -> Callable[[str], str | None]:
    """What the controller publishes on each node of `pool`, by node name (None: the pool has
    no local drain and the annotation is removed)."""
    try:
        policy = pool_policy(pool)
    except InputError as e:
        invalid = DrainPolicy(invalid=str(e)).to_json()
        return lambda node: invalid
    if policy is None:
        return lambda node: None
    default = policy.default.to_json()
    nodes = {name: p.to_json() for name, p in policy.nodes.items()}
    return lambda node: nodes.get(node, default)


def from_node_annotation(text: str | None) -> DrainPolicy:
    """The daemon's reading of its node's annotation; a damaged one is an invalid policy."""
    if not text:
        return DrainPolicy()
    try:
        data = json.loads(text)
        if not isinstance(data, Mapping):
            raise ValueError("not a JSON object")
        if "invalid" in data:
            return DrainPolicy(invalid=str(data["invalid"])[:500] or "invalid")
        return _policy(data, "", NODE_ANNOTATION)
    except (ValueError, InputError) as e:
        return DrainPolicy(invalid=f"{NODE_ANNOTATION}: {e}")


def hooks_from_records(records: object) -> list[Hook]:
    """Hooks kept in the daemon's state file (to_dict), re-validated as they are read."""
    if not isinstance(records, list):
        return []
    return [_hook(r, f".afterReturn[{i}]", "state.json") for i, r in enumerate(records)]
