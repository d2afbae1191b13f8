"""The kube store's change notification: one list+watch loop per kind, a revision counter.

Each `KindWatch` lists its kind once (the resourceVersion of the list is where its watch starts),
then watches with `allowWatchBookmarks=true`: ADDED / MODIFIED / DELETED events bump the shared
revision; BOOKMARK events only move the resume point; a watch that ends (server timeout, dropped
connection) resumes from the last resourceVersion seen; an ERROR event or HTTP status 410
(`Expired` / `Gone`: the resume point is older than the server's history) makes it list again,
and the list bumps the revision when anything differs from what the watch had seen. The same
full list runs every RESYNC_SECONDS (when a watch request ends) as a periodic resync. Other
errors are retried with a capped exponential backoff.

The objects themselves are not cached here: the store reads through to the API server, so a
controller pass always sees its own writes; watches only say *that* something changed.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from machineconfig.store.base import StoreError

log = logging.getLogger(__name__)

# Server-side timeout of one watch request; the loop then resumes from the last resourceVersion.
WATCH_SECONDS = 300
# A full list this long after the last one (checked when a watch request ends): a resync that
# catches anything a watch could have missed, bumping the revision only when something differs.
RESYNC_SECONDS = 1800
BACKOFF_START = 0.5
BACKOFF_MAX = 30.0


class Expired(StoreError):
    """The resume point is gone from the server's history (410): list again."""

    temporary = True


@dataclass(frozen=True)
class WatchTarget:
    """What one loop watches: a lightkube resource class and optional namespace / selectors."""

    name: str  # for logs: "nodes", "machineconfigpools", ...
    resource: Any
    namespace: str | None = None
    fields: dict[str, str] | None = None


class Revision:
    """A counter bumped on every change any watch sees; waiters block on it."""

    def __init__(self) -> None:
        self._value = 0
        self._cond = threading.Condition()

    @property
    def value(self) -> int:
        with self._cond:
            return self._value

    def bump(self) -> int:
        with self._cond:
            self._value += 1
            self._cond.notify_all()
            return self._value

    def wait_past(self, since: int, timeout: float) -> int:
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while self._value == since:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._value


