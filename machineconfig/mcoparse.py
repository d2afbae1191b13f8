"""MCO's own Ignition glue: IgnParseWrapper, ParseAndConvertConfig and ValidateIgnition.

Version dispatch (3.0-3.5, else spec 2.2) with MCO's exact error texts, spec 2 de-duplication
(`removeIgnDuplicateFilesUnitsUsers`) and conversion to the internal 3.5.0. Shared by mcc/mcs/mcd.
"""
from __future__ import annotations

import base64
import binascii
import copy
import functools
import gzip
import json
import logging
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from machineconfig.constants import INTERNAL_IGNITION_VERSION
from machineconfig.errors import InputError, MachineConfigError
from machineconfig.ignition import decode as ign_decode
from machineconfig.ignition import parse as ign_parse
from machineconfig.ignition import rules as ign_rules
from machineconfig.ignition import spec2
from machineconfig.ignition import url as ign_url
from machineconfig.ignition import version as ign_version
from machineconfig.ignition.validate import validate_config
from machineconfig.ignition.translate import TranslationError, translate
from machineconfig.unitnames import unit_name_findings

log = logging.getLogger(__name__)

JSON = dict[str, Any]
SUPPORTED_SPEC_VERSIONS = "2.2,3.0,3.1,3.2,3.3,3.4,3.5"
# What MCO's ParseCompatibleVersion accepts (the internal version and everything below it).
MCO_V3_VERSIONS = frozenset({"3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0", "3.5.0"})
# Parsed configs are kept for raw inputs totalling at most this many bytes.
CACHE_BUDGET_BYTES = 64 << 20
_T = TypeVar("_T")
# The parse tree of a raw config when the caller can build it cheaper than decoding the bytes
# (decode.tree_of_object); asked only when the parse is not remembered already.
TreeHint = Callable[[], Any]
# ModePerm: setuid/setgid/sticky bits are refused in MachineConfigs.
MODE_PERM = 0o777

INVALID_VERSION = ("parsing Ignition config failed: invalid version. Supported spec versions: "
                   + SUPPORTED_SPEC_VERSIONS)
UNKNOWN_VERSION = ("parsing Ignition config failed: unknown version. Supported spec versions: "
                   + SUPPORTED_SPEC_VERSIONS)


class IgnitionConfigError(MachineConfigError):
    """A MachineConfig's Ignition config was refused; `str()` is MCO's exact message."""


@dataclass
class ParsedIgnition:
    """IgnParseWrapper's result: a 3.5.0 canonical dict (major 3) or a 2.2.0 one (major 2)."""

    major: int
    config: JSON
    source_version: str = ""


def raw_config(config: Any) -> bytes | None:
    """The raw bytes MCO sees for `spec.config` (None when absent/null, like RawExtension)."""
    if config is None:
        return None
    if isinstance(config, (bytes, bytearray)):
        return bytes(config)  # already the raw JSON text
    # Same text as the MachineConfig JSON the object came from (json.dumps default separators).
    # A lone surrogate (the JSON had an unpaired "\udXXX" escape) has no UTF-8 form: it is
    # written back as that escape, which the parser then reads as Go does (U+FFFD).
    return json.dumps(config, ensure_ascii=False).encode("utf-8", "backslashreplace")


def _report_text(report: Any) -> str:
    lines = report.lines() if hasattr(report, "lines") else str(report).splitlines()
    return "\n".join(lines)


def ign_parse_wrapper(raw: bytes) -> ParsedIgnition:
    """IgnParseWrapper: spec 3.0-3.5 (translated to 3.5.0), else spec 2.2; MCO's error texts."""
    return copy.deepcopy(_parsed(raw))


