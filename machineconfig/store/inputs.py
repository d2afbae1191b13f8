"""The local store's input directory: the user's YAML/JSON objects, reloaded when files change.

Changes are found by stat signatures. Files are not trusted: a file that fails to load for any
reason (syntax, schema, limits, a directory or a dangling symlink in its place, blanked while it
was being rewritten, an object name another file already defines) keeps its last good objects and
its error is reported (file, line, field) until it is fixed. Removing the file deletes its objects.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from machineconfig.api import YAML_SUFFIXES, parse_object
from machineconfig.errors import InputError, one_line
from machineconfig.store.base import SECRET, USER_TEMPLATE, is_cluster_config
from machineconfig.yamlload import Document, decode_text, load_text, read_bounded

log = logging.getLogger(__name__)

Signature = tuple[int, int, int]  # mtime_ns, size, inode
Key = tuple[str, str]  # kind, name

TEMPLATE_SUFFIXES = tuple(s + ".j2" for s in YAML_SUFFIXES)


@dataclass
class _File:
    signature: Signature
    objects: list[dict[str, Any]] = field(default_factory=list)  # last good load
    error: str | None = None


def _signature(st: os.stat_result) -> Signature:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _list_inputs(root: str, suffixes: tuple[str, ...]) -> list[str]:
    """Input files under `root` in a stable order, and anything else bearing an input file's
    name (a directory, a dangling symlink): that is a broken input, not an absent one."""
    if not os.path.isdir(root):
        raise InputError("no such file or directory", file=root)
    files: list[str] = []
    for top, dirs, names in os.walk(root):
        dirs.sort()
        for d in [d for d in dirs if d.endswith(suffixes) and not d.startswith(".")]:
            dirs.remove(d)  # reported as a broken file, not read as a directory of inputs
            files.append(os.path.join(top, d))
        files.extend(os.path.join(top, n) for n in sorted(names)
                     if n.endswith(suffixes) and not n.startswith("."))
    return sorted(files)


def _describe(p: str, e: BaseException) -> str:
    """One line for an error no check foresaw: the file, the exception, its first line."""
    text = " ".join(str(e).split())[:200]
    return f"{p}: cannot load: {type(e).__name__}" + (f": {text}" if text else "")


def _document_objects(doc: Document, data: Any, base_path: str) -> list[dict[str, Any]]:
    if isinstance(data, dict) and data.get("kind") == "List" and isinstance(
            data.get("items"), list) and base_path == "$":
        out: list[dict[str, Any]] = []
        for i, item in enumerate(data["items"]):
            out.extend(_document_objects(doc, item, f"$.items.{i}"))
        return out
    if isinstance(data, dict) and (data.get("kind") == SECRET or is_cluster_config(data)):
        pass  # not modelled by api.py; served as written (pull secrets, image config ...)
    elif parse_object(data, doc, base_path) is None:
        return []  # a kind we do not know: ignored, as load_paths does
    assert isinstance(data, dict)
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        path = f"{base_path}.metadata.name"
        raise InputError(f"{data.get('kind')}: metadata.name is required", file=doc.file,
                         path=path, line=doc.line_of(path))
    return [data]


def load_objects(path: str, root: str | None = None) -> list[dict[str, Any]]:
    """Every object in one input file, validated; raises InputError naming file and line.

    A `*.yaml.j2` file is one USER_TEMPLATE object (see base.py): the controller renders it.
    """
    if path.endswith(TEMPLATE_SUFFIXES):
        name = os.path.relpath(path, root) if root else os.path.basename(path)
        digest = hashlib.sha256(read_bounded(path)).hexdigest()
        # The digest makes an edit of the template an edit of the object, so whoever compares
        # objects to decide whether to re-render sees it.
        return [{"kind": USER_TEMPLATE, "metadata": {"name": name},
                 "path": os.path.abspath(path), "sha256": digest}]
    text = decode_text(read_bounded(path), path)
    if not text.strip():
        raise BlankFile(path)
    out: list[dict[str, Any]] = []
    for doc in load_text(text, path):
        out.extend(_document_objects(doc, doc.data, "$"))
    return out


class BlankFile(InputError):
    """A file of nothing but whitespace: no objects, or a file caught half-written."""

    def __init__(self, path: str) -> None:
        super().__init__("empty file: its objects are kept until it is fixed or removed "
                         "(remove the file to delete them)", file=path)


class InputDir:
    """A cached, thread-safe view of the objects under one directory."""

    def __init__(self, path: str, exclude: str | None = None) -> None:
        self.path = path
        # A state directory inside the input directory must not be read as input: its
        # rendered/*.json files are MachineConfigs too.
        self._exclude: str | None = None
        if exclude is not None:
            inside = os.path.realpath(exclude)
            if inside.startswith(os.path.realpath(path) + os.sep):
                self._exclude = inside + os.sep
        # Loading a file happens under _refresh_lock only: readers (the server's event loop
        # among them) wait at most for the swap of the results under _lock, never for a parse.
        self._refresh_lock = threading.Lock()
        self._lock = threading.Lock()
        self._files: dict[str, _File] = {}
        self._objects: dict[Key, dict[str, Any]] = {}
        self._errors: list[str] = []
        self._fingerprint = ""
        self._dir_error: str | None = None
        self._where: dict[Key, str] = {}  # which file each object came from

    def refresh(self) -> bool:
        """Stat every input file, reload the changed ones; True when anything changed."""
        with self._refresh_lock:
            changed = False
            seen: dict[str, os.stat_result] = {}
            try:
                paths = _list_inputs(self.path, YAML_SUFFIXES + TEMPLATE_SUFFIXES)
            except InputError as e:
                paths = []
                dir_error: str | None = str(e)
            else:
                dir_error = None
            for p in paths:
                if self._exclude and os.path.realpath(p).startswith(self._exclude):
                    continue
                try:
                    seen[p] = os.lstat(p)
                    seen[p] = os.stat(p)
                except OSError:
                    if p not in seen:
                        continue  # removed between listing and stat: gone
            for p in list(self._files):
                # A vanished input directory keeps its last objects: serving nothing would make
                # every pool disappear at once.
                if p not in seen and dir_error is None:
                    del self._files[p]
                    changed = True
            for p, st in seen.items():
                sig = _signature(st)
                old = self._files.get(p)
                if old is not None and old.signature == sig:
                    continue
                changed = True
                kept = old.objects if old else []
                try:
                    objects = load_objects(p, self.path)
                except BlankFile:
                    if kept:  # blanked, or caught between truncate and write: keep the objects
                        log.warning("%s: empty now; keeping its last objects (remove the file "
                                    "to delete them)", p)
                        self._files[p] = _File(sig, kept, str(BlankFile(p)))
                    else:
                        self._files[p] = _File(sig)
                except InputError as e:
                    log.warning("%s (keeping its last good objects)", one_line(e))
                    self._files[p] = _File(sig, kept, one_line(e))
                except Exception as e:  # noqa: BLE001 - one bad file must not stop the rest
                    log.warning("%s (keeping its last good objects)", _describe(p, e))
                    self._files[p] = _File(sig, kept, _describe(p, e))
                else:
                    if old is not None and old.error:
                        log.info("input %s loads again", p)
                    self._files[p] = _File(sig, objects)
            if dir_error != self._dir_error:
                changed = True
            if changed:
                self._dir_error = dir_error
                self._rebuild(dir_error)
            return changed

    def _rebuild(self, dir_error: str | None) -> None:
        objects: dict[Key, dict[str, Any]] = {}
        where: dict[Key, str] = {}
        errors = [dir_error] if dir_error else []
        h = hashlib.sha256(f"{dir_error}\n".encode())
        contenders: dict[Key, list[tuple[str, dict[str, Any]]]] = {}
        for p in sorted(self._files):
            f = self._files[p]
            # Relative: processes naming the directory differently agree on the fingerprint.
            h.update(f"{os.path.relpath(p, self.path)}\0{f.signature}\n".encode())
            if f.error:
                errors.append(f.error)
            for obj in f.objects:
                key = (str(obj.get("kind")), str(obj["metadata"]["name"]))
                contenders.setdefault(key, []).append((p, obj))
        for key, found in contenders.items():
            # One name in two files is an error (as in `mcc render`): the file that held it
            # before keeps it, so the rendered state does not change; a process that has no
            # "before" (just started) takes the file modified longest ago, likely the same.
            files = [p for p, _ in found]
            owner = self._where.get(key)
            if owner not in files:
                owner = min(files, key=lambda p: (self._files[p].signature[0], p))
            chosen = files.index(owner)
            if len(found) > 1:
                for p in files:
                    if p != files[chosen]:
                        errors.append(f"{p}: {key[0]} {key[1]!r} is already defined in "
                                      f"{files[chosen]}")
            objects[key] = found[chosen][1]
            where[key] = files[chosen]
        self._where = where
        with self._lock:
            self._objects = objects
            self._errors = errors
            self._fingerprint = h.hexdigest()

    def fingerprint(self) -> str:
        """Identifies the set of file versions loaded (equal in every process seeing them)."""
        with self._lock:
            return self._fingerprint

    def errors(self) -> list[str]:
        with self._lock:
            return list(self._errors)

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            obj = self._objects.get((kind, name))
            return copy.deepcopy(obj) if obj is not None else None

    def names(self, kind: str) -> list[str]:
        with self._lock:
            return sorted(n for k, n in self._objects if k == kind)

    def list(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(self._objects[(k, n)])
                    for k, n in sorted(self._objects) if k == kind]