class KindWatch:
    """List+watch loop for one target, in a daemon thread, until `stop()`."""

    def __init__(self, client: Any, target: WatchTarget, revision: Revision,
                 watch_seconds: int = WATCH_SECONDS,
                 on_change: Callable[[], None] | None = None) -> None:
        self.client = client
        self.target = target
        self.revision = revision
        self.on_change = on_change  # called (in this loop's thread) after each change seen
        self.resync_seconds = RESYNC_SECONDS
        self._listed_at = 0.0
        self.watch_seconds = watch_seconds
        self.resource_version = ""
        self.seen: dict[str, str] = {}  # "namespace/name" -> resourceVersion
        self.lists = 0  # how many times this loop listed (tests assert on resyncs)
        self.bookmarks = 0
        self._stop = threading.Event()
        self._response: Any = None
        self._thread: threading.Thread | None = None
        self.synced = threading.Event()
        self.error: str = ""

    # ----- list

    def relist(self) -> None:
        """List the kind; bump the revision if anything differs from what was seen."""
        items = self.client.list(self.target.resource, namespace=self.target.namespace,
                                 fields=self.target.fields)
        current: dict[str, str] = {}
        for item in items:
            meta = _meta(item)
            current[f"{meta.get('namespace') or ''}/{meta.get('name')}"] = str(
                meta.get("resourceVersion") or "")
        self.resource_version = str(items.resourceVersion)
        self.lists += 1
        self._listed_at = time.monotonic()
        if current != self.seen or not self.synced.is_set():
            first = not self.synced.is_set()
            self.seen = current
            self.revision.bump()
            if self.on_change is not None and not first:
                self.on_change()
        self.synced.set()

    # ----- watch

    def _watch_once(self) -> None:
        """One watch request from self.resource_version until the server ends it."""
        client = self.client._client  # lightkube's GenericSyncClient: the only way to pass
        # allowWatchBookmarks, which Client.watch() does not expose.
        params: dict[str, Any] = {"timeoutSeconds": self.watch_seconds,
                                  "resourceVersion": self.resource_version,
                                  "allowWatchBookmarks": "true"}
        if self.target.fields:
            params["fieldSelector"] = ",".join(f"{k}={v}" for k, v in self.target.fields.items())
        br = client.prepare_request("list", res=self.target.resource,
                                    namespace=self.target.namespace, watch=True, params=params)
        request = client._client.build_request(br.method, br.url, params=br.params,
                                               timeout=client._watch_timeout)
        response = client.send(request, stream=True)
        self._response = response
        try:
            if self._stop.is_set():  # stop() came while the request was being sent
                return
            if response.status_code == 410:
                raise Expired(f"HTTP 410 on watch {self.target.name}")
            if response.status_code >= 400:
                response.read()
                raise RuntimeError(f"watch {self.target.name}: HTTP {response.status_code}: "
                                   f"{_status_message(response.content)}")
            for line in response.iter_lines():
                if self._stop.is_set():
                    return
                if line.strip():
                    self._event(json.loads(line))
        finally:
            self._response = None
            response.close()

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        meta = obj.get("metadata") or {}
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise Expired(str(obj.get("message") or "410 Expired"))
            raise RuntimeError(f"watch {self.target.name}: {obj.get('message')}")
        rv = str(meta.get("resourceVersion") or "")
        if rv:
            self.resource_version = rv
        if kind == "BOOKMARK":
            self.bookmarks += 1
            return
        key = f"{meta.get('namespace') or ''}/{meta.get('name')}"
        if kind == "DELETED":
            self.seen.pop(key, None)
        else:
            if self.seen.get(key) == rv:
                return  # replayed after a reconnect: nothing new
            self.seen[key] = rv
        self.revision.bump()
        if self.on_change is not None:
            self.on_change()

    def _loop(self) -> None:
        delay = BACKOFF_START
        need_list = not self.synced.is_set()
        while not self._stop.is_set():
            try:
                if need_list:
                    self.relist()
                    need_list = False
                self._watch_once()
                delay = BACKOFF_START
                self.error = ""
                if time.monotonic() - self._listed_at >= self.resync_seconds:
                    need_list = True
            except Expired as e:
                log.info("watch %s: %s; listing again", self.target.name, e)
                need_list = True
            except Exception as e:  # noqa: BLE001 - a watch must outlive network trouble
                if self._stop.is_set():
                    return
                self.error = f"{type(e).__name__}: {e}"
                log.warning("watch %s failed (%s); retrying in %.1fs", self.target.name,
                            self.error, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"kube-watch-{self.target.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the loop now: a watch blocked reading its stream is woken by shutting its socket
        down (closing the response alone does not wake a read in progress, and the server would
        keep the stream open until its timeout)."""
        self._stop.set()
        response = self._response
        if response is not None:
            _interrupt(response)

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the loop's thread to end; whether it did."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True


def _interrupt(response: Any) -> None:
    """Wake the thread reading `response`: shut its socket down (the reader then sees the end of
    the stream and closes the response itself). Closing from here instead would free the file
    descriptor under the reader, which could then read another connection's bytes."""
    try:
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
    except Exception:  # noqa: BLE001 - best effort from another thread
        sock = None
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def _meta(item: Any) -> dict[str, Any]:
    meta = item.get("metadata") if isinstance(item, dict) else getattr(item, "metadata", None)
    if meta is None:
        return {}
    if isinstance(meta, dict):
        return meta
    return {"name": meta.name, "namespace": meta.namespace,
            "resourceVersion": meta.resourceVersion}


def _status_message(raw: bytes) -> str:
    try:
        return str(json.loads(raw).get("message") or "")[:300]
    except (ValueError, AttributeError):
        return ""


def start_all(client: Any, targets: list[WatchTarget], revision: Revision,
              on_error: Callable[[str, Exception], Exception],
              on_change: Mapping[str, Callable[[], None]] | None = None,
              watch_seconds: int = WATCH_SECONDS) -> list[KindWatch]:
    """List every target (in the caller's thread, so a missing CRD or a refused list is an error
    now, not a log line later), then start their watch loops. `on_change` maps a target name to
    a callback run after each change that loop sees."""
    watches: list[KindWatch] = []
    for target in targets:
        watch = KindWatch(client, target, revision, watch_seconds=watch_seconds,
                          on_change=(on_change or {}).get(target.name))
        try:
            watch.relist()
        except Exception as e:
            for w in watches:
                w.stop()
            raise on_error(f"list {target.name}", e) from e
        watches.append(watch)
    for watch in watches:
        watch.start()
    return watches
