"""/etc/containers/registries.conf as MCO writes it: the containers-registries.conf(5) v2 model,
MCO's edits (insecure and blocked scopes, digest and tag mirror sets) and the exact TOML bytes.

MCO decodes the template's file into containers/image's V2RegistriesConf, edits it with
openshift/runtime-utils' EditRegistriesConfig and encodes it with BurntSushi/toml; the encoder's
layout (field order, two-space indentation per table level, which empty fields are left out) is
reproduced here so the generated files, and so the rendered configs' hashes, are MCO's.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from machineconfig.errors import MachineConfigError

DIGEST_ONLY = "digest-only"
TAG_ONLY = "tag-only"
NEVER_CONTACT_SOURCE = "NeverContactSource"


@dataclass
class Endpoint:
    location: str = ""
    insecure: bool = False
    pull_from_mirror: str = ""


@dataclass
class Registry:
    """A [[registry]] table; a registry is an endpoint too (location, insecure)."""

    prefix: str = ""
    location: str = ""
    insecure: bool = False
    pull_from_mirror: str = ""
    mirrors: list[Endpoint] | None = None
    blocked: bool = False
    mirror_by_digest_only: bool = False

    @property
    def scope(self) -> str:
        """The scope the entry matches: the prefix, else the location."""
        return self.prefix or self.location


@dataclass
class RegistriesConf:
    """None is Go's nil (the key is left out); an empty list is written as `[]`."""

    registries: list[Registry] | None = None
    unqualified_search_registries: list[str] | None = None
    credential_helpers: list[str] | None = None
    short_name_mode: str = ""
    additional_layer_store_auth_helper: str = ""
    aliases: dict[str, str] | None = None


@dataclass
class MirrorSet:
    """One source's mirrors from an ImageDigestMirrorSet, ImageTagMirrorSet or ICSP entry."""

    source: str
    mirrors: list[str] = field(default_factory=list)
    policy: str = ""  # mirrorSourcePolicy; "" is AllowContactingSource


# --- decoding ---------------------------------------------------------------------------------

