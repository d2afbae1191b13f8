"""`mcc validate` for Kubernetes object files: each MachineConfig checked the way MCO's
ValidateMachineConfig does, its findings printed in ignition-validate's shape with the JSON path
rooted at the document and the file position of that path (see `Finding` for the format).
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from machineconfig import mcoparse
from machineconfig.api import KINDS, MachineConfig, parse_object
from machineconfig.constants import INTERNAL_IGNITION_VERSION
from machineconfig.errors import InputError
from machineconfig.ignition import spec2
from machineconfig.ignition.decode import node_path_at
from machineconfig.ignition.parse import IgnitionParseError, parse
from machineconfig.ignition.report import ERROR, ReportEntry
from machineconfig.ignition.translate import translate
from machineconfig.ignition.validate import validate_config
from machineconfig.unitnames import unit_name_findings
from machineconfig.yamlload import Document, Path, load_text
from mcc.render import KERNEL_TYPES, SUPPORTED_EXTENSIONS

log = logging.getLogger(__name__)

MODE_PERM = mcoparse.MODE_PERM
NOT_AN_OBJECT = "expected an object with apiVersion and kind"
# A top-level `kind:`/`apiVersion:` line only occurs in YAML objects, never in Ignition JSON.
_YAML_OBJECT = re.compile(r"^(?:kind|apiVersion)[ \t]*:", re.MULTILINE)
_JSON_KIND = re.compile(r'"kind"\s*:\s*"')
_JSON_API_VERSION = re.compile(r'"apiVersion"\s*:')
_V2_ENTRY = re.compile(r"^(error|warning|info) at (\$\S*): (.*)$")
_UNEXPECTED_USER = "unexpected user with name: "
# (kind, path, message) before the path is positioned in the file.
Located = tuple[str, Path, str]


# Control characters other than tab, escaped so one finding stays one line whatever the keys
# and values of the file hold.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7f, 0x85, 0x2028, 0x2029) if c != 0x09}


def printable(text: str) -> str:
    return text.translate(_CONTROL)


@dataclass(frozen=True)
class Finding:
    """One report line: `<kind> at <path>, <file>:<line>:<col>: <message>`.

    `path` is rooted at the YAML/JSON document (`$.spec.config.storage.files.0.path`, or
    `$.items.2.spec...` inside a `List`); the position is 1-based, the column counts characters,
    and it points at the key holding the value (or the list item), else at its nearest existing
    ancestor. Without a known column the position is `<file>:<line>`, without a line `<file>`.
    """

    kind: str
    path: str
    file: str
    line: int | None
    col: int | None
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}" + (f":{self.col}" if self.col is not None else "")
        return printable(f"{self.kind} at {self.path}, {where}: {self.message}")


@dataclass
class FileResult:
    """Everything one Kubernetes object file produced."""

    findings: list[Finding]
    notes: list[str]  # stderr lines that are not findings (skipped kinds, unparsable files)
    failed: bool


def path_string(path: Path) -> str:
    return "$" + "".join(f".{p}" for p in path)


def parse_path(text: str) -> Path:
    """`$.a.0.b` back to ("a", 0, "b") (keys containing dots cannot round-trip; none do here)."""
    parts = [p for p in text.split(".")[1:] if p != ""]
    return tuple(int(p) if p.isdigit() else p for p in parts)


def looks_like_objects(raw: bytes) -> bool:
    """True when `raw` holds Kubernetes objects rather than one raw Ignition config.

    A single JSON value is an object file only if it is a mapping with no `ignition` key and a
    string `kind` that is one we model (or `List`) or comes with a string `apiVersion`, so every
    Ignition config keeps ignition-validate's output. Other text counts as objects when it has a top-level YAML `kind:`/`apiVersion:` line
    or, for JSON streams and broken JSON, both a `"kind": "` and an `"apiVersion":` member.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deep for json's decoder
        return bool(_YAML_OBJECT.search(text)) or bool(
            _JSON_KIND.search(text) and _JSON_API_VERSION.search(text))
    if not isinstance(value, dict) or any(k.lower() == "ignition" for k in value):
        return False
    kind = value.get("kind")
    return isinstance(kind, str) and (
        kind in KINDS or kind == "List" or isinstance(value.get("apiVersion"), str))