class _ByteBudgetCache:
    """An LRU map keyed by raw config bytes, bounded by the total size of those keys (a
    long-running controller must not keep every config it ever parsed)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        self.entries: OrderedDict[bytes, Any] = OrderedDict()

    def get(self, raw: bytes) -> Any:
        value = self.entries.get(raw)
        if value is not None:
            self.entries.move_to_end(raw)
        return value

    def put(self, raw: bytes, value: Any) -> None:
        if len(raw) > self.budget or raw in self.entries:
            return
        self.entries[raw] = value
        self.size += len(raw)
        while self.size > self.budget:
            old, _ = self.entries.popitem(last=False)
            self.size -= len(old)

    def clear(self) -> None:
        self.entries.clear()
        self.size = 0


_CACHES: list[_ByteBudgetCache] = []


def clear_caches() -> None:
    """Forget every memoized parse and source verdict (benchmarks measure cold renders with it)."""
    for cache in _CACHES:
        cache.clear()
    ign_url.clear_caches()
    ign_rules.clear_caches()


def _cached(func: Callable[..., _T]) -> Callable[..., _T]:
    """Memoize on the raw bytes, errors included: a pool renders the same inputs many times
    (every pool re-validates the worker configs). Results are shared: never mutate them. A
    `tree` hint (TreeHint) is passed on to `func` on a miss and is no part of the key."""
    cache = _ByteBudgetCache(CACHE_BUDGET_BYTES)
    _CACHES.append(cache)

    @functools.wraps(func)
    def wrapper(raw: bytes, tree: TreeHint | None = None) -> _T:
        hit = cache.get(raw)
        if hit is None:
            try:
                hit = (func(raw) if tree is None else func(raw, tree=tree), None)
            except IgnitionConfigError as e:
                hit = (None, e)
            cache.put(raw, hit)
        value, error = hit
        if error is not None:
            raise IgnitionConfigError(str(error)) from error
        return value  # type: ignore[no-any-return]
    return wrapper


@_cached
def _parsed(raw: bytes, tree: TreeHint | None = None) -> ParsedIgnition:
    # The C scanner's tree serves the version stub and the parser alike (one JSON decode), or
    # the caller's tree of the same document, built from the object the bytes were dumped from
    fast_root = tree() if tree is not None else None
    if fast_root is None:
        fast_root = ign_decode.parse_json_fast(raw)
    text = _version_text(raw) if fast_root is None else _version_text_of_tree(fast_root)
    if text is None:
        # not even a version stub: the parser says why
        return ParsedIgnition(3, *_parse_v3(raw, fast_root))
    if text == "":
        raise IgnitionConfigError(INVALID_VERSION)
    try:
        spec_version = ign_version.match_spec(text)
    except ign_version.VersionParseError as e:
        raise IgnitionConfigError(INVALID_VERSION) from e
    except LookupError:
        spec_version = ""
    if spec_version in MCO_V3_VERSIONS:
        return ParsedIgnition(3, *_parse_v3(raw, fast_root))
    # ParseCompatibleVersion said "unknown version" (3.6 included): MCO falls back to spec 2.
    return ParsedIgnition(2, _parse_v2(raw, text), "2.2.0")


def _version_text(raw: bytes) -> str | None:
    """`ignition.version` as Ignition's version stub decodes it ("" when absent, None if invalid)."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    ignition = obj.get("ignition")
    if ignition is None:
        return ""
    if not isinstance(ignition, dict):
        return None
    version = ignition.get("version")
    if version is None:
        return ""
    return version if isinstance(version, str) else None


def _last_member(obj: Any, key: str) -> Any:
    """The value of `key` in an object node of that tree (the last one, as json.loads keeps)."""
    found = None
    for member in obj.members:
        if member.key == key:
            found = member.node
    return found


def _version_text_of_tree(root: Any) -> str | None:
    """_version_text from decode.parse_json_fast's tree of the same bytes (which exists only when
    json.loads reads them as the same document): the last duplicate key wins, as in a dict."""
    if root.kind != "object":
        return None
    ignition = _last_member(root, "ignition")
    if ignition is None or ignition.kind == "null":
        return ""
    if ignition.kind != "object":
        return None
    version = _last_member(ignition, "version")
    if version is None or version.kind == "null":
        return ""
    return str(version.value) if version.kind == "string" else None