def _typed(value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise MachineConfigError(f"error unmarshalling registries config: {what}: expected "
                                 f"{kind.__name__}, got {type(value).__name__}")
    return value


def _strings(value: Any, what: str) -> list[str]:
    return [_typed(v, str, what) for v in _typed(value, list, what)]


def _endpoint_fields(table: dict[str, Any], what: str) -> dict[str, Any]:
    return {"location": _typed(table.get("location", ""), str, f"{what}.location"),
            "insecure": _typed(table.get("insecure", False), bool, f"{what}.insecure"),
            "pull_from_mirror": _typed(table.get("pull-from-mirror", ""), str,
                                       f"{what}.pull-from-mirror")}


def decode(text: str) -> RegistriesConf:
    """The template's registries.conf; keys the v2 format does not know are dropped, as MCO's
    decoder drops them."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise MachineConfigError(f"error unmarshalling registries config: {e}") from e
    conf = RegistriesConf()
    if "registry" in doc:
        conf.registries = []
        for i, table in enumerate(_typed(doc["registry"], list, "registry")):
            what = f"registry[{i}]"
            _typed(table, dict, what)
            reg = Registry(prefix=_typed(table.get("prefix", ""), str, f"{what}.prefix"),
                           **_endpoint_fields(table, what),
                           blocked=_typed(table.get("blocked", False), bool, f"{what}.blocked"),
                           mirror_by_digest_only=_typed(table.get("mirror-by-digest-only", False),
                                                        bool, f"{what}.mirror-by-digest-only"))
            if "mirror" in table:
                reg.mirrors = [Endpoint(**_endpoint_fields(_typed(m, dict, f"{what}.mirror"),
                                                           f"{what}.mirror"))
                               for m in _typed(table["mirror"], list, f"{what}.mirror")]
            conf.registries.append(reg)
    if "unqualified-search-registries" in doc:
        conf.unqualified_search_registries = _strings(doc["unqualified-search-registries"],
                                                      "unqualified-search-registries")
    if "credential-helpers" in doc:
        conf.credential_helpers = _strings(doc["credential-helpers"], "credential-helpers")
    conf.short_name_mode = _typed(doc.get("short-name-mode", ""), str, "short-name-mode")
    conf.additional_layer_store_auth_helper = _typed(
        doc.get("additional-layer-store-auth-helper", ""), str, "additional-layer-store-auth-helper")
    if "aliases" in doc:
        aliases = _typed(doc["aliases"], dict, "aliases")
        conf.aliases = {k: _typed(v, str, f"aliases.{k}") for k, v in aliases.items()}
    return conf


# --- encoding (BurntSushi/toml's layout) ------------------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _quoted(s: str) -> str:
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else _quoted(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return _quoted(str(v))


class _Writer:
    """Newlines before tables only once something was written, as the Go encoder does."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def newline(self) -> None:
        if self.parts:
            self.parts.append("\n")

    def kv(self, depth: int, key: str, value: Any) -> None:
        self.parts.append(f"{'  ' * depth}{_key(key)} = {_value(value)}\n")


def _endpoint_direct(w: _Writer, depth: int, e: Endpoint | Registry) -> None:
    if e.location:
        w.kv(depth, "location", e.location)
    if e.insecure:
        w.kv(depth, "insecure", True)
    if e.pull_from_mirror:
        w.kv(depth, "pull-from-mirror", e.pull_from_mirror)


def encode(conf: RegistriesConf) -> bytes:
    """Fields without sub-tables first, in struct order; then the tables and arrays of tables."""
    w = _Writer()
    if conf.registries is not None and not conf.registries:
        w.kv(0, "registry", [])  # an empty array is a plain value, not an array of tables
    for key, value in (("unqualified-search-registries", conf.unqualified_search_registries),
                       ("credential-helpers", conf.credential_helpers)):
        if value is not None:
            w.kv(0, key, value)
    w.kv(0, "short-name-mode", conf.short_name_mode)
    w.kv(0, "additional-layer-store-auth-helper", conf.additional_layer_store_auth_helper)
    for reg in conf.registries or []:
        w.newline()
        w.parts.append("[[registry]]")
        w.newline()
        w.kv(1, "prefix", reg.prefix)  # no omitempty on prefix: always written
        _endpoint_direct(w, 1, reg)
        if reg.blocked:
            w.kv(1, "blocked", True)
        if reg.mirror_by_digest_only:
            w.kv(1, "mirror-by-digest-only", True)
        for mirror in reg.mirrors or []:
            w.newline()
            w.parts.append("  [[registry.mirror]]")
            w.newline()
            _endpoint_direct(w, 2, mirror)
    if conf.aliases is not None:
        w.newline()
        w.parts.append("[aliases]")
        w.newline()
        for k in sorted(conf.aliases):
            w.kv(1, k, conf.aliases[k])
    return "".join(w.parts).encode()


# --- scopes -----------------------------------------------------------------------------------

def scope_is_nested(sub: str, sup: str) -> bool:
    """runtime-utils' ScopeIsNestedInsideScope: `sub` is `sup`, a namespace below it, or (for a
    `*.domain` wildcard) a host under that domain."""
    if sub == sup:
        return True
    if len(sub) > len(sup) and sub.startswith(sup) and sub[len(sup)] == "/":
        return True
    if sup.startswith("*."):
        if ":" in sub:
            host = sub.split(":")[0]
            return host.endswith(sup[1:]) and "/" not in host
        return sub.split("/")[0].endswith(sup[1:])
    return False


def is_valid_scope(scope: str) -> bool:
    """A registries.conf prefix: any non-empty scope without `*`, or `*.domain`."""
    if not scope:
        return False
    if "*" not in scope:
        return True
    return scope.startswith("*.") and not any(c in scope[2:] for c in "/@:*")


# --- mirror sets ------------------------------------------------------------------------------

def _topo_sorted(edges: list[tuple[str, str]]) -> list[str]:
    """runtime-utils' topoGraph.Sorted: Kahn's order with ties broken by name, and a loop broken
    at the smallest unused node, so the result is the same for the same edges."""
    ins: dict[str, set[str]] = {}
    outs: dict[str, set[str]] = {}
    for a, b in edges:
        ins.setdefault(a, set())
        outs.setdefault(b, set())
        outs.setdefault(a, set()).add(b)
        ins.setdefault(b, set()).add(a)
    nodes = sorted(ins)
    used: set[str] = set()
    queue = [n for n in nodes if not ins[n]]
    out: list[str] = []
    index = 0
    while queue or index < len(nodes):
        if queue:
            node = queue.pop(0)
        else:
            node = nodes[index]
            index += 1
            if node in used:
                continue
        used.add(node)
        out.append(node)
        batch = []
        for nxt in outs[node]:
            ins[nxt].discard(node)
            if not ins[nxt] and nxt not in used:
                batch.append(nxt)
        queue.extend(sorted(batch))
    return out


def merged_mirror_sets(sets: list[MirrorSet]) -> list[MirrorSet]:
    """One entry per source (sorted), its mirrors in an order every input set agrees with where
    possible, the source itself dropped when it comes last; NeverContactSource if any set says so.
    A set whose mirrors are only the source is no mirror set."""
    by_source: dict[str, list[list[str]]] = {}
    never: set[str] = set()
    for s in sets:
        if not any(m != s.source for m in s.mirrors):
            continue
        if s.policy == NEVER_CONTACT_SOURCE:
            never.add(s.source)
        by_source.setdefault(s.source, []).append(list(s.mirrors))
    out = []
    for source in sorted(by_source):
        edges: list[tuple[str, str]] = []
        for mirrors in by_source[source]:
            edges += list(zip(mirrors, mirrors[1:]))
            if source not in mirrors:
                edges.append((mirrors[-1], source))
        ordered = _topo_sorted(edges)
        if ordered and ordered[-1] == source:
            ordered = ordered[:-1]
        out.append(MirrorSet(source, ordered, NEVER_CONTACT_SOURCE if source in never else ""))
    return out


def edit_registries_config(conf: RegistriesConf, insecure: list[str], blocked: list[str],
                           digest_sets: list[MirrorSet], tag_sets: list[MirrorSet]) -> None:
    """EditRegistriesConfig, in place: digest then tag mirrors, blocked entries, the insecure and
    blocked flags pushed down to nested scopes, and mirrors copied to nested scopes without any."""
    regs = conf.registries if conf.registries is not None else []
    conf.registries = regs

    def entry(scope: str) -> Registry:
        for reg in regs:
            if reg.scope == scope:
                return reg
        reg = Registry(prefix=scope) if scope.startswith("*.") else Registry(location=scope)
        regs.append(reg)
        return reg

    digest = merged_mirror_sets(digest_sets)
    tag = merged_mirror_sets(tag_sets)
    for merged, pull in ((digest, DIGEST_ONLY), (tag, TAG_ONLY)):
        for item in merged:
            reg = entry(item.source)
            if item.policy == NEVER_CONTACT_SOURCE:
                reg.blocked = True
            reg.mirrors = (reg.mirrors or []) + [Endpoint(m, pull_from_mirror=pull)
                                                 for m in item.mirrors]
    for scope in blocked:
        entry(scope)
    for scope in insecure:
        entry(scope).insecure = True
        for reg in regs:
            if scope_is_nested(reg.scope, scope):
                reg.insecure = True
            for mirror in reg.mirrors or []:
                if scope_is_nested(mirror.location, scope):
                    mirror.insecure = True
    for scope in blocked:
        entry(scope).blocked = True
        for reg in regs:
            if scope_is_nested(reg.scope, scope):
                reg.blocked = True
    for item in digest + tag:
        mirrored = entry(item.source)
        base = mirrored.scope
        for reg in regs:
            if reg.scope != base and scope_is_nested(reg.scope, base) and not reg.mirrors:
                if base.startswith("*."):
                    raise MachineConfigError("internal error: mirrorsAdjustedForNestedScope for "
                                             f'a wildcard scope "{base}"')
                suffix = reg.scope[len(base):]
                reg.mirrors = [Endpoint(m.location + suffix, m.insecure, m.pull_from_mirror)
                               for m in mirrored.mirrors or []]


# --- lookups (containers/image FindRegistry and PullSourcesFromReference) ---------------------

def _prefix_match(ref: str, prefix: str) -> int:
    """How much of `ref` the registry prefix matches, -1 if it does not."""
    if prefix.startswith("*."):
        index = ref.find(prefix[1:])
        if index == -1 or "/" in ref[:index]:
            return -1
        index += len(prefix) - 1
        return index if index == len(ref) or ref[index] in ":/@" else -1
    if ref == prefix:
        return len(prefix)
    if len(ref) > len(prefix) and ref.startswith(prefix) and ref[len(prefix)] in ":/@":
        return len(prefix)
    return -1


def find_registry(conf: RegistriesConf, ref: str) -> Registry | None:
    """The entry with the longest prefix matching `ref` (prefix defaults to the location)."""
    best: Registry | None = None
    longest = 0
    for reg in conf.registries or []:
        prefix = (reg.prefix or reg.location).rstrip("/")
        if _prefix_match(ref, prefix) != -1 and len(prefix) > longest:
            best, longest = reg, len(prefix)
    return best


def pull_sources(reg: Registry, ref: str, digested: bool) -> list[tuple[Endpoint, str]]:
    """Where a pull of `ref` goes, in order: the usable mirrors, then the registry itself; each
    with the reference rewritten onto that endpoint."""
    prefix = (reg.prefix or reg.location).rstrip("/")
    endpoints: list[Endpoint] = []
    if reg.mirror_by_digest_only:
        if digested:
            endpoints += reg.mirrors or []
    else:
        for m in reg.mirrors or []:
            if (m.pull_from_mirror == DIGEST_ONLY and not digested) or (
                    m.pull_from_mirror == TAG_ONLY and digested):
                continue
            endpoints.append(m)
    endpoints.append(Endpoint(reg.location, reg.insecure))
    out = []
    for e in endpoints:
        cut = _prefix_match(ref, prefix)
        if cut == -1:
            raise MachineConfigError(f"invalid prefix '{prefix}' for reference '{ref}'")
        out.append((e, ref if not e.location else e.location.rstrip("/") + ref[cut:]))
    return out