def validate_objects(raw: bytes, file: str) -> FileResult:
    """Validate every MachineConfig in one YAML/JSON file (`raw` must be UTF-8)."""
    text = raw.decode("utf-8")
    try:
        docs = load_text(text, file)
    except InputError as e:
        return _load_failure(e, file)
    result = FileResult([], [], False)
    for doc in docs:
        for base, data in _objects(doc.data):
            _check_document(result, doc, base, data)
    result.failed = result.failed or any(f.kind == ERROR for f in result.findings)
    return result


def _load_failure(e: InputError, file: str) -> FileResult:
    if e.path:  # a structural problem (duplicate key ...) has a path: report it as a finding
        return FileResult([Finding(ERROR, e.path, file, e.line, None, e.message)], [], True)
    where = file
    mark = getattr(e.__cause__, "problem_mark", None) or getattr(e.__cause__, "context_mark", None)
    if mark is not None:
        where += f":{mark.line + 1}:{mark.column + 1}"
    elif e.line is not None:
        where += f":{e.line}"
    return FileResult([], [printable(f"couldn't parse config: {where}: {e.message}")], True)


def _objects(data: Any) -> Iterator[tuple[Path, Any]]:
    """The objects of one document: itself, or the items of a `kind: List`."""
    if isinstance(data, dict) and data.get("kind") == "List" and isinstance(data.get("items"), list):
        for i, item in enumerate(data["items"]):
            yield ("items", i), item
    else:
        yield (), data


def _check_document(result: FileResult, doc: Document, base: Path, data: Any) -> None:
    def add(kind: str, path: Path, message: str) -> None:
        full = base + path
        line, col = doc.position(full)
        result.findings.append(Finding(kind, path_string(full), doc.file, line, col, message))

    kind = data.get("kind") if isinstance(data, dict) else None
    if not isinstance(kind, str):
        add(ERROR, (), NOT_AN_OBJECT)
        return
    if kind != "MachineConfig":
        # Pools, ControllerConfigs... often share a directory with MachineConfigs: not an error.
        line, _ = doc.position(base)
        metadata = data.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        what = f"{kind} {name}" if isinstance(name, str) and name else kind
        where = f"{doc.file}:{line}" if line is not None else doc.file
        result.notes.append(f"note: {where}: skipping {what}: only MachineConfig objects are "
                            "validated")
        return
    try:
        mc = parse_object(data, doc, path_string(base))
    except InputError as e:  # a wrong type in a field Kubernetes' schema checks
        add(ERROR, parse_path(e.path or "$")[len(base):], e.message)
        return
    assert isinstance(mc, MachineConfig)
    for kind_, path, message in check_machine_config(mc):
        add(kind_, path, message)


def check_machine_config(mc: MachineConfig) -> list[Located]:
    """MCO's per-config checks as (kind, path under the MachineConfig, message), MCO's texts.

    Order: kernelType, the Ignition report, file modes, conversion, extensions. MCO stops at
    the first error; all independent ones are listed here so one run shows every fix needed.
    """
    out: list[Located] = []
    spec = mc.spec
    if spec.kernel_type not in KERNEL_TYPES:
        out.append((ERROR, ("spec", "kernelType"), f"kernelType={spec.kernel_type} is invalid"))
    raw = mcoparse.raw_config(spec.config)
    if raw is None:  # quirk: without a config even the extensions go unchecked
        return out
    out.extend((k, ("spec", "config") + p, m) for k, p, m in ignition_findings(raw))
    invalid = [ext for ext in spec.extensions or [] if ext not in SUPPORTED_EXTENSIONS]
    if invalid:
        out.append((ERROR, ("spec", "extensions"),
                    f"invalid extensions found: [{' '.join(invalid)}]"))
    return out


