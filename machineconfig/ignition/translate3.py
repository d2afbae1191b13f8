"""Translation of canonical config dicts between spec versions 3.0 ... 3.6 and 3.7.0-experimental,
and the errors every translation raises.

Up-steps follow Ignition's own translators; down-steps refuse, with the field path, anything the older
spec cannot express (ign-converter's rules, minus its silent drops). Spec 2 conversions live in
`translate_v2`, the entry point for any pair of versions in `translate`.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

from machineconfig.errors import MachineConfigError
from machineconfig.ignition.schema import (
    JSON, LIST, MINOR_OF, NULLABLE, OBJ, PTR, SCALARS, SLIST, SN, VERSIONS, S, shaped_fields, zero_value,
)
from machineconfig.ignition.url import schemes_for, url_scheme

__all__ = ["Inexpressible", "TranslationError", "reshape", "reshape_reference", "translate3"]


class TranslationError(MachineConfigError):
    """A config cannot be translated to the requested version; the message names the field path."""


class Inexpressible(TranslationError):
    """A valid config uses a field an older spec has no way to say (a down-translation refusal).

    `field` is the field path without the leading `$.` (e.g. `storage.luks.0.cex.enabled`).
    """

    def __init__(self, target: str, path: str, what: str) -> None:
        super().__init__(f"cannot translate to {target}: {path} {what}")
        self.field = path[2:] if path.startswith("$.") else path


_SPECIAL_BITS = 0o7000
# Custom clevis pins a 3.2-3.5 consumer accepts; 3.6 lifted the restriction.
_OLD_CLEVIS_PINS = frozenset({"tpm2", "tang", "sss"})


def translate3(config: JSON, to_version: str) -> JSON:
    """Translate between 3.x versions one step at a time (so every step's custom rules apply)."""
    src = version_minor(str(config.get("ignition", {}).get("version", "")))
    dst = version_minor(to_version)
    if src == dst:
        return copy.deepcopy(config)
    step = 1 if dst > src else -1
    for m in range(src, dst, step):
        target = m + step
        if step < 0:
            for check in _DOWN_CHECKS.get(target, ()):
                check(config, m, VERSIONS[target])
        config = reshape(config, "Config", "Config", m, target)
        config.setdefault("ignition", {})["version"] = VERSIONS[target]
        config["ignition"] = _reorder_ignition(config["ignition"])
        if step > 0 and target == 6:
            _mask_special_bits(config)
    return config


def version_minor(version: str) -> int:
    if version not in MINOR_OF:
        raise TranslationError(f"unsupported config version {version!r}")
    return MINOR_OF[version]


def _reorder_ignition(ign: JSON) -> JSON:
    # version is set after shaping; keep Go's field order (version last among Ignition's fields)
    order = ("config", "proxy", "security", "timeouts", "version")
    return {k: ign[k] for k in order if k in ign} | {k: v for k, v in ign.items() if k not in order}


def reshape(obj: JSON, sref: str, dref: str, src: int, dst: int) -> JSON:
    """Copy the fields that exist at both versions, adjusting canonical form where nullability changes.

    Compiled once per (struct pair, versions) into straight-line code; `reshape_reference` is the
    table-driven definition it agrees with.
    """
    fn = _RESHAPERS.get((sref, dref, src, dst))
    if fn is None:
        fn = _compile_reshape(sref, dref, src, dst)
    return fn(obj)


_RESHAPERS: dict[tuple[str, str, int, int], Callable[[JSON], JSON]] = {}


def _compile_reshape(sref: str, dref: str, src: int, dst: int) -> Callable[[JSON], JSON]:
    src_fields = {f.name: (kind, ref) for f, kind, ref in shaped_fields(sref, src)}
    namespace: dict[str, Any] = {}
    lines = ["def _reshape(obj):", "    out = {}"]
    for n, (f, kind, ref) in enumerate(shaped_fields(dref, dst)):
        if f.name not in src_fields:
            continue
        skind, sub_src = src_fields[f.name]
        key = repr(f.name)
        sub = f"_r{n}"
        if kind in (LIST, OBJ, PTR):
            namespace[sub] = _RESHAPERS.get((sub_src, ref, src, dst)) or _compile_reshape(sub_src, ref, src, dst)
        # `in` and [] as reshape_reference does them (also for non-dict input)
        lines.append(f"    if {key} in obj:")
        lines.append(f"        v = obj[{key}]")
        if kind in SCALARS:
            if kind not in NULLABLE:
                lines += [f"        if v != {zero_value(f)!r}:", f"            out[{key}] = v"]
            else:
                lines.append(f"        out[{key}] = v")
        elif kind == SLIST:
            lines.append(f"        out[{key}] = list(v)")
        elif kind == LIST:
            lines += [f"        items = [{sub}(item) for item in v]", "        if items:",
                      f"            out[{key}] = items"]
        elif kind == OBJ:
            lines += [f"        sub = {sub}(v)", "        if sub:", f"            out[{key}] = sub"]
        else:  # PTR
            lines.append(f"        out[{key}] = {sub}(v)")
        if skind == S and kind == SN:
            # a plain string that becomes a pointer is carried over as a pointer to "" (upstream StrToPtr)
            lines += ["    else:", f"        out[{key}] = ''"]
    lines.append("    return out")
    exec(compile("\n".join(lines) + "\n", f"<reshape {sref}->{dref} 3.{src}->3.{dst}>", "exec"), namespace)
    fn: Callable[[JSON], JSON] = namespace["_reshape"]
    _RESHAPERS[(sref, dref, src, dst)] = fn
    return fn


def reshape_reference(obj: JSON, sref: str, dref: str, src: int, dst: int) -> JSON:
    """The table-driven definition `reshape` is compiled from (tests compare the two)."""
    src_fields = {f.name: (kind, ref) for f, kind, ref in shaped_fields(sref, src)}
    out: JSON = {}
    for f, kind, ref in shaped_fields(dref, dst):
        if f.name not in src_fields:
            continue
        skind, sub_src = src_fields[f.name]
        if f.name not in obj:
            # a plain string that becomes a pointer is carried over as a pointer to "" (upstream StrToPtr)
            if skind == S and kind == SN:
                out[f.name] = ""
            continue
        value = obj[f.name]
        if kind in SCALARS:
            if kind not in NULLABLE and value == zero_value(f):
                continue  # a pointer's zero value has no spelling once the field is a plain value
            out[f.name] = value
        elif kind == SLIST:
            out[f.name] = list(value)
        elif kind == LIST:
            items = [reshape_reference(item, sub_src, ref, src, dst) for item in value]
            if items:
                out[f.name] = items
        elif kind in (OBJ, PTR):
            sub = reshape_reference(value, sub_src, ref, src, dst)
            # a pointer struct exists whenever its source existed; a value struct only when non-empty
            if sub or kind == PTR:
                out[f.name] = sub
    return out


def walk(obj: JSON, struct: str, minor: int, path: str = "$") -> Iterator[tuple[str, JSON, str]]:
    """Yield (struct name, dict, JSON path) for every object in the tree, parents first."""
    yield struct, obj, path
    for f, kind, ref in shaped_fields(struct, minor):
        value = obj.get(f.name)
        if value is None:
            continue
        if kind in (OBJ, PTR):
            yield from walk(value, ref, minor, f"{path}.{f.name}")
        elif kind == LIST:
            for i, item in enumerate(value):
                yield from walk(item, ref, minor, f"{path}.{f.name}.{i}")


def _fail(target: str, path: str, what: str) -> TranslationError:
    return Inexpressible(target, path, what)


def _objects(config: JSON, minor: int, struct: str) -> Iterator[tuple[JSON, str]]:
    for name, obj, path in walk(config, "Config", minor):
        if name == struct:
            yield obj, path


def _resources(config: JSON, minor: int) -> Iterator[tuple[JSON, str]]:
    for name, obj, path in walk(config, "Config", minor):
        if name in ("Resource", "ConfigReference", "CaReference", "FileContents"):
            yield obj, path


def _check_virtiofs(config: JSON, minor: int, target: str) -> None:
    for fs, path in _objects(config, minor, "Filesystem"):
        if fs.get("format") == "virtiofs":
            raise _fail(target, f"{path}.format", '"virtiofs" is not supported before 3.7.0-experimental')


def _check_special_bits(why: str) -> Callable[[JSON, int, str], None]:
    def check(config: JSON, minor: int, target: str) -> None:
        for struct in ("File", "Directory"):
            for node, path in _objects(config, minor, struct):
                mode = node.get("mode")
                if isinstance(mode, int) and mode & _SPECIAL_BITS:
                    raise _fail(target, f"{path}.mode", f"{mode:#o} has setuid/setgid/sticky bits, {why}")
    return check


def _check_clevis_pin(config: JSON, minor: int, target: str) -> None:
    for custom, path in _objects(config, minor, "ClevisCustom"):
        pin = custom.get("pin")
        if pin and pin not in _OLD_CLEVIS_PINS:
            raise _fail(target, f"{path}.pin", f"{pin!r} is not supported before 3.6.0 (only tpm2, tang, sss)")


def _check_cex(config: JSON, minor: int, target: str) -> None:
    for cex, path in _objects(config, minor, "Cex"):
        # enabled:false means the same as no cex at all, so only a true value is refused
        if cex.get("enabled") is True:
            raise _fail(target, f"{path}.enabled", "is not supported before 3.5.0")


def _check_v34(config: JSON, minor: int, target: str) -> None:
    for tang, path in _objects(config, minor, "Tang"):
        if tang.get("advertisement"):
            raise _fail(target, f"{path}.advertisement", "is not supported before 3.4.0")
    for luks, path in _objects(config, minor, "Luks"):
        if luks.get("discard") is True:
            raise _fail(target, f"{path}.discard", "is not supported before 3.4.0")
        if luks.get("openOptions"):
            raise _fail(target, f"{path}.openOptions", "is not supported before 3.4.0")
    _check_schemes(config, minor, target)


def _check_schemes(config: JSON, minor: int, target: str) -> None:
    # the schemes 3.<minor> has and the target lacks; url.schemes_for says which spec added which
    lost = schemes_for(minor) - schemes_for(MINOR_OF[target])
    if not lost:
        return
    for res, path in _resources(config, minor):
        scheme = url_scheme(str(res.get("source") or ""))
        if scheme in lost:
            since = VERSIONS[min(m for m in VERSIONS if scheme in schemes_for(m))]
            raise _fail(target, f"{path}.source", f"uses the {scheme}: scheme, which is not supported before {since}")


def _check_v33(config: JSON, minor: int, target: str) -> None:
    if config.get("kernelArguments"):
        raise _fail(target, "$.kernelArguments", "is not supported before 3.3.0")
    for fs, path in _objects(config, minor, "Filesystem"):
        if fs.get("format") == "none":
            raise _fail(target, f"{path}.format", '"none" is not supported before 3.3.0')


def _check_v32(config: JSON, minor: int, target: str) -> None:
    if config.get("storage", {}).get("luks"):
        raise _fail(target, "$.storage.luks", "is not supported before 3.2.0")
    for struct in ("PasswdUser", "PasswdGroup"):
        for entry, path in _objects(config, minor, struct):
            if entry.get("shouldExist") is False:
                raise _fail(target, f"{path}.shouldExist", "false is not supported before 3.2.0")
    for part, path in _objects(config, minor, "Partition"):
        if part.get("resize") is True:
            raise _fail(target, f"{path}.resize", "is not supported before 3.2.0")
    _check_schemes(config, minor, target)


def _check_v31(config: JSON, minor: int, target: str) -> None:
    if config.get("ignition", {}).get("proxy"):
        raise _fail(target, "$.ignition.proxy", "is not supported before 3.1.0")
    for res, path in _resources(config, minor):
        if res.get("httpHeaders"):
            raise _fail(target, f"{path}.httpHeaders", "is not supported before 3.1.0")
        if ".storage.files." not in path and "compression" in res:
            raise _fail(target, f"{path}.compression", "is not supported before 3.1.0 outside file contents")
        if str(res.get("verification", {}).get("hash", "")).startswith("sha256-"):
            raise _fail(target, f"{path}.verification.hash", "sha256 is not supported before 3.1.0")
    for fs, path in _objects(config, minor, "Filesystem"):
        if fs.get("mountOptions"):
            raise _fail(target, f"{path}.mountOptions", "is not supported before 3.1.0")


# Checks run before the down-step whose *target* minor is the key. Deliberate departures from
# ign-converter, each because the older consumer would otherwise do something else than asked:
# - 3.5 -> 3.4 refuses cex.enabled=true (ign-converter's type check never fires and drops cex) and
#   keeps tang advertisements, which 3.4 can express (ign-converter's v35tov34 drops them);
# - 3.6 -> 3.5 refuses special mode bits (a 3.5 consumer strips them) and custom clevis pins other
#   than tpm2/tang/sss (a 3.5 consumer rejects them); ign-converter has no 3.6 step;
# - 3.x -> 3.0 exists (MCO has no path to 3.0, but the rules are plain);
# - values equal to the older spec's default (discard=false, resize=false, shouldExist=true,
#   advertisement="", cex.enabled=false) are dropped rather than refused, as ign-converter does.
# Inputs are not re-validated: callers pass configs that parsed at their own version.
_DOWN_CHECKS: dict[int, tuple[Callable[[JSON, int, str], None], ...]] = {
    6: (_check_virtiofs,),
    # a 3.5 consumer strips special bits (with a warning), so passing them down would silently lose them
    5: (_check_special_bits("which are not honoured before 3.6.0"), _check_clevis_pin),
    4: (_check_cex,),
    3: (_check_v34, _check_special_bits("which are refused below 3.4.0 (as ign-converter does)")),
    2: (_check_v33,),
    1: (_check_v32,),
    0: (_check_v31,),
}


def _mask_special_bits(config: JSON) -> None:
    # 3.6 honours setuid/setgid/sticky; older specs never did, so Ignition strips them when translating up
    for struct in ("File", "Directory"):
        for node, _path in _objects(config, 6, struct):
            if isinstance(node.get("mode"), int):
                node["mode"] &= ~_SPECIAL_BITS