def _parse_v3(raw: bytes, fast_root: Any = None) -> tuple[JSON, str]:
    try:
        result = ign_parse.parse(raw, fast_root=fast_root)
    except ign_parse.IgnitionParseError as e:
        if e.reason == "invalid config version (couldn't parse)":
            raise IgnitionConfigError(INVALID_VERSION) from e
        if e.reason == "unsupported config version":
            raise IgnitionConfigError(UNKNOWN_VERSION) from e
        raise IgnitionConfigError("parsing Ignition config spec v3 failed with error: "
                                  f"{e.reason}\nReport: {_report_text(e.report)}") from e
    config: JSON = result.config
    if result.version != INTERNAL_IGNITION_VERSION:
        config = translate(config, INTERNAL_IGNITION_VERSION)
    return config, result.version


def _parse_v2(raw: bytes, version: str) -> JSON:
    # ign2.Parse accepts 2.0-2.2 (go-semver equality) and translates to 2.2; the fields we
    # read kept their shape, so only the version changes.
    semver = ign_version.parse_semver(version)
    if semver not in {ign_version.parse_semver(v) for v in ("2.0.0", "2.1.0", "2.2.0")}:
        raise IgnitionConfigError(UNKNOWN_VERSION)
    obj = spec2.upgrade_to_v22(json.loads(raw), semver.minor)
    obj["ignition"]["version"] = "2.2.0"
    try:
        config = spec2.canonicalize(obj, "Config")
    except InputError as e:
        raise IgnitionConfigError(f"parsing Ignition spec v2 failed with error: config is not "
                                  f"valid\nReport: error at {e.path}: {e.message}") from e
    entries = spec2.validate_v2(config)
    if any(entry.startswith("error") for entry in entries):
        raise IgnitionConfigError("parsing Ignition spec v2 failed with error: config is not "
                                  "valid\nReport: " + "\n".join(entries))
    return config


def validate_ignition(parsed: ParsedIgnition) -> None:
    """ValidateIgnition: Ignition's rules on the converted config, then the file-mode check.

    (MCO's "an empty config is valid" shortcut never fires after parsing: the version is set.)
    """
    # A 3.5.0 source was validated by the parser under the very same rules.
    if parsed.major == 3 and parsed.source_version != INTERNAL_IGNITION_VERSION:
        report = validate_config(parsed.config, INTERNAL_IGNITION_VERSION)
        if report.is_fatal:
            raise IgnitionConfigError(f"invalid ignition V3 config found: {_report_text(report)}")
    for file in parsed.config.get("storage", {}).get("files", []):
        mode = file.get("mode")
        if isinstance(mode, int) and (mode < 0 or mode > MODE_PERM):
            raise IgnitionConfigError(
                f"invalid mode {_go_octal(mode)} for {file.get('path', '')}, cannot exceed "
                f"{_go_octal(MODE_PERM)}")


def _go_octal(value: int) -> str:
    """Go's %#o."""
    if value == 0:
        return "0"
    return ("-" if value < 0 else "") + f"0{abs(value):o}"


@_cached
def check_machine_config_ignition(raw: bytes) -> None:
    """The Ignition half of ValidateMachineConfig: IgnParseWrapper then ValidateIgnition, then
    (beyond MCO: Ignition checks only the suffix) unit, drop-in and [Install] names are plain
    file names, the rule the daemon applies (machineconfig.unitnames)."""
    parsed = _parsed(raw)
    validate_ignition(parsed)
    for path, problem in unit_name_findings(parsed.config):
        where = "$" + "".join(f".{p}" for p in path)
        raise IgnitionConfigError(f"{problem} at {where}")


def parse_and_convert_config(raw: bytes) -> JSON:
    """ParseAndConvertConfig: any supported spec to a 3.5.0 canonical dict (a fresh copy)."""
    return copy.deepcopy(converted_config(raw))


