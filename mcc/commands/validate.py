"""`mcc validate FILE...`: check Ignition configs exactly like upstream `ignition-validate`, and
MachineConfig YAML/JSON files the way MCO's ValidateMachineConfig does.

Raw Ignition: each file's report lines go to stdout unchanged (`error at $.storage.files.0.path,
line 1 col 61: path not absolute`); when a file is rejected without a fatal report, stderr gets
`couldn't parse config: <reason>`. With several files each is checked in turn with no extra headers.

MachineConfig files (detected by content: YAML/JSON documents with `kind` and `apiVersion`,
multi-document files and `kind: List` included) print one line per finding, the path rooted at
the document and the 1-based `<file>:<line>:<col>` (column in characters) of that path: the key
holding it, or the list item, else its nearest existing ancestor. Every line names its file, so
several files need no headers:
  error at $.spec.config.storage.files.0.path, mc.yaml:14:11: path not absolute
  error at $.spec.kernelType, mc.yaml:9:3: kernelType=foo is invalid
Ignition findings keep ignition-validate's texts (warnings included); MCO's own checks use
MCO's texts (kernelType, file mode > 0777, extensions allow-list, version and conversion errors).
Other kinds are skipped with a `note:` on stderr; a YAML/JSON syntax error prints
`couldn't parse config: <file>:<line>:<col>: <problem>` on stderr.

The exit status is 1 if any file has an error or cannot be parsed, else 0. `-` reads stdin.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from machineconfig.ignition.parse import IgnitionParseError, parse
from machineconfig.ignition.report import Report
from machineconfig.yamlload import MAX_FILE_BYTES
from mcc.validate_mc import looks_like_objects, validate_objects


def _read(name: str) -> bytes:
    """The file's bytes, at most MAX_FILE_BYTES of them (OSError otherwise)."""
    if name == "-":
        data = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
    else:
        with open(name, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise OSError(f"larger than {MAX_FILE_BYTES} bytes")
    return data


def validate_one(raw: bytes) -> int:
    """Print one config's report the way ignition-validate does; return its exit status."""
    report: Report
    reason: str | None = None
    try:
        report = parse(raw).report
    except IgnitionParseError as e:
        report, reason = e.report, e.reason
    for line in report.lines():
        print(line)
    if report.is_fatal:
        return 1
    if reason is not None:
        print(f"couldn't parse config: {reason}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    status = 0
    for name in args.files:
        try:
            raw = _read(name)
        except OSError as e:
            print(f"couldn't read {name}: {e.strerror or e}", file=sys.stderr)
            status = 1
            continue
        if looks_like_objects(raw):
            status |= validate_machine_configs(raw, "<stdin>" if name == "-" else name)
        else:
            status |= validate_one(raw)
    return status


def validate_machine_configs(raw: bytes, file: str) -> int:
    """Print the findings of one Kubernetes object file; return its exit status."""
    result = validate_objects(raw, file)
    for finding in result.findings:
        print(finding)
    for note in result.notes:
        print(note, file=sys.stderr)
    return 1 if result.failed else 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate", help="validate Ignition configs like ignition-validate, and MachineConfigs like MCO",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="Ignition configs or MachineConfig YAML/JSON files; '-' reads standard input")
    parser.set_defaults(func=run)
