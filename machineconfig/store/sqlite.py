"""The local store's SQLite database: one connection per thread, WAL, durable commits.

Every write runs in `BEGIN IMMEDIATE` so read-modify-write cycles from several processes and
threads serialize instead of losing updates; the revision counter is bumped in the same transaction.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from machineconfig.store.base import StoreError

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (name TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, kind TEXT NOT NULL,
    name TEXT NOT NULL, reason TEXT NOT NULL, message TEXT NOT NULL, type TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_object ON events (kind, name, seq);
CREATE TABLE IF NOT EXISTS overlays (
    kind TEXT NOT NULL, name TEXT NOT NULL, status TEXT, configuration TEXT,
    PRIMARY KEY (kind, name));
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (kind, name));
CREATE TABLE IF NOT EXISTS reboot_locks (
    grp TEXT NOT NULL, holder TEXT NOT NULL, since TEXT NOT NULL, PRIMARY KEY (grp, holder));
INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', '0');
INSERT OR IGNORE INTO meta (key, value) VALUES ('inputs', '');
"""


def _create_private(path: str) -> None:
    """Create the database file 0600 before SQLite does (it would use 0644 less the umask); SQLite
    gives its -wal and -shm files the mode of the database file. A file left 0644 by an older
    version is narrowed once: it holds the pull secret."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        for name in (path, path + "-wal", path + "-shm"):
            try:
                mode = os.stat(name).st_mode & 0o777
                if mode & 0o077:
                    os.chmod(name, 0o600)
                    log.warning("%s was mode %o: now 0600 (it holds secrets)", name, mode)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise StoreError(f"{name}: cannot make the state database private: {e.strerror}") from e
        return
    except OSError as e:
        raise StoreError(f"{path}: cannot create the state database: {e.strerror}") from e
    os.close(fd)


class Database:
    """A state database shared by threads (a connection each) and processes (file locks)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()
        self._pid = os.getpid()
        _create_private(path)
        try:
            self.conn().executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
        except sqlite3.Error as e:
            raise StoreError(f"{path}: cannot create the state database: {e}") from e

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                   isolation_level=None, check_same_thread=True)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{self.path}: cannot switch to WAL mode (got {mode})")
            # FULL: a commit is on disk (WAL fsynced) before it returns, so an acknowledged
            # write survives kill -9 and power loss.
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot open the state database: {e}") from e
        return conn

    def conn(self) -> sqlite3.Connection:
        # A process forked from us must not reuse our connections (SQLite forbids it).
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or self._pid != os.getpid():
            self._pid = os.getpid()
            conn = self._connect()
            self._local.conn = conn
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed on success, rolled back on any exception."""
        conn = self.conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: cannot start a write: {e}") from e
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                raise StoreError(f"{self.path}: write failed: {e}") from e
            raise

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for several SELECTs."""
        conn = self.conn()
        try:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: read failed: {e}") from e

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """Every row of one SELECT (in the caller's transaction, if any)."""
        try:
            return self.conn().execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: read failed: {e}") from e

    def revision(self) -> int:
        return int(self.query("SELECT value FROM meta WHERE key = 'revision'")[0][0])

    @staticmethod
    def bump(conn: sqlite3.Connection) -> int:
        """Increase the revision inside the caller's write transaction; returns the new one."""
        row = conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 "
                           "WHERE key = 'revision' RETURNING value").fetchone()
        return int(row[0])

    def close(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
