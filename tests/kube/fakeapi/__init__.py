"""A fake kube-apiserver for the kube store's tests: an aiohttp app on loopback, in a thread.

It answers the calls the kube store (and kubectl-style clients) make the way kube-apiserver does:
resourceVersion is one global counter; create answers 201, get/put/patch 200; 409 AlreadyExists,
409 Conflict on a stale metadata.resourceVersion, 404 NotFound, 422 Invalid with Status causes,
400 BadRequest, 415 UnsupportedMediaType - every error a `kind: Status` JSON body with the real
reason and message. Merge patch, strategic merge patch (built-in kinds only, as the real server)
and JSON patch; list and watch with labelSelector / fieldSelector; watch streams with BOOKMARK
events (allowWatchBookmarks) and, for a resourceVersion older than the retained history, an ERROR
event carrying a 410 `Expired` Status. Kinds with a status subresource take status only through
`/status` (spec and metadata ignored there) and ignore status on main-resource writes. Custom
resources are served once their CustomResourceDefinition is created, and validated by
tests/kube/crdschema.py when it exists (422 Invalid; unknown fields 400 under
`fieldValidation=Strict`, else pruned with a Warning header).

Use:

    server = FakeAPIServer().start()        # or the `fakeapi` fixture in tests/kube/conftest.py
    server.url, server.state                # http://127.0.0.1:PORT, the State
    server.write_kubeconfig(path)           # a kubeconfig naming it
    server.stop()

Resource types are ordinary registrations (`state.register_type(ResourceType(...))`); the
built-in ones are Namespace, Node, Pod, Secret, ConfigMap, Event, ServiceAccount (core v1),
PodDisruptionBudget (policy/v1), DaemonSet (apps/v1) and CustomResourceDefinition.

Subresource hook (the Eviction API lives in tests/kube/fakeapi/eviction.py this way):

    async def handler(state, request, rtype, namespace, name) -> aiohttp.web.StreamResponse: ...
    server.state.register_subresource("", "v1", "pods", "eviction", handler)

The handler gets every method on `.../<plural>/<name>/<subresource>`; it may use
`state.get/list/create/update/delete` (they raise `APIError`, which it may let propagate: the
fake answers it as a Status), `state.lock` (an RLock) to make several steps atomic,
`app.json_response(body, status, headers)` and `app.status_response(APIError(...))`.
Tests may force a watch to expire with `state.compact()` or a small `history_limit`, and set
`bookmark_interval`. `state.requests` records every (method, path, query) received.

Also as the real server: a watch without resourceVersion (or "0") starts with an ADDED event per
existing object; an object leaving a watch's label/field selection is a DELETED event carrying
its previous content; a write that changes nothing keeps the resourceVersion (no event);
metadata.generation counts spec changes of custom resources; a PUT of a custom resource needs
metadata.resourceVersion (422), built-in kinds may omit it; status may be set when creating a
Node or Namespace, a Pod starts Pending; namespaced objects need their Namespace (404); DELETE
answers the object for Pods, Namespaces and CRDs and a Success Status otherwise; lists page with
limit / continue.

Not reproduced: authentication and authorization (every request is allowed; RBAC is checked
against the recorded requests by tests/kube/test_manifests_rbac_usage.py), server-side apply
(application/apply-patch+yaml is answered 415), managedFields, finalizers and graceful deletion
(a DELETE removes the object at once), deletecollection, discovery (/api, /apis), the
resourceVersionMatch / sendInitialEvents list and watch options, admission (defaults of
built-in kinds, quota), protobuf and CBOR, and kubelets (nothing runs pods or posts node
status: tests do).
"""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.kube.fakeapi.app import json_response, make_app, status_response
from tests.kube.fakeapi.state import APIError, ResourceType, State, builtin_types

__all__ = ["APIError", "FakeAPIServer", "ResourceType", "State", "json_response",
           "status_response"]

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class FakeAPIServer:
    def __init__(self, history_limit: int = 10_000, bookmark_interval: float = 1.0) -> None:
        self.state = State(history_limit, bookmark_interval)
        for rtype in builtin_types():
            self.state.register_type(rtype)
        ns = self.state.resource("", "v1", "namespaces")
        assert ns is not None
        for name in DEFAULT_NAMESPACES:
            self.state.create(ns, "", {"metadata": {"name": name},
                                       "status": {"phase": "Active"}})
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> FakeAPIServer:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self.state.loop = loop
            asyncio.set_event_loop(loop)
            try:
                runner = web.AppRunner(make_app(self.state), access_log=None,
                                       handle_signals=False, shutdown_timeout=1.0)
                loop.run_until_complete(runner.setup())
                site = web.TCPSite(runner, "127.0.0.1", 0)
                loop.run_until_complete(site.start())
                self._runner = runner
                server = site._server
                assert server is not None
                port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
                self.url = f"http://127.0.0.1:{port}"
            except BaseException as e:  # noqa: BLE001 - reported to start()
                errors.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-kube-apiserver", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return

        def close_watches() -> None:
            for watcher in list(self.state.active_watches):
                watcher.queue.put_nowait(None)
            loop.call_later(0.05, loop.stop)

        loop.call_soon_threadsafe(close_watches)
        self._thread.join(30)
        self._loop = None

    def write_kubeconfig(self, path: Path, token: str = "fake-token") -> Path:
        import yaml

        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        }))
        path.chmod(0o600)
        return path

    # Conveniences for tests (they go through the same State code as HTTP requests).
    def rtype(self, group: str, version: str, plural: str) -> ResourceType:
        rtype = self.state.resource(group, version, plural)
        if rtype is None:
            raise KeyError(f"{group}/{version} {plural} is not served")
        return rtype

    def create(self, group: str, version: str, plural: str, obj: dict[str, Any],
               namespace: str = "") -> dict[str, Any]:
        """Create as a POST would (a CRD is validated and its kinds served at once)."""
        from tests.kube.fakeapi.app import crd_established, is_crd, validate_crd

        rtype = self.rtype(group, version, plural)
        if is_crd(rtype):
            validate_crd(self.state, obj)
        created = self.state.create(rtype, namespace, obj)
        if is_crd(rtype):
            crd_established(self.state, created)
        return created
