"""The fake API server answers like kube-apiserver: status codes, Status bodies, optimistic
concurrency, status subresource, CRDs, patches, selectors and watch streams (bookmarks, 410)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.kube.fakeapi import FakeAPIServer

MC_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "machineconfigpools.machineconfiguration.openshift.io"},
    "spec": {"group": "machineconfiguration.openshift.io", "scope": "Cluster",
             "names": {"kind": "MachineConfigPool", "plural": "machineconfigpools",
                       "singular": "machineconfigpool", "listKind": "MachineConfigPoolList"},
             "versions": [{"name": "v1", "served": True, "storage": True,
                           "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {
                               "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
}
POOLS = "/apis/machineconfiguration.openshift.io/v1/machineconfigpools"


def call(server: FakeAPIServer, method: str, path: str, body: Any = None,
         ctype: str = "application/json") -> tuple[int, dict[str, Any], dict[str, str]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.url + path, data=data, method=method,
                                 headers={"Content-Type": ctype} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def stream(server: FakeAPIServer, path: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(server.url + path, timeout=10) as resp:
        assert resp.headers["Content-Type"] == "application/json"
        return [json.loads(line) for line in resp.read().splitlines() if line.strip()]


def node(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


def test_create_get_conflict_notfound(fakeapi: FakeAPIServer) -> None:
    code, created, headers = call(fakeapi, "POST", "/api/v1/nodes", node("n1"))
    assert code == 201 and headers["Content-Type"] == "application/json"
    rv = created["metadata"]["resourceVersion"]
    assert created["metadata"]["uid"] and created["status"]["conditions"][0]["type"] == "Ready"

    code, status, _ = call(fakeapi, "POST", "/api/v1/nodes", node("n1"))
    assert code == 409
    assert status == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": 'nodes "n1" already exists', "reason": "AlreadyExists",
                      "details": {"name": "n1", "kind": "nodes"}, "code": 409}

    code, status, _ = call(fakeapi, "GET", "/api/v1/nodes/nope")
    assert (code, status["reason"], status["message"]) == (404, "NotFound", 'nodes "nope" not found')

    created["metadata"]["labels"] = {"a": "b"}
    code, updated, _ = call(fakeapi, "PUT", "/api/v1/nodes/n1", created)
    assert code == 200 and int(updated["metadata"]["resourceVersion"]) > int(rv)
    # The same write again carries a stale resourceVersion.
    code, status, _ = call(fakeapi, "PUT", "/api/v1/nodes/n1", created)
    assert code == 409 and status["reason"] == "Conflict"
    assert status["message"] == ('Operation cannot be fulfilled on nodes "n1": the object has been '
                                 "modified; please apply your changes to the latest version and "
                                 "try again")
    # A merge patch carrying a stale resourceVersion is a conflict too.
    code, status, _ = call(fakeapi, "PATCH", "/api/v1/nodes/n1",
                           {"metadata": {"resourceVersion": rv, "labels": {"x": "y"}}},
                           "application/merge-patch+json")
    assert code == 409 and status["reason"] == "Conflict"


def test_invalid_name_is_422_with_causes(fakeapi: FakeAPIServer) -> None:
    code, status, _ = call(fakeapi, "POST", "/api/v1/nodes", node("Bad_Name"))
    assert code == 422 and status["reason"] == "Invalid"
    assert status["message"].startswith('Node "Bad_Name" is invalid: metadata.name: Invalid value')
    assert status["details"]["causes"][0]["field"] == "metadata.name"
    assert status["details"]["causes"][0]["reason"] == "FieldValueInvalid"


def test_patches_and_status_subresource(fakeapi: FakeAPIServer) -> None:
    call(fakeapi, "POST", "/api/v1/nodes", node("n1"))
    code, n, _ = call(fakeapi, "PATCH", "/api/v1/nodes/n1",
                      {"metadata": {"annotations": {"a": "1", "b": "2"}}, "spec": {"unschedulable": True},
                       "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
                      "application/strategic-merge-patch+json")
    assert code == 200 and n["metadata"]["annotations"] == {"a": "1", "b": "2"}
    assert n["spec"] == {"unschedulable": True}
    assert n["status"]["conditions"][0]["status"] == "True"  # status ignored on the main resource
    code, n, _ = call(fakeapi, "PATCH", "/api/v1/nodes/n1",
                      {"metadata": {"annotations": {"a": None}}}, "application/merge-patch+json")
    assert n["metadata"]["annotations"] == {"b": "2"}
    code, n, _ = call(fakeapi, "PATCH", "/api/v1/nodes/n1",
                      [{"op": "add", "path": "/metadata/labels/z", "value": "1"}],
                      "application/json-patch+json")
    assert code == 200 and n["metadata"]["labels"] == {"z": "1"}
    # Through /status: the condition changes (merged by type), the spec does not.
    code, n, _ = call(fakeapi, "PATCH", "/api/v1/nodes/n1/status",
                      {"spec": {"unschedulable": False},
                       "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
                      "application/strategic-merge-patch+json")
    assert code == 200 and n["status"]["conditions"] == [{"type": "Ready", "status": "False"}]
    assert n["spec"] == {"unschedulable": True}
    code, status, _ = call(fakeapi, "PATCH", "/api/v1/nodes/n1",
                           [{"op": "remove", "path": "/metadata/nothere"}],
                           "application/json-patch+json")
    assert code == 422 and status["kind"] == "Status"


def test_crd_serves_custom_resources(fakeapi: FakeAPIServer) -> None:
    code, _, _ = call(fakeapi, "GET", POOLS)
    assert code == 404
    code, crd, _ = call(fakeapi, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                        MC_CRD)
    assert code == 201
    _, crd, _ = call(fakeapi, "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                     "machineconfigpools.machineconfiguration.openshift.io")
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True"
    pool = {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfigPool",
            "metadata": {"name": "worker"}, "spec": {"paused": False},
            "status": {"machineCount": 3}}
    code, created, _ = call(fakeapi, "POST", POOLS, pool)
    assert code == 201 and "status" not in created and created["metadata"]["generation"] == 1
    # Custom resources: no strategic merge, no unconditional update.
    code, status, _ = call(fakeapi, "PATCH", POOLS + "/worker", {"spec": {"paused": True}},
                           "application/strategic-merge-patch+json")
    assert code == 415 and status["reason"] == "UnsupportedMediaType"
    del created["metadata"]["resourceVersion"]
    code, status, _ = call(fakeapi, "PUT", POOLS + "/worker", created)
    assert code == 422 and status["details"]["causes"][0]["field"] == "metadata.resourceVersion"
    code, updated, _ = call(fakeapi, "PATCH", POOLS + "/worker", {"spec": {"paused": True}},
                            "application/merge-patch+json")
    assert updated["metadata"]["generation"] == 2
    code, updated, _ = call(fakeapi, "PUT", POOLS + "/worker/status",
                            {**updated, "spec": {"paused": False}, "status": {"machineCount": 3}})
    assert code == 200 and updated["status"] == {"machineCount": 3}
    assert updated["spec"] == {"paused": True} and updated["metadata"]["generation"] == 2
    code, status, _ = call(fakeapi, "GET", POOLS + "/nope")
    assert status["message"] == \
        'machineconfigpools.machineconfiguration.openshift.io "nope" not found'
    assert status["details"] == {"name": "nope", "kind": "machineconfigpools",
                                 "group": "machineconfiguration.openshift.io"}
    bad = dict(MC_CRD, metadata={"name": "wrong.example.com"})
    code, status, _ = call(fakeapi, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                           bad)
    assert code == 422 and status["details"]["causes"][0]["field"] == "metadata.name"


def test_selectors(fakeapi: FakeAPIServer) -> None:
    call(fakeapi, "POST", "/api/v1/nodes", node("n1", role="worker"))
    call(fakeapi, "POST", "/api/v1/nodes", node("n2", role="master"))
    for name, node_name in (("p1", "n1"), ("p2", "n2")):
        code, pod, _ = call(fakeapi, "POST", "/api/v1/namespaces/default/pods",
                            {"metadata": {"name": name}, "spec": {"nodeName": node_name}})
        assert code == 201 and pod["status"]["phase"] == "Pending"
    _, lst, _ = call(fakeapi, "GET", "/api/v1/nodes?labelSelector=role%3Dworker")
    assert [i["metadata"]["name"] for i in lst["items"]] == ["n1"]
    _, lst, _ = call(fakeapi, "GET", "/api/v1/nodes?labelSelector=role%20notin%20(worker)")
    assert [i["metadata"]["name"] for i in lst["items"]] == ["n2"]
    _, lst, _ = call(fakeapi, "GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn2")
    assert [i["metadata"]["name"] for i in lst["items"]] == ["p2"]
    assert lst["kind"] == "PodList" and "kind" not in lst["items"][0]
    code, status, _ = call(fakeapi, "GET", "/api/v1/nodes?fieldSelector=spec.bogus%3D1")
    assert code == 400 and status["reason"] == "BadRequest"
    code, status, _ = call(fakeapi, "POST", "/api/v1/namespaces/nons/pods", {"metadata": {"name": "x"}})
    assert code == 404 and status["message"] == 'namespaces "nons" not found'


def test_watch_replays_from_resource_version_and_sends_bookmarks(fakeapi: FakeAPIServer) -> None:
    _, n1, _ = call(fakeapi, "POST", "/api/v1/nodes", node("n1"))
    rv = n1["metadata"]["resourceVersion"]
    call(fakeapi, "PATCH", "/api/v1/nodes/n1", {"metadata": {"labels": {"a": "b"}}},
         "application/merge-patch+json")
    call(fakeapi, "POST", "/api/v1/nodes", node("n2"))
    call(fakeapi, "DELETE", "/api/v1/nodes/n2")
    events = stream(fakeapi, f"/api/v1/nodes?watch=1&resourceVersion={rv}&timeoutSeconds=1"
                    "&allowWatchBookmarks=true")
    kinds = [(e["type"], e["object"]["metadata"].get("name")) for e in events]
    assert kinds[:3] == [("MODIFIED", "n1"), ("ADDED", "n2"), ("DELETED", "n2")]
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks and bookmarks[-1]["object"]["kind"] == "Node"
    assert int(bookmarks[-1]["object"]["metadata"]["resourceVersion"]) >= \
        int(events[2]["object"]["metadata"]["resourceVersion"])
    # Without a resourceVersion: the current objects as ADDED; no bookmarks unless asked.
    events = stream(fakeapi, "/api/v1/nodes?watch=true&timeoutSeconds=1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "n1")]


def test_watch_label_selector_turns_leaving_into_deleted(fakeapi: FakeAPIServer) -> None:
    _, n1, _ = call(fakeapi, "POST", "/api/v1/nodes", node("n1", role="worker"))
    call(fakeapi, "PATCH", "/api/v1/nodes/n1", {"metadata": {"labels": {"role": "x"}}},
         "application/merge-patch+json")
    events = stream(fakeapi, "/api/v1/nodes?watch=1&labelSelector=role%3Dworker&timeoutSeconds=1"
                    f"&resourceVersion={n1['metadata']['resourceVersion']}")
    assert [e["type"] for e in events] == ["DELETED"]
    # The object as it was when it still matched, at the change's resourceVersion.
    gone = events[0]["object"]
    assert gone["metadata"]["labels"] == {"role": "worker"}
    assert int(gone["metadata"]["resourceVersion"]) > int(n1["metadata"]["resourceVersion"])


def test_watch_from_compacted_resource_version_is_410_expired(fakeapi: FakeAPIServer) -> None:
    _, n1, _ = call(fakeapi, "POST", "/api/v1/nodes", node("n1"))
    call(fakeapi, "POST", "/api/v1/nodes", node("n2"))
    fakeapi.state.compact()
    events = stream(fakeapi, f"/api/v1/nodes?watch=1&resourceVersion="
                    f"{n1['metadata']['resourceVersion']}&timeoutSeconds=5")
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
    assert status["message"].startswith("too old resource version: ")


@pytest.mark.parametrize("limit", [1, 3])
def test_history_limit(limit: int) -> None:
    server = FakeAPIServer(history_limit=limit).start()
    try:
        _, first, _ = call(server, "POST", "/api/v1/nodes", node("a"))
        for name in ("b", "c", "d"):
            call(server, "POST", "/api/v1/nodes", node(name))
        events = stream(server, f"/api/v1/nodes?watch=1&timeoutSeconds=1&resourceVersion="
                        f"{first['metadata']['resourceVersion']}")
        if limit == 1:
            assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410
        else:
            assert [e["object"]["metadata"]["name"] for e in events] == ["b", "c", "d"]
    finally:
        server.stop()


def test_subresource_hook(fakeapi: FakeAPIServer) -> None:
    from tests.kube.fakeapi import APIError, json_response

    async def ping(state: Any, request: Any, rtype: Any, namespace: str, name: str) -> Any:
        pod = state.get(rtype, namespace, name)
        if request.method != "POST":
            raise APIError(405, "MethodNotAllowed", "no")
        return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                              "status": "Success", "message": pod["metadata"]["name"]}, 201)

    fakeapi.state.register_subresource("", "v1", "pods", "ping", ping)
    call(fakeapi, "POST", "/api/v1/namespaces/default/pods", {"metadata": {"name": "p"}})
    code, body, _ = call(fakeapi, "POST", "/api/v1/namespaces/default/pods/p/ping", {})
    assert (code, body["message"]) == (201, "p")
    code, body, _ = call(fakeapi, "POST", "/api/v1/namespaces/default/pods/q/ping", {})
    assert (code, body["reason"]) == (404, "NotFound")
    code, body, _ = call(fakeapi, "POST", "/api/v1/namespaces/default/pods/p/other", {})
    assert code == 404


def test_delete_answers_like_the_registry(fakeapi: FakeAPIServer) -> None:
    call(fakeapi, "POST", "/api/v1/nodes", node("n1"))
    code, body, _ = call(fakeapi, "DELETE", "/api/v1/nodes/n1")
    assert code == 200 and body["kind"] == "Status" and body["status"] == "Success"
    assert body["details"]["name"] == "n1" and body["details"]["kind"] == "nodes"
    call(fakeapi, "POST", "/api/v1/namespaces/default/pods", {"metadata": {"name": "p"}})
    code, body, _ = call(fakeapi, "DELETE", "/api/v1/namespaces/default/pods/p")
    assert code == 200 and body["metadata"]["name"] == "p"  # pods answer the object
    code, body, _ = call(fakeapi, "DELETE", "/api/v1/namespaces/default/pods/p")
    assert code == 404 and body["reason"] == "NotFound"


def test_list_in_pages(fakeapi: FakeAPIServer) -> None:
    for i in range(5):
        call(fakeapi, "POST", "/api/v1/nodes", node(f"n{i}"))
    _, first, _ = call(fakeapi, "GET", "/api/v1/nodes?limit=2")
    assert [i["metadata"]["name"] for i in first["items"]] == ["n0", "n1"]
    assert first["metadata"]["remainingItemCount"] == 3
    call(fakeapi, "POST", "/api/v1/nodes", node("n9"))  # after the snapshot: not in the pages
    names, token = [], first["metadata"]["continue"]
    while token:
        _, page, _ = call(fakeapi, "GET", f"/api/v1/nodes?limit=2&continue={token}")
        assert page["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
        names += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"].get("continue")
    assert names == ["n2", "n3", "n4"]
    code, status, _ = call(fakeapi, "GET", "/api/v1/nodes?limit=2&continue=bogus")
    assert (code, status["reason"]) == (410, "Expired")


def test_custom_resources_validated_against_the_shipped_crds(fakeapi: FakeAPIServer,
                                                             crds: list[str]) -> None:
    pool = {"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfigPool",
            "metadata": {"name": "worker"}, "spec": {"paused": False, "bogus": 1}}
    # kubectl's default: strict field validation.
    code, status, _ = call(fakeapi, "POST", POOLS + "?fieldValidation=Strict", pool)
    assert (code, status["reason"]) == (400, "BadRequest")
    assert status["message"] == 'strict decoding error: unknown field "spec.bogus"'
    # The server's default (Warn): pruned, with a Warning header.
    code, created, headers = call(fakeapi, "POST", POOLS, pool)
    assert code == 201 and created["spec"] == {"paused": False}
    assert headers["Warning"] == '299 - "unknown field \\"spec.bogus\\""'
    # A schema violation: 422 Invalid naming the field.
    bad = dict(pool, metadata={"name": "infra"}, spec={"paused": "yes"})
    code, status, _ = call(fakeapi, "POST", POOLS, bad)
    assert (code, status["reason"]) == (422, "Invalid")
    assert status["details"]["causes"][0]["field"] == "spec.paused"
    assert status["message"].startswith(
        'MachineConfigPool.machineconfiguration.openshift.io "infra" is invalid: spec.paused')


def test_event_namespace_must_match_the_object(fakeapi: FakeAPIServer) -> None:
    call(fakeapi, "POST", "/api/v1/namespaces", {"metadata": {"name": "other"}})
    event = {"metadata": {"name": "n1.1"}, "involvedObject": {"kind": "Node", "name": "n1"},
             "reason": "X", "message": "y", "type": "Normal"}
    code, _, _ = call(fakeapi, "POST", "/api/v1/namespaces/default/events", event)
    assert code == 201
    code, status, _ = call(fakeapi, "POST", "/api/v1/namespaces/other/events", event)
    assert (code, status["details"]["causes"][0]["field"]) == (422, "involvedObject.namespace")
