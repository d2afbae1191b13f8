"""Spec 2.2 <-> 3.x conversions on canonical dicts, after ign-converter's v23tov30 and v32tov22 rules.

Up uses the MCO's filesystem map {"root": "/"}; down names filesystems by mount path. Both refuse, with
the field path, what the other spec cannot express instead of dropping it.
"""
from __future__ import annotations

import posixpath

from machineconfig.ignition.schema import JSON
from machineconfig.ignition.spec2 import canonicalize, validate_v2
from machineconfig.ignition.translate3 import Inexpressible, TranslationError, reshape
from machineconfig.ignition.url import url_scheme

__all__ = ["v22_to_v30", "v32_to_v22"]


def _clean(path: str) -> str:
    # Go's path.Join("/", p): cleaned, absolute, a single leading slash
    cleaned = posixpath.normpath("/" + path)
    return "/" + cleaned.lstrip("/")


def _copy(src: JSON, dst: JSON, *names: str) -> None:
    for name in names:
        if name in src:
            dst[name] = src[name]


def _ref_v3(ref: JSON) -> JSON:
    # spec 2 sources are plain strings; spec 3 ones are pointers, so even "" becomes present
    out: JSON = {"source": ref.get("source", "")}
    _copy(ref, out, "verification")
    return out


def _node_v3(node: JSON, path: str) -> JSON:
    out: JSON = {"path": _clean(node.get("path", ""))}
    for who in ("user", "group"):
        if who in node:
            out[who] = {k: v for k, v in node[who].items() if k in ("id", "name")}
    _copy(node, out, "overwrite")
    if node.get("filesystem") != "root":
        raise TranslationError(f"cannot translate to 3.0.0: {path}.filesystem {node.get('filesystem')!r} has no "
                               'mount path in spec 3 (only "root" maps to "/")')
    return out


def v22_to_v30(config: JSON) -> JSON:
    """Canonical 2.2 -> canonical 3.0 (MCO's fs map {"root": "/"}); append entries fold into append[]."""
    errors = [e for e in validate_v2(config) if e.startswith("error")]
    if errors:
        raise TranslationError("cannot translate to 3.0.0: invalid 2.2.0 config: " + "; ".join(errors))
    if config.get("networkd"):
        raise TranslationError("cannot translate to 3.0.0: $.networkd is not supported in spec 3")
    ign, storage = config.get("ignition", {}), config.get("storage", {})
    out_ign: JSON = {"version": "3.0.0"}
    cfg = ign.get("config", {})
    out_ign["config"] = {"merge": [_ref_v3(r) for r in cfg.get("append", [])]}
    if "replace" in cfg:
        out_ign["config"]["replace"] = _ref_v3(cfg["replace"])
    out_ign["security"] = ign.get("security", {})
    _copy(ign, out_ign, "timeouts")
    out: JSON = {"ignition": out_ign, "passwd": _passwd_v3(config.get("passwd", {})),
                 "systemd": {"units": [_unit_v3(u) for u in config.get("systemd", {}).get("units", [])]}}
    for i, fs in enumerate(storage.get("filesystems", [])):
        if fs.get("name") != "root":  # root is implied in spec 3
            raise TranslationError(f"cannot translate to 3.0.0: $.storage.filesystems.{i} filesystem "
                                   f"{fs.get('name', '')!r} has no mount path in spec 3")
    out["storage"] = {"disks": [_disk_v3(d, f"$.storage.disks.{i}") for i, d in enumerate(storage.get("disks", []))],
                      "raid": [_raid_v3(r) for r in storage.get("raid", [])],
                      "files": _files_v3(storage.get("files", [])),
                      "directories": [dict(_node_v3(d, f"$.storage.directories.{i}"), **_pick(d, "mode"))
                                      for i, d in enumerate(storage.get("directories", []))],
                      "links": [_link_v3(link, f"$.storage.links.{i}")
                                for i, link in enumerate(storage.get("links", []))]}
    _check_unique(out)
    return reshape(out, "Config", "Config", 0, 0)


def _pick(src: JSON, *names: str) -> JSON:
    return {n: src[n] for n in names if n in src}


def _passwd_v3(passwd: JSON) -> JSON:
    users = []
    for i, u in enumerate(passwd.get("users", [])):
        if "create" in u:
            raise TranslationError(f"cannot translate to 3.0.0: $.passwd.users.{i}.create is deprecated and not "
                                   "supported in spec 3")
        # spec 3 pointers are set only for non-zero spec 2 values (strP/boolP), which is exactly what a
        # canonical 2.2 dict holds; uid and passwordHash were pointers already
        users.append(dict(u))
    groups = [dict(g) for g in passwd.get("groups", [])]
    return {"users": users, "groups": groups}


def _unit_v3(unit: JSON) -> JSON:
    out: JSON = {"name": unit.get("name", "")}
    # enabled wins over the deprecated enable; an explicit enabled:false stays false
    if unit.get("enabled") is True or unit.get("enable"):
        out["enabled"] = True
    if unit.get("enabled") is False:
        out["enabled"] = False
    _copy(unit, out, "mask", "contents", "dropins")
    return out