def ignition_findings(raw: bytes) -> list[Located]:
    """Findings for `spec.config` (paths relative to it), the verdict always MCO's own."""
    version_path: Path = ("ignition", "version")
    out: list[Located] = []
    try:
        parsed: mcoparse.ParsedIgnition | None = mcoparse.ign_parse_wrapper(raw)
    except mcoparse.IgnitionConfigError as e:
        parsed, message = None, str(e)
        if message in (mcoparse.INVALID_VERSION, mcoparse.UNKNOWN_VERSION):
            out.append((ERROR, version_path, message))
        elif message.startswith("parsing Ignition spec v2"):
            out.extend(_v2_findings(raw))
        else:
            out.extend(_v3_findings(raw))
        # MCO would stop here; the modes are still worth reporting, read from the raw JSON.
        out.extend(_mode_findings(_raw_object(raw)))
    if parsed is not None:
        out.extend(_v3_findings(raw) if parsed.major == 3 else _v2_findings(raw))
        if parsed.major == 3 and parsed.source_version != INTERNAL_IGNITION_VERSION:
            # MCO validates again after translating to 3.5.0; rules may differ between versions.
            seen = {(p, m) for _, p, m in out}
            report = validate_config(parsed.config, INTERNAL_IGNITION_VERSION)
            out.extend((e.kind, e.path, e.message) for e in report
                       if e.is_fatal and (e.path, e.message) not in seen)
        out.extend(_mode_findings(parsed.config))
        out.extend(_conversion_findings(raw, parsed))
    if not any(k == ERROR for k, _, _ in out):
        # beyond Ignition (it checks only the suffix): the daemon's unit name rule
        out.extend((ERROR, path, message) for path, message in unit_name_findings(_raw_object(raw)))
    if not any(k == ERROR for k, _, _ in out):
        try:  # the safety net: whatever MCO refuses is an error, even if not explained above
            mcoparse.check_machine_config_ignition(raw)
            mcoparse.converted_config(raw)
        except mcoparse.IgnitionConfigError as e:
            out.append((ERROR, (), str(e)))
    return out


def _v3_findings(raw: bytes) -> list[Located]:
    """Ignition's own report at the config's own version; decode errors located by offset."""
    try:
        entries = list(parse(raw).report)
        reason = None
    except IgnitionParseError as e:
        entries, reason = list(e.report), e.reason
    out = [(e.kind, _entry_path(e, raw), e.message) for e in entries]
    if reason is not None and not any(e.is_fatal for e in entries):
        out.append((ERROR, (), reason))
    return out


def _entry_path(entry: ReportEntry, raw: bytes) -> Path:
    if entry.path or entry.line is None or entry.col is None:
        return entry.path
    # A decode error carries only a position in the JSON text we made from spec.config: find
    # the value there. raw_config() writes one line, so the column is the byte offset + 1.
    return node_path_at(raw, entry.col - 1)


def _v2_findings(raw: bytes) -> list[Located]:
    """The spec 2 decoder's and validator's findings, as MCO's IgnParseWrapper meets them."""
    obj = json.loads(raw)
    if isinstance(obj.get("ignition"), dict):
        obj["ignition"]["version"] = "2.2.0"  # 2.0 and 2.1 are translated up, paths unchanged
    try:
        config = spec2.canonicalize(obj, "Config")
    except InputError as e:
        return [(ERROR, parse_path(e.path or "$"), e.message)]
    out: list[Located] = []
    for entry in spec2.validate_v2(config):
        match = _V2_ENTRY.match(entry)
        if match:
            out.append((match[1], parse_path(match[2]), match[3]))
        else:
            out.append((ERROR, (), entry))
    return out


def _raw_object(raw: bytes) -> dict[str, Any]:
    obj = json.loads(raw)
    return obj if isinstance(obj, dict) else {}


def _mode_findings(config: dict[str, Any]) -> list[Located]:
    """ValidateIgnition's file-mode check (MCO refuses setuid/setgid/sticky bits)."""
    out: list[Located] = []
    storage = config.get("storage")
    files = storage.get("files") if isinstance(storage, dict) else None
    for i, file in enumerate(files if isinstance(files, list) else []):
        mode = file.get("mode") if isinstance(file, dict) else None
        if isinstance(mode, int) and not isinstance(mode, bool) and (mode < 0 or mode > MODE_PERM):
            out.append((ERROR, ("storage", "files", i, "mode"),
                        f"invalid mode {go_octal(mode)} for {file.get('path', '')}, cannot "
                        f"exceed {go_octal(MODE_PERM)}"))
    return out


def _conversion_findings(raw: bytes, parsed: mcoparse.ParsedIgnition) -> list[Located]:
    """ParseAndConvertConfig's refusals (spec 2 users other than core, untranslatable fields)."""
    try:
        mcoparse.converted_config(raw)
    except mcoparse.IgnitionConfigError as e:
        message = str(e)
        users = parsed.config.get("passwd", {}).get("users", [])
        if _UNEXPECTED_USER in message:
            # MCO walks the users newest-first and names the first one that is not core.
            for i in range(len(users) - 1, -1, -1):
                if users[i].get("name") != "core":
                    return [(ERROR, ("passwd", "users", i, "name"), message)]
        return [(ERROR, (), message)]
    return []


def go_octal(value: int) -> str:
    """Go's %#o, as in MCO's `invalid mode 04755` message."""
    if value == 0:
        return "0"
    return ("-" if value < 0 else "") + f"0{abs(value):o}"
