"""The embedded store: input objects from a YAML directory, state in a SQLite + files directory.

The controller and the server open the same state directory from separate processes; SQLite's
locking serializes their writes, and a revision counter in the database wakes every watcher.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Collection, Mapping
from typing import Any

from machineconfig.clock import now_rfc3339
from machineconfig.machine_config_node import KIND as MCN_KIND
from machineconfig.rendered_config import RenderedConfig
from machineconfig.store.base import (
    KINDS,
    MACHINE_CONFIG_POOL,
    NodeRecord,
    NotFoundError,
    StoreError,
    RebootLock,
    StoreEvent,
    with_taint,
)
from machineconfig.store.inputs import InputDir
from machineconfig.store.rendered import RenderedDir
from machineconfig.store.sqlite import Database

log = logging.getLogger(__name__)

DB_FILE = "state.db"
RENDERED_DIR = "rendered"
# How often a waiter re-checks for changes made by other processes or on disk; local writes wake
# waiters at once.
POLL_SECONDS = 0.2
MAX_EVENTS = 100_000  # older events are pruned so the database does not grow forever
MAX_EVENTS_PER_OBJECT = 1_000  # per object (a node, a pool): the oldest go first


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _copy_node(rec: NodeRecord) -> NodeRecord:
    return NodeRecord(rec.name, dict(rec.labels), dict(rec.annotations), rec.unschedulable,
                      rec.ready, rec.creation_timestamp, rec.resource_version,
                      [dict(t) for t in rec.taints])


def _check_changes(changes: Mapping[str, str | None], what: str) -> None:
    for k, v in changes.items():
        if not isinstance(k, str) or not k or (v is not None and not isinstance(v, str)):
            raise StoreError(f"invalid {what} change {k!r}: {v!r}")


class LocalStore:
    """`Store` over an input directory (read-only) and a state directory (read-write)."""

    def __init__(self, input_dir: str, state_dir: str) -> None:
        if not os.path.isdir(input_dir):
            raise StoreError(f"{input_dir}: input directory does not exist")
        try:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
        except OSError as e:
            raise StoreError(f"{state_dir}: cannot create the state directory: {e.strerror}") \
                from e
        mode = os.stat(state_dir).st_mode & 0o777
        if mode & 0o077:
            # made by an older version or by hand: it holds the pull secret and node tokens
            log.warning("%s: state directory was %o, narrowing it to 700", state_dir, mode)
            os.chmod(state_dir, 0o700)
        self.input_dir = input_dir
        self.state_dir = state_dir
        self._db = Database(os.path.join(state_dir, DB_FILE))
        self._rendered = RenderedDir(os.path.join(state_dir, RENDERED_DIR))
        self._inputs = InputDir(input_dir, exclude=state_dir)
        self._synced_fingerprint: str | None = None
        self._scanner: threading.Thread | None = None
        self._scanner_stop = threading.Event()
        self._scan_lock = threading.Lock()
        self._last_scan = 0.0
        self._cond = threading.Condition()
        self._node_lock = threading.Lock()
        self._node_cache: dict[str, tuple[str, NodeRecord]] = {}
        self._sync_inputs(0.0)

    def __repr__(self) -> str:
        return f"LocalStore({self.input_dir!r}, {self.state_dir!r})"

    # ----- change detection

    def scan_inputs_in_background(self, interval: float = POLL_SECONDS) -> None:
        """From now on input files are loaded by a thread of their own every `interval` s, and
        readers only read what it loaded: a server's event loop never parses a file. The thread
        ends with close() or when the store is garbage."""
        if self._scanner is not None:
            return
        stop = self._scanner_stop = threading.Event()
        ref = weakref.ref(self)

        def scan() -> None:
            while not stop.wait(interval):
                store = ref()
                if store is None:
                    return
                try:
                    store._sync_inputs(0.0, scanner=True)
                except Exception as e:  # noqa: BLE001 - the database may be busy; next time
                    log.warning("input scan failed: %s: %s", type(e).__name__,
                                " ".join(str(e).split()))
                del store

        self._sync_inputs(0.0)
        self._scanner = threading.Thread(target=scan, name="input-scanner", daemon=True)
        self._scanner.start()

    def _sync_inputs(self, max_age: float, scanner: bool = False) -> None:
        """Reload changed input files; record a new input fingerprint in the database.

        The fingerprint comparison makes the controller and the server, which both watch the
        same files, bump the revision once per change instead of once each.
        """
        if self._scanner is not None and not scanner:
            return
        now = time.monotonic()
        with self._scan_lock:
            if max_age and now - self._last_scan < max_age:
                return
            self._last_scan = now
            self._inputs.refresh()
            fingerprint = self._inputs.fingerprint()
            if fingerprint == self._synced_fingerprint:
                return
            with self._db.write() as db:
                row = db.execute("SELECT value FROM meta WHERE key = 'inputs'").fetchone()
                if row[0] != fingerprint:
                    db.execute("UPDATE meta SET value = ? WHERE key = 'inputs'", (fingerprint,))
                    rev = self._db.bump(db)
                    log.info("input objects changed (revision %s)", rev)
            self._synced_fingerprint = fingerprint
        self._notify()

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def revision(self) -> int:
        self._sync_inputs(0.0)
        return self._db.revision()

    def wait_for_change(self, since: int, timeout: float) -> int:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            # Throttled: many long-polling threads share one scan of the input files.
            self._sync_inputs(POLL_SECONDS / 2)
            rev = self._db.revision()
            remaining = deadline - time.monotonic()
            # Below `since` means the state was reset (a new state directory): the caller's
            # view is stale, so answer at once rather than sleeping until the new counter
            # catches up.
            if rev != since or remaining <= 0:
                return rev
            with self._cond:
                self._cond.wait(min(POLL_SECONDS, remaining))

    def input_errors(self) -> list[str]:
        """Why input files failed to load (file:line: path: message); their last good objects
        are still served."""
        self._sync_inputs(POLL_SECONDS / 2)
        return self._inputs.errors()

    def close(self) -> None:
        self._scanner_stop.set()
        self._db.close()

    # ----- objects

    def _owned(self, kind: str, name: str | None) -> list[dict[str, Any]]:
        if name is None:
            rows = self._db.query("SELECT data FROM objects WHERE kind = ? ORDER BY name",
                                  (kind,))
        else:
            rows = self._db.query("SELECT data FROM objects WHERE kind = ? AND name = ?",
                                  (kind, name))
        return [json.loads(r[0]) for r in rows]

    def _overlays(self, kind: str, name: str | None) -> dict[str, tuple[Any, Any]]:
        sql = "SELECT name, status, configuration FROM overlays WHERE kind = ?"
        args: tuple[str, ...] = (kind,)
        if name is not None:
            sql += " AND name = ?"
            args = (kind, name)
        return {r[0]: (None if r[1] is None else json.loads(r[1]),
                       None if r[2] is None else json.loads(r[2]))
                for r in self._db.query(sql, args)}

    @staticmethod
    def _merge(obj: dict[str, Any], overlay: tuple[Any, Any] | None) -> dict[str, Any]:
        if overlay is None:
            return obj
        status, configuration = overlay
        if status is not None:
            obj["status"] = status
        if configuration is not None and obj.get("kind") == MACHINE_CONFIG_POOL:
            spec = obj.get("spec")
            if not isinstance(spec, dict):
                spec = obj["spec"] = {}
            spec["configuration"] = configuration
        return obj

    def _collect(self, kind: str, name: str | None) -> list[dict[str, Any]]:
        self._sync_inputs(1.0)
        if name is None:
            inputs = self._inputs.list(kind)
        else:
            one = self._inputs.get(kind, name)
            inputs = [one] if one is not None else []
        with self._db.read():
            owned = self._owned(kind, name)
            overlays = self._overlays(kind, name)
        # An input object shadows a controller-owned one of the same name: the user's files win.
        by_name = {o["metadata"]["name"]: o for o in owned}
        by_name.update((o["metadata"]["name"], o) for o in inputs)
        return [self._merge(by_name[n], overlays.get(n)) for n in sorted(by_name)]

    def list_objects(self, kind: str) -> list[dict[str, Any]]:
        return self._collect(kind, None)

    def get_object(self, kind: str, name: str) -> dict[str, Any]:
        found = self._collect(kind, name)
        if not found:
            raise NotFoundError(f"{kind} {name!r} not found")
        return found[0]

    def _exists(self, kind: str, name: str) -> bool:
        if self._inputs.get(kind, name) is not None:
            return True
        return bool(self._db.query("SELECT 1 FROM objects WHERE kind = ? AND name = ?",
                                   (kind, name)))

    def put_object(self, obj: Mapping[str, Any]) -> None:
        kind = obj.get("kind")
        meta = obj.get("metadata")
        name = meta.get("name") if isinstance(meta, Mapping) else None
        if kind not in KINDS or not isinstance(name, str) or not name:
            raise StoreError(f"put_object: need a known kind and metadata.name, got {kind!r} "
                             f"{name!r}")
        assert isinstance(kind, str)
        if self._inputs.get(kind, name) is not None:
            log.warning("%s %s is also an input object; the input file wins", kind, name)
        data = _dumps(obj)
        with self._db.write() as db:
            row = db.execute("SELECT data FROM objects WHERE kind = ? AND name = ?",
                             (kind, name)).fetchone()
            if row is not None and row[0] == data:
                return
            db.execute("INSERT OR REPLACE INTO objects (kind, name, data) VALUES (?, ?, ?)",
                       (kind, name, data))
            self._db.bump(db)
        self._notify()

    def delete_object(self, kind: str, name: str) -> None:
        """Delete a controller-owned object (no-op when absent).

        An input object of that name stays: it is the user's file (an object dumped from a real
        cluster may carry the generated-by annotation), so this only logs instead of raising.
        """
        is_input = self._inputs.get(kind, name) is not None
        if is_input:
            log.warning("%s %s comes from the input directory and is not deleted", kind, name)
        with self._db.write() as db:
            n = db.execute("DELETE FROM objects WHERE kind = ? AND name = ?",
                           (kind, name)).rowcount
            if not is_input:
                db.execute("DELETE FROM overlays WHERE kind = ? AND name = ?", (kind, name))
            if n:
                self._db.bump(db)
        if n:
            self._notify()

    def _set_overlay(self, kind: str, name: str, column: str, value: Any) -> None:
        data = _dumps(value)
        with self._db.write() as db:
            if not self._exists(kind, name):
                raise NotFoundError(f"{kind} {name!r} not found")
            row = db.execute(f"SELECT {column} FROM overlays WHERE kind = ? AND name = ?",
                             (kind, name)).fetchone()
            if row is not None and row[0] == data:
                return
            db.execute("INSERT INTO overlays (kind, name) VALUES (?, ?) "
                       "ON CONFLICT (kind, name) DO NOTHING", (kind, name))
            db.execute(f"UPDATE overlays SET {column} = ? WHERE kind = ? AND name = ?",
                       (data, kind, name))
            self._db.bump(db)
        self._notify()

    def set_pool_configuration(self, pool: str, name: str,
                               source: list[dict[str, str]]) -> None:
        self._set_overlay(MACHINE_CONFIG_POOL, pool, "configuration",
                          {"name": name, "source": [dict(s) for s in source]})

    def update_status(self, kind: str, name: str, status: Mapping[str, Any]) -> None:
        self._set_overlay(kind, name, "status", dict(status))

    # ----- rendered configs

    def put_rendered(self, rendered: RenderedConfig) -> None:
        if self._rendered.put(rendered):
            with self._db.write() as db:
                self._db.bump(db)
            self._notify()

    def get_rendered(self, name: str) -> RenderedConfig:
        return self._rendered.get(name)

    def list_rendered(self) -> list[str]:
        return self._rendered.names()

    def delete_rendered(self, name: str) -> None:
        """Remove a rendered config (no-op when absent)."""
        if self._rendered.delete(name):
            with self._db.write() as db:
                self._db.bump(db)
            self._notify()

    # ----- nodes

    def get_node(self, name: str) -> NodeRecord:
        rows = self._db.query("SELECT data FROM nodes WHERE name = ?", (name,))
        if not rows:
            raise NotFoundError(f"node {name!r} not found")
        return NodeRecord.from_dict(json.loads(rows[0][0]))

    def list_nodes(self) -> list[NodeRecord]:
        # Decoding is most of the cost at thousands of nodes: reuse the record decoded from
        # the same stored text last time (callers get copies, the cache is never handed out).
        rows = self._db.query("SELECT name, data FROM nodes ORDER BY name")
        with self._node_lock:
            cache, fresh = self._node_cache, {}
            for name, data in rows:
                hit = cache.get(name)
                fresh[name] = hit if hit is not None and hit[0] == data else (
                    data, NodeRecord.from_dict(json.loads(data)))
            self._node_cache = fresh
        return [_copy_node(rec) for _, rec in fresh.values()]

    def _update_node(self, name: str, change: Callable[[NodeRecord], None],
                     create: bool = False) -> NodeRecord:
        """Read-modify-write one node record under the database write lock."""
        with self._db.write() as db:
            row = db.execute("SELECT data FROM nodes WHERE name = ?", (name,)).fetchone()
            if row is not None:
                rec = NodeRecord.from_dict(json.loads(row[0]))
            elif create:
                rec = NodeRecord(name=name, creation_timestamp=now_rfc3339())
            else:
                raise NotFoundError(f"node {name!r} not found")
            before = rec.to_dict()
            change(rec)
            if row is not None and rec.to_dict() == before:
                return rec
            # Like Kubernetes, a resource version is the store revision of the last write.
            rec.resource_version = self._db.bump(db)
            db.execute("INSERT OR REPLACE INTO nodes (name, data) VALUES (?, ?)",
                       (name, _dumps(rec.to_dict())))
        self._notify()
        return rec

    def register_node(self, name: str, labels: Mapping[str, str]) -> NodeRecord:
        if not isinstance(name, str) or not name or "/" in name:
            raise StoreError(f"invalid node name {name!r}")
        _check_changes(labels, "label")
        return self._update_node(name, lambda rec: rec.labels.update(labels), create=True)

    @staticmethod
    def _apply(target: dict[str, str], changes: Mapping[str, str | None]) -> None:
        for k, v in changes.items():
            if v is None:
                target.pop(k, None)
            else:
                target[k] = v

    def patch_node_annotations(self, name: str, changes: Mapping[str, str | None]) -> NodeRecord:
        _check_changes(changes, "annotation")
        return self._update_node(name, lambda rec: self._apply(rec.annotations, changes))

    def set_node_labels(self, name: str, changes: Mapping[str, str | None]) -> NodeRecord:
        _check_changes(changes, "label")
        return self._update_node(name, lambda rec: self._apply(rec.labels, changes))

    def set_unschedulable(self, name: str, value: bool) -> NodeRecord:
        return self._update_node(name, lambda rec: setattr(rec, "unschedulable", bool(value)))

    def set_node_ready(self, name: str, value: bool) -> NodeRecord:
        return self._update_node(name, lambda rec: setattr(rec, "ready", bool(value)))

    def set_node_taint(self, name: str, key: str, effect: str, present: bool) -> NodeRecord:
        return self._update_node(name, lambda rec: setattr(
            rec, "taints", with_taint(rec.taints, key, effect, present)))

    # ----- MachineConfigNodes (base.MachineConfigNodes): rows of `objects`, never a revision
    # bump (they report on nodes; a status write must not wake the controller)

    def list_machine_config_nodes(self) -> list[dict[str, Any]]:
        return self._owned(MCN_KIND, None)

    def get_machine_config_node(self, name: str) -> dict[str, Any]:
        found = self._owned(MCN_KIND, name)
        if not found:
            raise NotFoundError(f"{MCN_KIND} {name!r} not found")
        return found[0]

    def _write_mcn(self, name: str, change: Callable[[dict[str, Any] | None],
                                                      dict[str, Any] | None]) -> None:
        with self._db.write() as db:
            row = db.execute("SELECT data FROM objects WHERE kind = ? AND name = ?",
                             (MCN_KIND, name)).fetchone()
            new = change(None if row is None else json.loads(row[0]))
            if new is None:
                return
            data = _dumps(new)
            if row is None or row[0] != data:
                db.execute("INSERT OR REPLACE INTO objects (kind, name, data) VALUES (?, ?, ?)",
                           (MCN_KIND, name, data))

    def put_machine_config_node(self, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata")
        name = meta.get("name") if isinstance(meta, Mapping) else None
        if not isinstance(name, str) or not name:
            raise StoreError("put_machine_config_node: metadata.name is required")

        def change(old: dict[str, Any] | None) -> dict[str, Any]:
            new = {k: v for k, v in obj.items() if k != "status"}
            new["metadata"] = {**(old or {}).get("metadata", {}), **dict(obj["metadata"])}
            new["metadata"].setdefault("creationTimestamp", now_rfc3339())
            if old is not None and old.get("spec") != new.get("spec"):
                new["metadata"]["generation"] = int(old["metadata"].get("generation") or 1) + 1
            new["metadata"].setdefault("generation", 1)
            if old is not None and "status" in old:
                new["status"] = old["status"]
            return new

        self._write_mcn(name, change)

    def set_machine_config_node_status(self, name: str, status: Mapping[str, Any]) -> None:
        def change(old: dict[str, Any] | None) -> dict[str, Any]:
            if old is None:
                raise NotFoundError(f"{MCN_KIND} {name!r} not found")
            return {**old, "status": dict(status)}

        self._write_mcn(name, change)

    def delete_machine_config_node(self, name: str) -> None:
        with self._db.write() as db:
            db.execute("DELETE FROM objects WHERE kind = ? AND name = ?", (MCN_KIND, name))

    # ----- events

    def record_event(self, kind: str, name: str, reason: str, message: str,
                     type: str = "Normal") -> None:
        # Events do not bump the revision: watchers react to state, and a controller that
        # records an event must not wake itself up.
        with self._db.write() as db:
            seq = db.execute("INSERT INTO events (time, kind, name, reason, message, type) "
                             "VALUES (?, ?, ?, ?, ?, ?) RETURNING seq",
                             (now_rfc3339(), kind, name, reason, message, type)).fetchone()[0]
            # Per object: the newest MAX_EVENTS_PER_OBJECT stay, so one chatty (or hostile)
            # node cannot push every other object's events out.
            row = db.execute("SELECT seq FROM events WHERE kind = ? AND name = ? ORDER BY seq DESC "
                             "LIMIT 1 OFFSET ?", (kind, name, MAX_EVENTS_PER_OBJECT)).fetchone()
            if row is not None:
                db.execute("DELETE FROM events WHERE kind = ? AND name = ? AND seq <= ?",
                           (kind, name, row[0]))
            if seq % 1000 == 0:
                db.execute("DELETE FROM events WHERE seq <= ?", (seq - MAX_EVENTS,))

    # ----- FleetLock reboot slots (RebootLocks)

    def acquire_reboot_lock(self, group: str, holder: str, limit: int,
                            busy: Collection[str] = ()) -> tuple[str, list[RebootLock]]:
        with self._db.write() as db:
            rows = db.execute("SELECT holder, since FROM reboot_locks WHERE grp = ? "
                              "ORDER BY since, holder", (group,)).fetchall()
            holders = [RebootLock(group, h, since) for h, since in rows]
            names = {lock.holder for lock in holders}
            if holder in names:
                return "held", holders
            if len((names | set(busy)) - {holder}) >= limit:
                return "full", holders
            since = now_rfc3339()
            db.execute("INSERT INTO reboot_locks (grp, holder, since) VALUES (?, ?, ?)",
                       (group, holder, since))
            self._db.bump(db)
        self._notify()
        return "taken", [*holders, RebootLock(group, holder, since)]

    def release_reboot_lock(self, group: str, holder: str) -> bool:
        with self._db.write() as db:
            gone = db.execute("DELETE FROM reboot_locks WHERE grp = ? AND holder = ?",
                              (group, holder)).rowcount > 0
            if gone:
                self._db.bump(db)
        if gone:
            self._notify()
        return gone

    def list_reboot_locks(self, group: str | None = None) -> list[RebootLock]:
        sql, args = "SELECT grp, holder, since FROM reboot_locks", []
        if group is not None:
            sql, args = sql + " WHERE grp = ?", [group]
        with self._db.read() as db:
            rows = db.execute(sql + " ORDER BY grp, since, holder", args).fetchall()
        return [RebootLock(g, h, since) for g, h, since in rows]

    def list_events(self, kind: str | None = None, name: str | None = None,
                    since_seq: int = 0) -> list[StoreEvent]:
        sql = "SELECT seq, time, kind, name, reason, message, type FROM events WHERE seq > ?"
        args: list[Any] = [since_seq]
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        if name is not None:
            sql += " AND name = ?"
            args.append(name)
        rows = self._db.query(sql + " ORDER BY seq", args)
        return [StoreEvent(seq=r[0], time=r[1], kind=r[2], name=r[3], reason=r[4],
                           message=r[5], type=r[6]) for r in rows]
