"""The HTTP face of the fake: kube-apiserver's REST paths over `State`.

    /api/v1/<plural>[/<name>[/<subresource>]]                       cluster-scoped, core group
    /api/v1/namespaces/<ns>/<plural>[/<name>[/<subresource>]]       namespaced, core group
    /apis/<group>/<version>/...                                      the same for named groups

Verbs: list (labelSelector, fieldSelector), watch (`?watch=1`, resourceVersion, timeoutSeconds,
allowWatchBookmarks), create (201), get, update (PUT), patch (merge, strategic merge, JSON patch),
delete; `status` for kinds with a status subresource and any handler registered with
`State.register_subresource`. Every error is a `kind: Status` JSON body.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from tests.kube.fakeapi.patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from tests.kube.fakeapi.selectors import SelectorError, parse_fields, parse_labels
from tests.kube.fakeapi.state import (
    JSON, APIError, ResourceType, State, Watcher, crdschema, now,
)

STATE_KEY: web.AppKey[State] = web.AppKey("state", State)
DEFAULT_WATCH_SECONDS = 1800

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSONPATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None
                  ) -> web.Response:
    # Exactly `application/json` (no charset), as kube-apiserver sends it.
    resp = web.Response(status=status, body=json.dumps(body).encode(), headers=headers)
    resp.content_type = "application/json"
    return resp


def status_response(error: APIError) -> web.Response:
    return json_response(error.status(), error.code)


def not_found() -> APIError:
    return APIError(404, "NotFound", "the server could not find the requested resource", {})


def bad_request(message: str) -> APIError:
    return APIError(400, "BadRequest", message)


class Route:
    """What a request path names."""

    def __init__(self, rtype: ResourceType, namespace: str, name: str, sub: str,
                 all_namespaces: bool) -> None:
        self.rtype, self.namespace, self.name, self.sub = rtype, namespace, name, sub
        self.all_namespaces = all_namespaces


def parse_path(state: State, path: str) -> Route:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise not_found()
    namespace = ""
    namespaced_path = (len(rest) >= 3 and rest[0] == "namespaces"
                       and not (group == "" and len(rest) == 3 and rest[2] in ("status", "finalize")))
    if namespaced_path:
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        raise not_found()
    rtype = state.resource(group, version, rest[0])
    if rtype is None:
        raise not_found()
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 else ""
    if namespaced_path and not rtype.namespaced:
        raise not_found()
    all_ns = rtype.namespaced and not namespaced_path
    if all_ns and name:
        raise not_found()
    return Route(rtype, namespace, name, sub, all_ns)


async def read_body(request: web.Request) -> Any:
    raw = await request.read()
    if request.content_type == APPLY:
        import yaml
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise bad_request(f"error decoding YAML: {e}") from None
    try:
        return json.loads(raw)
    except ValueError as e:
        raise bad_request(f"couldn't get version/kind; json parse error: {e}") from None


def check_kind(route: Route, obj: Any, verb: str) -> JSON:
    rtype = route.rtype
    if not isinstance(obj, dict):
        raise bad_request("the object provided is not a JSON object")
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if (api_version and api_version != rtype.api_version) or (kind and kind != rtype.kind):
        raise bad_request(f"the API version in the data ({api_version}) does not match the "
                          f"expected API version ({rtype.api_version})"
                          if api_version != rtype.api_version else
                          f"the kind in the data ({kind}) does not match the expected kind "
                          f"({rtype.kind})")
    meta = obj.get("metadata") or {}
    if rtype.namespaced and meta.get("namespace") not in (None, "", route.namespace):
        raise bad_request("the namespace of the provided object does not match the namespace "
                          "sent on the request")
    return obj


def _drop_path(obj: Any, path: str) -> None:
    """Remove `spec.a[0].b`-style `path` from `obj` (pruning an unknown field)."""
    tokens: list[str | int] = []
    for part in path.replace("]", "").split("."):
        name, *indexes = part.split("[")
        if name:
            tokens.append(name)
        tokens.extend(int(i) for i in indexes if i.isdigit())
    cur = obj
    for tok in tokens[:-1]:
        try:
            cur = cur[tok]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(cur, dict) and isinstance(tokens[-1], str):
        cur.pop(tokens[-1], None)


def field_validation(request: web.Request, route: Route, obj: JSON) -> list[str]:
    """Unknown fields of a custom resource: 400 under fieldValidation=Strict, else pruned (with
    a Warning header under the default, Warn). Returns the warnings."""
    if route.rtype.crd is None:
        return []
    module = crdschema()
    if module is None:
        return []
    unknown = list(module.unknown_fields(route.rtype.crd, obj))
    mode = request.query.get("fieldValidation", "Warn")
    if unknown and mode == "Strict":
        raise bad_request("strict decoding error: " +
                          ", ".join(f'unknown field "{u}"' for u in unknown))
    if hasattr(module, "prune"):  # pruning, null pruning and defaulting, as the server stores it
        pruned = module.prune(route.rtype.crd, obj)
        obj.clear()
        obj.update(pruned)
    else:
        for path in unknown:
            _drop_path(obj, path)
    return [f'unknown field "{u}"' for u in unknown] if mode == "Warn" else []


def warning_headers(warnings: list[str]) -> dict[str, str]:
    # aiohttp joins repeated keys poorly; one header with comma-separated warn-values is valid.
    if not warnings:
        return {}
    return {"Warning": ", ".join("299 - " + json.dumps(w) for w in warnings)}


# ----- CRDs ----------------------------------------------------------------------------------


def crd_types(crd: JSON) -> list[ResourceType]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or spec.get("subresources") or {}
        out.append(ResourceType(
            group=str(spec.get("group")), version=str(version.get("name")),
            kind=str(names.get("kind")), plural=str(names.get("plural")),
            namespaced=spec.get("scope") == "Namespaced",
            status_subresource="status" in subresources, unconditional_update=False,
            generation=True, strategic_merge=False, crd=crd))
    return out


def validate_crd(state: State, crd: JSON) -> None:
    name = str((crd.get("metadata") or {}).get("name") or "")
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    rtype = state.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    assert rtype is not None
    causes = []
    expected = f"{names.get('plural')}.{spec.get('group')}"
    if name != expected:
        causes.append({"reason": "FieldValueInvalid", "field": "metadata.name",
                       "message": f'Invalid value: "{name}": must be spec.names.plural+"."+'
                                  "spec.group"})
    for field, value in (("spec.names.kind", names.get("kind")),
                         ("spec.names.plural", names.get("plural")),
                         ("spec.group", spec.get("group"))):
        if not value:
            causes.append({"reason": "FieldValueRequired", "field": field,
                           "message": "Required value"})
    if spec.get("scope") not in ("Cluster", "Namespaced"):
        causes.append({"reason": "FieldValueNotSupported", "field": "spec.scope",
                       "message": f'Unsupported value: "{spec.get("scope")}": supported values: '
                                  '"Cluster", "Namespaced"'})
    versions = spec.get("versions") or []
    if not versions:
        causes.append({"reason": "FieldValueInvalid", "field": "spec.versions",
                       "message": "Invalid value: null: must have exactly one version marked as "
                                  "storage version"})
    elif sum(1 for v in versions if v.get("storage")) != 1:
        causes.append({"reason": "FieldValueInvalid", "field": "spec.versions",
                       "message": "Invalid value: []apiextensions.CustomResourceDefinitionVersion"
                                  "{...}: must have exactly one version marked as storage version"})
    if causes:
        raise state.invalid(rtype, name, causes)


def crd_established(state: State, crd: JSON) -> None:
    """Serve the CRD's kinds and mark it Established, as the apiextensions controllers do."""
    for rtype in crd_types(crd):
        state.register_type(rtype)
    spec = crd.get("spec") or {}
    rtype = state.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    assert rtype is not None
    name = crd["metadata"]["name"]
    stamp = now()
    status = {"acceptedNames": dict(spec.get("names") or {}),
              "conditions": [
                  {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                   "message": "no conflicts found", "lastTransitionTime": stamp},
                  {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                   "message": "the initial names have been accepted",
                   "lastTransitionTime": stamp}],
              "storedVersions": [v["name"] for v in spec.get("versions") or []
                                 if v.get("storage")]}
    current = state.get(rtype, "", name)
    current["status"] = status
    state.update(rtype, "", name, current, subresource="status")