def _disk_v3(disk: JSON, path: str) -> JSON:
    parts = []
    for j, p in enumerate(disk.get("partitions", [])):
        for sectors in ("size", "start"):
            if p.get(sectors):
                raise TranslationError(f"cannot translate to 3.0.0: {path}.partitions.{j}.{sectors} is in sectors; "
                                       "spec 3 only has sizeMiB/startMiB")
        parts.append(_pick(p, "label", "number", "typeGuid", "guid"))
    return dict(_pick(disk, "device", "wipeTable"), partitions=parts)


def _raid_v3(raid: JSON) -> JSON:
    return _pick(raid, "name", "level", "devices", "spares", "options")


def _link_v3(link: JSON, path: str) -> JSON:
    return dict(_node_v3(link, path), **_pick(link, "hard", "target"))


def _files_v3(files: list[JSON]) -> list[JSON]:
    out: list[JSON] = []
    index: dict[str, int] = {}
    for i, f in enumerate(files):
        node = _node_v3(f, f"$.storage.files.{i}")
        c = f.get("contents", {})
        contents: JSON = {"source": c.get("source", "")}
        _copy(c, contents, "compression", "verification")
        extra = _pick(f, "mode")
        path = node["path"]
        if f.get("append"):
            if path in index:
                # a later fragment for the same file: spec 3 keeps fragments on one entry
                entry = out[index[path]]
                entry.setdefault("append", []).append(contents)
                entry.update(extra, **_pick(node, "user", "group"))
                continue
            # spec 3 needs overwrite false next to append
            new = dict(node, overwrite=False, append=[contents], **extra)
        else:
            # spec 2 files overwrite unless told otherwise; spec 3 defaults the other way
            new = dict(node, contents=contents, **extra)
            new.setdefault("overwrite", True)
        if path in index:
            out[index[path]] = new  # a later full write replaces what came before
        else:
            index[path] = len(out)
            out.append(new)
    return out


def _check_unique(config: JSON) -> None:
    seen: dict[str, str] = {}
    for kind in ("files", "directories", "links"):
        for node in config["storage"][kind]:
            if node["path"] in seen:
                raise TranslationError(f"cannot translate to 3.0.0: {node['path']} is both a {seen[node['path']]} "
                                       f"and a {kind[:-1] if kind != 'directories' else 'directory'} entry")
            seen[node["path"]] = kind[:-1] if kind != "directories" else "directory"
    names: set[str] = set()
    for unit in config["systemd"]["units"]:
        if unit["name"] in names:
            raise TranslationError(f"cannot translate to 3.0.0: unit {unit['name']!r} is defined twice")
        names.add(unit["name"])


def _fail(path: str, what: str) -> TranslationError:
    return Inexpressible("2.2.0", path, what)


def _check_v22(config: JSON) -> None:
    ign = config.get("ignition", {})
    refs = [(f"$.ignition.config.merge.{i}", r) for i, r in enumerate(ign.get("config", {}).get("merge", []))]
    refs += [("$.ignition.config.replace", ign["config"]["replace"])] if "replace" in ign.get("config", {}) else []
    refs += [(f"$.ignition.security.tls.certificateAuthorities.{i}", r)
             for i, r in enumerate(ign.get("security", {}).get("tls", {}).get("certificateAuthorities", []))]
    for path, ref in refs:
        for field in ("compression", "httpHeaders"):
            if field in ref:
                raise _fail(f"{path}.{field}", "is not supported in spec 2")
    for path, ref in refs:
        if not ref.get("source"):
            # spec 2 config references are plain strings: an empty one is invalid there, a missing one
            # drops the reference (allowed only for replace, where it means "no replacement")
            if path == "$.ignition.config.replace" and "source" not in ref and not ref.get("verification"):
                continue
            raise _fail(f"{path}.source", "must be a non-empty URL in spec 2")
    if ign.get("proxy"):
        raise _fail("$.ignition.proxy", "(HTTP proxies) is not supported in spec 2")
    storage = config.get("storage", {})
    if storage.get("luks"):
        raise _fail("$.storage.luks", "(LUKS) is not supported in spec 2")
    for kind in ("users", "groups"):
        for i, entry in enumerate(config.get("passwd", {}).get(kind, [])):
            if entry.get("shouldExist") is False:
                raise _fail(f"$.passwd.{kind}.{i}.shouldExist", "false is not supported in spec 2")
    for i, disk in enumerate(storage.get("disks", [])):
        for j, part in enumerate(disk.get("partitions", [])):
            path = f"$.storage.disks.{i}.partitions.{j}"
            for field in ("sizeMiB", "startMiB"):
                if field in part:
                    raise _fail(f"{path}.{field}", "is not supported in spec 2 (it sizes partitions in sectors)")
            # ign-converter drops these silently; shouldExist=false (delete the partition) must not turn into
            # "create it". wipePartitionEntry is dropped as upstream does: spec 2 then fails instead of wiping.
            for field, bad in (("resize", True), ("shouldExist", False)):
                if part.get(field) is bad:
                    raise _fail(f"{path}.{field}", f"{str(bad).lower()} is not supported in spec 2")
    for i, fs in enumerate(storage.get("filesystems", [])):
        if "mountOptions" in fs:
            raise _fail(f"$.storage.filesystems.{i}.mountOptions", "is not supported in spec 2")
    for i, f in enumerate(storage.get("files", [])):
        for path, res in [(f"$.storage.files.{i}.contents", f.get("contents", {}))] + \
                         [(f"$.storage.files.{i}.append.{j}", a) for j, a in enumerate(f.get("append", []))]:
            if "httpHeaders" in res:
                raise _fail(f"{path}.httpHeaders", "is not supported in spec 2")
            refs.append((path, res))
    for path, ref in refs:
        if url_scheme(str(ref.get("source") or "")) == "gs":
            raise _fail(f"{path}.source", "uses the gs: scheme, which spec 2 does not support")
        if str(ref.get("verification", {}).get("hash", "")).startswith("sha256-"):
            raise _fail(f"{path}.verification.hash", "sha256 is not supported in spec 2")


