"""Semantic rules for storage: link overlaps, disks and partitions, filesystems and RAID arrays
(upstream storage.go, disk.go, partition.go, filesystem.go, raid.go), per spec minor.
"""
from __future__ import annotations

import re
from typing import Any

from machineconfig.ignition.findings import Path, Sink, nil_or_empty
from machineconfig.ignition.gopath import go_clean, go_join, validate_path

Obj = dict[str, Any]

_GUID = re.compile(r"(|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})")
_LABEL_LIMITS = {"ext4": 16, "btrfs": 256, "xfs": 12, "swap": 15, "vfat": 11}
_LINEAR_LEVELS = ("linear", "raid0", "0", "stripe")
_RAID_LEVELS = _LINEAR_LEVELS + ("raid1", "1", "mirror", "raid4", "4", "raid5", "5", "raid6", "6",
                                 "raid10", "10")
FORMAT_NIL_WITH_OTHERS = ("format cannot be empty when path, label, uuid, wipeFilesystem, options, or "
                          "mountOptions is specified")


def storage_rule(s: Sink, st: Obj, path: Path) -> None:
    links = st["links"]
    for kind, message in (("directories", "directory path includes link in config"),
                          ("files", "file path includes link in config")):
        for i, node in enumerate(st[kind]):
            for link in links:
                if node["path"].startswith(link["path"] + "/"):
                    s.error(path + (kind, i), message)
    for i, link in enumerate(links):
        for other in links:
            if link["path"].startswith(other["path"] + "/"):
                s.error(path + ("links", i), "link path includes link in config")
        target = link["target"]
        if s.minor >= 3 and nil_or_empty(target):
            s.error(path + ("links", i, "target"), "link target is required")
            continue
        if link["hard"] is not True or target is None:
            continue
        # A relative hard-link target is resolved against the link's own path (upstream quirk).
        resolved = go_clean(target)
        if not resolved.startswith("/"):
            resolved = go_join(link["path"], target)
        for d in st["directories"]:
            if d["path"] == resolved:
                s.error(path + ("links", i), "hard link target is a directory")
        for owner in ("user", "group"):
            for key in ("id", "name"):
                if link[owner][key] is not None:
                    s.warn(path + ("links", i, owner, key), "user/group ignored for hard link")
    # Later disks with the same device replace earlier ones (upstream builds a map).
    disks = {d["device"]: d for d in st["disks"]}
    for i, fs in enumerate(st["filesystems"]):
        disk = disks.get(fs["device"])
        if disk is None:
            continue
        if disk["partitions"]:
            s.warn(path + ("filesystems", i, "device"), "filesystem overwrites partitioned device")
        elif fs["wipeFilesystem"] is not True and disk["wipeTable"] is True:
            s.warn(path + ("filesystems", i, "device"),
                   "device matches disk with wipeTable enabled; filesystem will be wiped")


def _end(p: Obj) -> int:
    # The last MiB of a partition; a size of 0 ("fill available") ends where it starts.
    start: int = p["startMiB"]
    return start if p["sizeMiB"] == 0 else start + p["sizeMiB"] - 1


def _dimensioned(p: Obj) -> bool:
    return p["startMiB"] is not None and p["sizeMiB"] is not None and p["startMiB"] != 0


def _overlap_index(parts: list[Obj]) -> int | None:
    for p in parts:
        if not _dimensioned(p):
            continue
        for i, o in enumerate(parts):
            # Upstream compares partitions by value, so identical entries never overlap each other.
            if not _dimensioned(o) or o == p:
                continue
            if (o["startMiB"] <= p["startMiB"] <= _end(o) or o["startMiB"] <= _end(p) <= _end(o)
                    or (p["startMiB"] < o["startMiB"] and _end(p) > _end(o))):
                return i
    return None


def disk_rule(s: Sink, disk: Obj, path: Path) -> None:
    if disk["device"] == "":
        s.error(path + ("device",), "disk device is required")
        return
    s.error(path + ("device",), validate_path(disk["device"]))
    parts = disk["partitions"]
    by_number: dict[int, list[int]] = {}
    for i, p in enumerate(parts):
        if p["number"] != 0:
            by_number.setdefault(p["number"], []).append(i)
    for indices in by_number.values():
        if len(indices) > 1:
            s.error(path + ("partitions", indices[1]), "partition numbers collide")
            break
    overlap_at = _overlap_index(parts)
    if overlap_at is not None:
        s.error(path + ("partitions", overlap_at), "partitions overlap")
    if any(p["shouldExist"] is False for p in parts) and any(p["number"] == 0 for p in parts):
        s.error(path + ("partitions",),
                "shouldExist is false for a partition and other partition(s) has start or size 0")
    seen_labels: set[str] = set()
    for i, p in enumerate(parts):
        if p["label"] is None:
            continue
        if p["label"] in seen_labels:
            s.error(path + ("partitions", i), "cannot use the same partition label twice")
            break
        seen_labels.add(p["label"])