def crd_removed(state: State, crd: JSON) -> None:
    for rtype in crd_types(crd):
        state.unregister_type(rtype.key)


def is_crd(rtype: ResourceType) -> bool:
    return rtype.key == ("apiextensions.k8s.io", "v1", "customresourcedefinitions")


# ----- handlers --------------------------------------------------------------------------------


async def handle(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    state.requests.append((request.method, request.path, request.query_string))
    try:
        route = parse_path(state, request.path)
        if route.sub:
            return await subresource(state, request, route)
        if not route.name:
            if request.method == "GET":
                if request.query.get("watch") in ("1", "true", "True"):
                    return await watch(state, request, route)
                return list_(state, request, route)
            if request.method == "POST" and not route.all_namespaces:
                return await create(state, request, route)
            raise APIError(405, "MethodNotAllowed",
                           f"the server does not allow this method on the requested resource")
        if request.method == "GET":
            return json_response(state.get(route.rtype, route.namespace, route.name))
        if request.method == "PUT":
            return await update(state, request, route)
        if request.method == "PATCH":
            return await patch(state, request, route)
        if request.method == "DELETE":
            return delete(state, route)
        raise APIError(405, "MethodNotAllowed",
                       "the server does not allow this method on the requested resource")
    except APIError as e:
        return status_response(e)
    except SelectorError as e:
        return status_response(bad_request(str(e)))


def list_(state: State, request: web.Request, route: Route) -> web.Response:
    """A list, in pages when `limit` is given: `metadata.continue` names the next page and every
    page answers at the first page's resourceVersion (the snapshot is kept here, as etcd would
    serve it); an unknown token is 410 Expired, like a compacted one."""
    q = request.query
    token = q.get("continue", "")
    if token:
        page = state.continued.get(token)
        if page is None:
            raise APIError(410, "Expired", "The provided continue parameter is too old to display "
                           "a consistent list result. You can start a new list without the "
                           "continue parameter, or use the continue token in this response to "
                           "retrieve the remainder of the results. Continuing with the provided "
                           "token results in an inconsistent list - objects that were created, "
                           "modified, or deleted between the time the first chunk was returned "
                           "and now may show up in the list.")
        items, rv = page
    else:
        items, rv = state.list(route.rtype, route.namespace, q.get("labelSelector", ""),
                               q.get("fieldSelector", ""))
    if route.rtype.crd is None:
        for item in items:  # typed lists carry no kind/apiVersion per item
            item.pop("kind", None)
            item.pop("apiVersion", None)
    meta: JSON = {"resourceVersion": str(rv)}
    try:
        limit = int(q.get("limit") or 0)
    except ValueError:
        raise bad_request(f"invalid limit: {q.get('limit')}") from None
    if limit > 0 and len(items) > limit:
        rest = items[limit:]
        items = items[:limit]
        next_token = f"page-{len(state.continued) + 1}-{rv}"
        state.continued[next_token] = (rest, rv)
        meta["continue"] = next_token
        meta["remainingItemCount"] = len(rest)
    return json_response({"kind": f"{route.rtype.kind}List", "apiVersion": route.rtype.api_version,
                          "metadata": meta, "items": items})


async def create(state: State, request: web.Request, route: Route) -> web.Response:
    obj = check_kind(route, await read_body(request), "create")
    warnings = field_validation(request, route, obj)
    if is_crd(route.rtype):
        validate_crd(state, obj)
    created = state.create(route.rtype, route.namespace, obj)
    if is_crd(route.rtype):
        crd_established(state, created)
    return json_response(created, 201, warning_headers(warnings))


async def update(state: State, request: web.Request, route: Route, sub: str = "") -> web.Response:
    obj = check_kind(route, await read_body(request), "update")
    warnings = field_validation(request, route, obj)
    updated = state.update(route.rtype, route.namespace, route.name, obj, sub)
    if is_crd(route.rtype) and not sub:
        crd_established(state, updated)
        updated = state.get(route.rtype, route.namespace, route.name)
    return json_response(updated, 200, warning_headers(warnings))


async def patch(state: State, request: web.Request, route: Route, sub: str = "") -> web.Response:
    ctype = request.content_type
    accepted = [JSONPATCH, MERGE] + ([STRATEGIC] if route.rtype.strategic_merge else [])
    if ctype not in accepted:
        raise APIError(415, "UnsupportedMediaType",
                       "the body of the request was in an unknown format - accepted media types "
                       "include: " + ", ".join(accepted + [APPLY]))
    body = await read_body(request)
    with state.lock:
        current = state.get(route.rtype, route.namespace, route.name)
        try:
            if ctype == JSONPATCH:
                new = json_patch(current, body)
            elif ctype == MERGE:
                new = merge_patch(current, body)
            else:
                new = strategic_merge_patch(current, body)
        except PatchError as e:
            raise APIError(422, "Invalid", str(e)) if ctype == JSONPATCH else bad_request(str(e))
        if not isinstance(new, dict):
            raise bad_request("the patch did not produce an object")
        check_kind(route, new, "patch")
        meta = new.setdefault("metadata", {})
        if not (isinstance(body, dict) and "resourceVersion" in (body.get("metadata") or {})):
            # Without a precondition in the patch, a patch applies to the latest version.
            meta["resourceVersion"] = current["metadata"]["resourceVersion"]
        warnings = field_validation(request, route, new)
        updated = state.update(route.rtype, route.namespace, route.name, new, sub)
    return json_response(updated, 200, warning_headers(warnings))


def delete(state: State, route: Route) -> web.Response:
    gone = state.delete(route.rtype, route.namespace, route.name)
    if is_crd(route.rtype):
        crd_removed(state, gone)
    if route.rtype.return_deleted_object:
        return json_response(gone)
    details: JSON = {"name": route.name, "kind": route.rtype.plural,
                     "uid": gone["metadata"].get("uid")}
    if route.rtype.group:
        details["group"] = route.rtype.group
    return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                          "status": "Success", "details": details})


