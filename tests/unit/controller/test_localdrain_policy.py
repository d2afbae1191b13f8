"""machineconfig.localdrain: the pool annotation's YAML, its validation (the field named), the
per-node override, and what the node controller publishes on each node."""
from __future__ import annotations

import json
from typing import Any

import pytest

from machineconfig import localdrain
from machineconfig.errors import InputError
from machineconfig.localdrain import Hook, parse
from machineconfig.store.base import NodeRecord
from mcc.node_controller import reconcile_pool

POLICY = """
stopUnits: [web.service, "app-*.service"]
hooks:
  - name: lb-deregister
    command: [/usr/local/bin/lb, deregister]
    timeoutSeconds: 30
  - command: [/usr/bin/sync]
    phase: afterDrain
  - name: lb-register
    command: [/usr/local/bin/lb, register]
    phase: afterReturn
nodes:
  edge-3:
    stopUnits: [db.service]
"""


def test_parse_defaults_phases_and_node_override() -> None:
    pool = parse(POLICY)
    default = pool.default
    assert default.stop_units == ("web.service", "app-*.service")
    assert default.hooks[0] == Hook("lb-deregister", ("/usr/local/bin/lb", "deregister"), 30,
                                    "beforeDrain")
    # an unnamed hook is named after its program; the default timeout is a minute
    assert default.hooks[1] == Hook("sync", ("/usr/bin/sync",), 60, "afterDrain")
    assert [h.name for h in default.hooks_in("afterReturn")] == ["lb-register"]
    # a node's entry replaces the pool's lists for that node
    assert pool.for_node("edge-3").stop_units == ("db.service",)
    assert pool.for_node("edge-3").hooks == ()
    assert pool.for_node("edge-1") == default


@pytest.mark.parametrize("text, where, says", [
    ("stopUnits: [../x.service]", "$.stopUnits[0]", "is not a unit name"),
    ("stopUnits: [web]", "$.stopUnits[0]", "has no unit suffix"),
    ("stopUnits: ['*.service']", "$.stopUnits[0]", "would match every service unit"),
    ("stopUnits: ['[a-z]*.service']", "$.stopUnits[0]", "would match every service unit"),
    ("stopUnits: web.service", "$.stopUnits", "must be a list"),
    ("hooks: [{command: [lb, x]}]", "$.hooks[0].command[0]", "must be an absolute path"),
    ("hooks: [{command: '/bin/sh -c x'}]", "$.hooks[0].command", "no shell unless you write"),
    ("hooks: [{command: []}]", "$.hooks[0].command", "list of 1 to 64 strings"),
    ("hooks: [{command: [/bin/x], timeoutSeconds: 0}]", "$.hooks[0].timeoutSeconds",
     "from 1 to 3600"),
    ("hooks: [{command: [/bin/x], timeoutSeconds: true}]", "$.hooks[0].timeoutSeconds",
     "from 1 to 3600"),
    ("hooks: [{command: [/bin/x], phase: later}]", "$.hooks[0].phase", "is not a phase"),
    ("hooks: [{command: [/bin/x], name: 'a b'}]", "$.hooks[0].name", "is not a hook name"),
    ("hooks: [{command: [/bin/x]}, {command: [/usr/bin/x]}]", "$.hooks", "used twice"),
    ("hooks: [{command: [/bin/x], shell: true}]", "$.hooks[0]", "unknown key(s) shell"),
    ("stopUnit: [a.service]", "$", "unknown key(s) stopUnit"),
    ("nodes: {n1: {hooks: [{command: [x]}]}}", "$.nodes.n1.hooks[0].command[0]", "absolute"),
    ("nodes: {n1: {nodes: {}}}", "$.nodes.n1", "unknown key(s) nodes"),
    ("- a", "$", "must be one YAML mapping"),
    ("a: [", "$", "not YAML"),
])
def test_invalid_policies_name_the_field(text: str, where: str, says: str) -> None:
    with pytest.raises(InputError) as info:
        parse(text)
    assert info.value.path == where and says in info.value.message, str(info.value)
    assert str(info.value).startswith(localdrain.POOL_ANNOTATION)


def test_unit_patterns_allowed() -> None:
    for name in ("web.service", "app-*.service", "container@web.service", "podman-kube@a\\x2d"
                 "b.service", "backup.timer", "app-?.socket", "workload.target"):
        assert localdrain.unit_pattern_problem(name) is None, name


def pool(annotation: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "worker"}
    if annotation is not None:
        meta["annotations"] = {localdrain.POOL_ANNOTATION: annotation}
    return {"metadata": meta, "spec": {"configuration": {"name": "rendered-worker-a"},
                                       "nodeSelector": {"matchLabels": {"r": "w"}}}}


def nodes(*names: str, policy: str | None = None) -> list[NodeRecord]:
    annotations = {"machineconfiguration.openshift.io/currentConfig": "rendered-worker-a",
                   "machineconfiguration.openshift.io/desiredConfig": "rendered-worker-a",
                   "machineconfiguration.openshift.io/state": "Done"}
    if policy is not None:
        annotations[localdrain.NODE_ANNOTATION] = policy
    return [NodeRecord(n, {"r": "w"}, dict(annotations)) for n in names]


def test_controller_publishes_each_nodes_policy_and_removes_it() -> None:
    result = reconcile_pool(pool(POLICY), nodes("edge-1", "edge-3"))
    published = {n: json.loads(p[localdrain.NODE_ANNOTATION]) for n, p in result.patches.items()}
    assert published["edge-1"]["stopUnits"] == ["web.service", "app-*.service"]
    assert published["edge-3"] == {"stopUnits": ["db.service"], "hooks": []}
    # what the daemon reads back is the same policy
    assert localdrain.from_node_annotation(result.patches["edge-1"][localdrain.NODE_ANNOTATION]
                                           ) == parse(POLICY).default
    # unchanged: no patch; the pool's annotation removed: the node's removed too
    same = nodes("edge-1", policy=result.patches["edge-1"][localdrain.NODE_ANNOTATION])
    assert "edge-1" not in reconcile_pool(pool(POLICY), same).patches
    gone = reconcile_pool(pool(None), same).patches["edge-1"]
    assert gone == {localdrain.NODE_ANNOTATION: None}
    assert reconcile_pool(pool(None), nodes("edge-1")).patches == {}


def test_controller_publishes_an_invalid_policy_so_the_daemon_refuses_to_drain() -> None:
    result = reconcile_pool(pool("stopUnits: [web]"), nodes("edge-1"))
    text = result.patches["edge-1"][localdrain.NODE_ANNOTATION]
    policy = localdrain.from_node_annotation(text)
    assert policy.invalid.endswith("$.stopUnits[0]: 'web' has no unit suffix (.service, "
                                   ".socket, .timer, .path, .target, .scope, ...)")
    assert not policy.empty
    # a damaged annotation is no policy to trust either
    assert localdrain.from_node_annotation("{").invalid.startswith(localdrain.NODE_ANNOTATION)
    assert localdrain.from_node_annotation('{"stopUnits": ["x"]}').invalid
    assert localdrain.from_node_annotation(None).empty