@_cached
def converted_config(raw: bytes, tree: TreeHint | None = None) -> JSON:
    """ParseAndConvertConfig's result, shared and cached: callers must not modify it. `tree`:
    see TreeHint."""
    try:
        parsed = _parsed(raw, tree)
    except IgnitionConfigError as e:
        raise IgnitionConfigError(f"failed to parse Ignition config: {e}") from e
    if parsed.major == 3:
        return parsed.config
    deduped = remove_ign_duplicate_files_units_users(parsed.config)
    try:
        return translate(deduped, INTERNAL_IGNITION_VERSION)
    except TranslationError as e:
        raise IgnitionConfigError(
            f"failed to convert Ignition config spec v2 to v3: unable to convert Ignition spec v2 "
            f"config to v3: {e}") from e


def remove_ign_duplicate_files_units_users(config: JSON) -> JSON:
    """MCO's de-duplication of a 2.2 config before conversion (spec 3 forbids duplicates)."""
    config = copy.deepcopy(config)
    storage = config.get("storage", {})
    files = storage.get("files", [])
    seen: set[str] = set()
    out_files = []
    for f in reversed(files):  # the last entry for a path wins; result is newest-first
        if f.get("path") in seen:
            continue
        seen.add(f.get("path", ""))
        out_files.append(f)
    systemd = config.get("systemd", {})
    out_units: list[JSON] = []
    unit_names: set[str] = set()
    for unit in reversed(systemd.get("units", [])):
        name = unit.get("name", "")
        if name in unit_names:
            # an older duplicate contributes the dropins the newest entry does not have
            for kept in out_units:
                if kept.get("name") == name:
                    have = {d.get("name") for d in kept.get("dropins", [])}
                    for dropin in unit.get("dropins", []):
                        if dropin.get("name") not in have:
                            kept.setdefault("dropins", []).append(dropin)
            continue
        out_units.append(unit)
        unit_names.add(name)
    passwd = config.get("passwd", {})
    users = passwd.get("users", [])
    if users:
        out_user = copy.deepcopy(users[-1])
        for user in [users[-1]] + users[-2::-1]:
            if user.get("name") != "core":
                raise IgnitionConfigError(
                    f"unexpected user with name: {user.get('name', '')}. Only core user is supported")
        keys = list(out_user.get("sshAuthorizedKeys", []))
        for user in users[-2::-1]:
            keys.extend(user.get("sshAuthorizedKeys", []))
        deduped = list(dict.fromkeys(keys))
        if deduped:
            out_user["sshAuthorizedKeys"] = deduped
        else:
            out_user.pop("sshAuthorizedKeys", None)
        passwd["users"] = [out_user]
    _set_or_drop(storage, "files", out_files)
    _set_or_drop(systemd, "units", out_units)
    _set_or_drop(config, "storage", storage)
    _set_or_drop(config, "systemd", systemd)
    return config


def _set_or_drop(obj: JSON, key: str, value: Any) -> None:
    if value:
        obj[key] = value
    else:
        obj.pop(key, None)


def parse_and_convert_gzipped_config(raw: bytes) -> JSON:
    """ParseAndConvertGzippedConfig: base64(gzip(json)), gzip(json) or plain JSON."""
    try:  # Go's base64 decoder skips line breaks
        decoded: bytes | None = base64.b64decode(raw.replace(b"\r", b"").replace(b"\n", b""),
                                                 validate=True)
    except (binascii.Error, ValueError):
        decoded = None
    for candidate in (decoded, raw):
        # MCO's magic check reads `b[0] != 0x1f && b[1] != 0x8b` for "not gzipped", so one
        # matching byte is enough to try gunzip.
        if candidate is not None and len(candidate) >= 2 and (
                candidate[0] == 0x1F or candidate[1] == 0x8B):
            try:
                return parse_and_convert_config(gzip.decompress(candidate))
            except (OSError, EOFError, zlib.error) as e:
                raise IgnitionConfigError(f"unable to read ignition config: {e}") from e
    return parse_and_convert_config(raw)