async def subresource(state: State, request: web.Request, route: Route) -> web.StreamResponse:
    rt = route.rtype
    handler = state.subresources.get((rt.group, rt.version, rt.plural, route.sub))
    if handler is not None:
        result: web.StreamResponse = await handler(state, request, rt, route.namespace, route.name)
        return result
    if route.sub != "status" or not rt.status_subresource:
        raise not_found()
    if request.method == "GET":
        return json_response(state.get(rt, route.namespace, route.name))
    if request.method == "PUT":
        return await update(state, request, route, "status")
    if request.method == "PATCH":
        return await patch(state, request, route, "status")
    raise APIError(405, "MethodNotAllowed",
                   "the server does not allow this method on the requested resource")


async def watch(state: State, request: web.Request, route: Route) -> web.StreamResponse:
    q = request.query
    labels = parse_labels(q.get("labelSelector", ""))
    fields = parse_fields(q.get("fieldSelector", ""), route.rtype.field_getters())
    rv_text = q.get("resourceVersion", "")
    since: int | None = None
    if rv_text not in ("", "0"):
        try:
            since = int(rv_text)
        except ValueError:
            raise bad_request(f"invalid resource version: {rv_text}") from None
    try:
        timeout = float(q.get("timeoutSeconds") or DEFAULT_WATCH_SECONDS)
    except ValueError:
        raise bad_request("invalid timeoutSeconds") from None
    bookmarks = q.get("allowWatchBookmarks") in ("1", "true", "True")
    loop = asyncio.get_running_loop()
    watcher = Watcher(route.rtype, route.namespace, labels, fields, asyncio.Queue(), loop)
    resp = web.StreamResponse(status=200)
    resp.content_type = "application/json"
    resp.enable_chunked_encoding()
    try:
        state.add_watcher(watcher, since)
    except APIError as e:
        # Like the watch cache: 200, then one ERROR event carrying the 410 Status.
        await resp.prepare(request)
        await resp.write(json.dumps({"type": "ERROR", "object": e.status()}).encode() + b"\n")
        await resp.write_eof()
        return resp
    state.active_watches.add(watcher)
    try:
        await resp.prepare(request)
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            wait = min(remaining, state.bookmark_interval) if bookmarks else remaining
            try:
                event = await asyncio.wait_for(watcher.queue.get(), wait)
            except asyncio.TimeoutError:
                if bookmarks and deadline - loop.time() > 0:
                    state.bookmark(watcher)
                continue
            if event is None:  # server stopping
                break
            await resp.write(json.dumps(event).encode() + b"\n")
        await resp.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        state.remove_watcher(watcher)
        state.active_watches.discard(watcher)
    return resp


def make_app(state: State) -> web.Application:
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[STATE_KEY] = state
    app.router.add_route("*", "/{tail:.*}", handle)
    return app