def partition_rule(s: Sink, p: Obj, path: Path) -> None:
    if p["shouldExist"] is False and (p["label"] is not None or not nil_or_empty(p["typeGuid"])
                                      or not nil_or_empty(p["guid"]) or p["startMiB"] is not None
                                      or p["sizeMiB"] is not None):
        s.error(path, "shouldExist specified false with other options also specified")
    if p["number"] == 0 and p["label"] is None:
        s.error(path, "a partition number >= 1 or a label must be specified")
    label = p["label"]
    if label is not None:
        if len(label.encode()) > 36:
            s.error(path + ("label",), "partition labels may not exceed 36 characters")
        elif ":" in label:
            s.error(path + ("label",), "partition label will be truncated to text before the colon")
    for key in ("guid", "typeGuid"):
        if p[key] is not None and not _GUID.fullmatch(p[key]):
            s.error(path + (key,), 'doesn\'t match the form "01234567-89AB-CDEF-EDCB-A98765432101"')


def _formats(minor: int) -> set[str]:
    formats = {"ext4", "btrfs", "xfs", "swap", "vfat"}
    if minor >= 3:
        formats.add("none")
    if minor >= 7:
        formats.add("virtiofs")
    return formats


def filesystem_rule(s: Sink, fs: Obj, path: Path) -> None:
    fmt = fs["format"]
    virtiofs = s.minor >= 7 and fmt == "virtiofs"
    if not nil_or_empty(fs["path"]):
        s.error(path + ("path",), validate_path(fs["path"]))
    if virtiofs:
        if fs["device"] == "":
            s.error(path + ("device",), "device not specified")
        elif len(fs["device"].encode()) > 36:
            s.error(path + ("device",), "virtiofs device tag cannot be longer than 36 bytes")
    else:
        s.error(path + ("device",), validate_path(fs["device"]))
    if nil_or_empty(fmt):
        if (not nil_or_empty(fs["path"]) or not nil_or_empty(fs["label"]) or not nil_or_empty(fs["uuid"])
                or fs["wipeFilesystem"] is True or fs.get("mountOptions") or fs["options"]):
            s.error(path + ("format",), FORMAT_NIL_WITH_OTHERS)
    elif fmt not in _formats(s.minor):
        s.error(path + ("format",), "invalid filesystem format")
    label = fs["label"]
    if not nil_or_empty(label):
        if nil_or_empty(fmt):
            s.error(path + ("label",), "filesystem must specify format if label is specified")
        elif virtiofs:
            s.error(path + ("label",), "filesystem labels cannot be set when using virtiofs")
        elif fmt in _LABEL_LIMITS and len(label.encode()) > _LABEL_LIMITS[fmt]:
            s.error(path + ("label",), f"filesystem labels cannot be longer than {_LABEL_LIMITS[fmt]} "
                                       f"characters when using {fmt}")
    if virtiofs:
        if not nil_or_empty(fs["uuid"]):
            s.error(path + ("uuid",), "filesystem uuid cannot be set for non-block-device filesystems")
        if fs["wipeFilesystem"] is True:
            s.error(path + ("wipeFilesystem",), "wipeFilesystem cannot be set for non-block-device filesystems")
        if fs["options"]:
            s.error(path + ("options",), "filesystem options (mkfs) cannot be set for non-block-device filesystems")


def raid_rule(s: Sink, raid: Obj, path: Path) -> None:
    level = raid["level"]
    if s.minor >= 3 and nil_or_empty(level):
        s.error(path + ("level",), "raid level is required")
    elif level in _LINEAR_LEVELS:
        if raid["spares"] is not None and raid["spares"] != 0:
            s.error(path + ("level",), "spares unsupported for linear and raid0 arrays")
    elif level not in _RAID_LEVELS:
        s.error(path + ("level",), "unrecognized raid level")
    if not raid["devices"]:
        s.error(path + ("devices",), "raid devices required")