def _node_v2(node: JSON, fs_paths: list[str]) -> JSON:
    # ign-converter assigns the longest filesystem path that is a *string* prefix (not a path prefix)
    fsname, path = "", node.get("path", "")
    for fs in fs_paths:
        if node.get("path", "").startswith(fs) and len(fs) > len(fsname):
            fsname, path = fs, node["path"][len(fs):]
    out: JSON = {"filesystem": fsname or "root", "path": path}
    for who in ("user", "group"):
        # spec 2 names are plain strings: a spec 3 name "" means nothing there, and an owner left with
        # neither id nor name would be an empty pointer that does not survive the way back up
        owner = {k: v for k, v in node.get(who, {}).items() if k == "id" or v}
        if owner:
            out[who] = owner
    _copy(node, out, "overwrite")
    return out


def v32_to_v22(config: JSON) -> JSON:
    """Canonical 3.2 -> canonical 2.2 (ign-converter's v32tov22, refusing instead of dropping)."""
    _check_v22(config)
    ign, storage = config.get("ignition", {}), config.get("storage", {})
    cfg = ign.get("config", {})
    out_ign: JSON = {"version": "2.2.0", "config": {"append": [_pick(r, "source", "verification")
                                                               for r in cfg.get("merge", [])]}}
    if "source" in cfg.get("replace", {}):
        out_ign["config"]["replace"] = _pick(cfg["replace"], "source", "verification")
    out_ign["security"] = ign.get("security", {})
    _copy(ign, out_ign, "timeouts")
    filesystems, fs_paths, counter = [], [], 1
    for fs in storage.get("filesystems", []):
        if fs.get("path"):  # ign-converter would name a filesystem "" after an empty path; count it instead
            name = fs["path"]
            fs_paths.append(name)
        else:
            name, counter = str(counter), counter + 1  # no path: nothing is written there; any unique name
        filesystems.append({"name": name, "mount": _pick(fs, "device", "format", "wipeFilesystem", "label", "uuid",
                                                         "options")})
    files: list[JSON] = []
    for f in storage.get("files", []):
        # spec 2 files overwrite by default; keep spec 3's "unset means no" by saying so
        base = dict(_node_v2(f, fs_paths), **_pick(f, "mode"))
        base.setdefault("overwrite", False)
        if "source" in f.get("contents", {}) or not f.get("append"):
            # ign-converter drops a file with neither contents nor fragments; we keep the entry
            files.append(dict(base, contents=_contents_v2(f.get("contents", {}))))
        for frag in f.get("append", []):
            files.append(dict(base, overwrite=False, append=True, contents=_contents_v2(frag)))
    passwd = config.get("passwd", {})
    out: JSON = {
        "ignition": out_ign,
        "passwd": {"users": [{k: v for k, v in u.items() if k != "shouldExist"} for u in passwd.get("users", [])],
                   "groups": [{k: v for k, v in g.items() if k != "shouldExist"}
                              for g in passwd.get("groups", [])]},
        "systemd": config.get("systemd", {}),
        "storage": {
            "disks": [dict(_pick(d, "device", "wipeTable"),
                           partitions=[_pick(p, "label", "number", "typeGuid", "guid") for p in d.get("partitions", [])])
                      for d in storage.get("disks", [])],
            "raid": storage.get("raid", []), "filesystems": filesystems, "files": files,
            "directories": [dict(_node_v2(d, fs_paths), **_pick(d, "mode")) for d in storage.get("directories", [])],
            "links": [dict(_node_v2(lk, fs_paths), **_pick(lk, "hard", "target")) for lk in storage.get("links", [])],
        },
    }
    return canonicalize(out, "Config")


def _contents_v2(res: JSON) -> JSON:
    return _pick(res, "compression", "source", "verification")

