"""The node API as an attacker holding a worker's pointer config sees it, over real HTTPS against a
real `mcs start` subprocess (throwaway CA, loopback): a pool token creates nodes of its pool only,
reads follow what the controller decided, a live node's name cannot be taken over, node tokens
expire and are renewed, the plain port serves no node API, bounds and bodies give 4xx never 500,
and every file of the state directory is private.
"""
from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from machineconfig import constants
from machineconfig.rendered_config import RenderedConfig
from machineconfig.store import NotFoundError, Store, open_store
from machineconfig.store.remote import RemoteNodeAPI
from tests.unit.server.test_mcs_layout import MASTER_CONFIG, WORKER_CONFIG
from tests.unit.server.test_mcs_server import write_tls
from tests.unit.server.test_mcs_store_mode import WORKER_LABEL, credentials_of, make_store, pool_token

ROOT = Path(__file__).resolve().parents[3]
API = constants.NODE_API_PREFIX
MASTER_LABEL = "node-role.kubernetes.io/master"
CURRENT = constants.CURRENT_CONFIG_ANNOTATION
DESIRED = constants.DESIRED_CONFIG_ANNOTATION
STATE_KEY = constants.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION

# worker and master by role label; infra by an expression on another label (not a role label).
POOLS = """\
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfigPool
metadata: {name: worker}
spec:
  machineConfigSelector: {matchLabels: {machineconfiguration.openshift.io/role: worker}}
  nodeSelector: {matchLabels: {node-role.kubernetes.io/worker: ""}}
---
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfigPool
metadata: {name: master}
spec:
  nodeSelector: {matchLabels: {node-role.kubernetes.io/master: ""}}
---
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfigPool
metadata: {name: infra}
spec:
  nodeSelector:
    matchExpressions: [{key: example.com/tier, operator: In, values: [edge]}]
"""


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    https: str
    http: str
    ca_file: Path
    sdir: Path
    store: Store
    log: Path

    def token(self, pool: str) -> str:
        return pool_token(self.sdir, pool)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def mcs_start(root: Path, inputs: Path, sdir: Path, *extra: str) -> tuple[subprocess.Popen[bytes], dict[str, str], Path]:
    """`mcs start` on 127.0.0.1 (both listeners on free ports, TLS from `write_tls`), ready."""
    _, cert, key, ca_file = write_tls(root, "mcs-security")
    log = root / "server.log"
    cmd = [sys.executable, "-m", "mcs.cli", "start", "--store", f"local:{inputs}", "--state", str(sdir),
           "--cert", str(cert), "--key", str(key), "--ca", str(ca_file), "--secure-port", "0",
           "--insecure-port", "0", "--bind-address", "127.0.0.1", *extra]
    notify_path = root / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(30)
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "NOTIFY_SOCKET": str(notify_path)})
    try:
        ready = notify.recv(4096).decode()
    except OSError:
        proc.kill()
        proc.wait()
        raise AssertionError("server not ready:\n" + log.read_text()) from None
    finally:
        notify.close()
    assert ready.startswith("READY=1\n"), ready
    urls = dict((scheme, url) for url, scheme in
                re.findall(r"listening on ((https?)://[0-9.]+:[0-9]+)", log.read_text()))
    assert len(urls) == 2, log.read_text()
    return proc, urls, ca_file


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@contextlib.contextmanager
def running(root: Path, *extra: str) -> Iterator[Server]:
    store, inputs, sdir = make_store(root)
    (inputs / "pools.yaml").write_text(POOLS)
    proc, urls, ca_file = mcs_start(root, inputs, sdir, *extra)
    server = Server(proc, urls["https"], urls["http"], ca_file, sdir, store, root / "server.log")
    try:
        yield server
    finally:
        stop(proc)
    secrets = [server.token(p) for p in ("worker", "master", "infra")]
    assert not any(s in server.log.read_text() for s in secrets), "a token reached the server log"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("mcs-security")) as srv:
        yield srv


_PEERS = itertools.count()


def next_peer() -> str:
    """Another loopback source address: registrations are rate-limited per peer address."""
    n = next(_PEERS) % 60000
    return f"127.1.{n // 250}.{n % 250 + 1}"


def call(base: str, method: str, path: str, body: Any = None, token: str | None = None,
         ca_file: Path | None = None, raw: bytes | None = None,
         headers: dict[str, str] | None = None, source: str | None = None) -> Answer:
    """One request with the standard library (no retries, no proxies), from `source` if given."""
    parts = urlsplit(base)
    assert parts.hostname is not None
    conn: http.client.HTTPConnection
    bind = (source, 0) if source is not None else None
    if parts.scheme == "https":
        ctx = ssl.create_default_context(cafile=str(ca_file))
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=10, context=ctx,
                                           source_address=bind)
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10, source_address=bind)
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    if data is not None:
        sent.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=data, headers=sent)
        resp = conn.getresponse()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()},
                      resp.read().decode("utf-8", "replace"))
    finally:
        conn.close()


def api(server: Server, method: str, path: str, body: Any = None, token: str | None = None,
        **kw: Any) -> Answer:
    return call(server.https, method, f"{API}{path}", body, token, server.ca_file, **kw)


def one_line(answer: Answer, status: int) -> str:
    assert answer.status == status, (answer.status, answer.text)
    assert answer.headers["content-type"].startswith("text/plain") and answer.text.count("\n") == 1, answer
    return answer.text


def register(server: Server, name: str, pool: str = "worker", labels: dict[str, str] | None = None,
             proof: str | None = None, source: str | None = None) -> Answer:
    body: dict[str, Any] = {"name": name, "labels": labels or {}}
    if proof is not None:
        body["token"] = proof
    return api(server, "POST", "/nodes/register", body, server.token(pool), source=source or next_peer())


def joined(server: Server, name: str, pool: str = "worker", **kw: Any) -> str:
    answer = register(server, name, pool, **kw)
    assert answer.status == 200, answer.text
    token: str = answer.json()["token"]
    return token


def absent(store: Store, name: str) -> bool:
    try:
        store.get_node(name)
    except NotFoundError:
        return True
    return False


# -- 1. a pool's bootstrap token creates nodes of that pool only --------------------------------------

@pytest.mark.parametrize("labels, pool_named", [
    ({MASTER_LABEL: ""}, "master"),
    ({"example.com/tier": "edge"}, "infra"),  # infra selects by an expression, not a role label
])
def test_worker_token_cannot_create_a_node_of_another_pool(server: Server, labels: dict[str, str],
                                                           pool_named: str) -> None:
    name = f"fake-{pool_named}-0"
    text = one_line(register(server, name, labels=labels), 403)
    assert pool_named in text and "worker" in text
    # Refused before anything is written: no node record counts against any maxUnavailable.
    assert absent(server.store, name)


def test_pool_token_of_a_pool_that_selects_nobody_creates_nothing(server: Server) -> None:
    # infra selects by example.com/tier only: its token must bring a matching label itself.
    one_line(register(server, "infra-0", pool="infra"), 403)
    assert absent(server.store, "infra-0")
    joined(server, "infra-1", pool="infra", labels={"example.com/tier": "edge"})
    assert server.store.get_node("infra-1").labels == {"example.com/tier": "edge"}


def test_existing_node_cannot_change_its_pool(server: Server) -> None:
    token = joined(server, "worker-move")
    # Its own token, its own pool's bootstrap token, but labels that move it to infra.
    text = one_line(register(server, "worker-move", labels={"example.com/tier": "edge"}, proof=token), 403)
    assert "infra" in text
    # Another pool's bootstrap token cannot take it either.
    one_line(register(server, "worker-move", pool="master", proof=token), 403)
    assert server.store.get_node("worker-move").labels == {WORKER_LABEL: ""}
    assert api(server, "GET", "/nodes/worker-move", token=token).status == 200


# -- 2. reads follow the controller's decisions; writes only the daemon's keys --------------------------

def test_current_config_does_not_unlock_another_pools_config(server: Server) -> None:
    token = joined(server, "worker-thief")
    path = "/nodes/worker-thief/annotations"
    text = one_line(api(server, "PATCH", path, {"changes": {CURRENT: MASTER_CONFIG}}, token), 403)
    assert CURRENT in text
    # Nor through the one bootstrap write of desiredConfig (= currentConfig).
    one_line(api(server, "PATCH", path, {"changes": {CURRENT: MASTER_CONFIG, DESIRED: MASTER_CONFIG}}, token), 403)
    assert server.store.get_node("worker-thief").annotations == {}
    one_line(api(server, "GET", f"/rendered/{MASTER_CONFIG}", token=token), 403)
    # Even a currentConfig written behind the API's back unlocks nothing: only desiredConfig does.
    server.store.patch_node_annotations("worker-thief", {CURRENT: MASTER_CONFIG})
    one_line(api(server, "GET", f"/rendered/{MASTER_CONFIG}", token=token), 403)
    assert api(server, "GET", f"/rendered/{WORKER_CONFIG}", token=token).status == 200
    server.store.patch_node_annotations("worker-thief", {DESIRED: MASTER_CONFIG})  # the controller
    assert api(server, "GET", f"/rendered/{MASTER_CONFIG}", token=token).status == 200


def own_config() -> dict[str, Any]:
    """A node's own rendered config (the worker pool's configs and an overlay), named as the
    controller names it: rendered-worker-<hash>, and marked with its overlays."""
    from machineconfig.api import ControllerConfig, MachineConfig, MachineConfigPool
    from mcc.render import generate_rendered_machine_config
    pool = MachineConfigPool.model_validate({
        "kind": "MachineConfigPool", "metadata": {"name": "worker"},
        "spec": {"machineConfigSelector": {"matchLabels": {constants.ROLE_LABEL: "worker"}}}})
    def mc(name: str, labels: dict[str, str], text: str) -> MachineConfig:
        return MachineConfig.model_validate({
            "kind": "MachineConfig", "metadata": {"name": name, "labels": labels},
            "spec": {"config": {"ignition": {"version": "3.2.0"}, "storage": {"files": [
                {"path": "/etc/secret", "contents": {"source": "data:," + text}}]}}}})
    cc = ControllerConfig.model_validate({"kind": "ControllerConfig",
                                          "metadata": {"name": "machine-config-controller"},
                                          "spec": {}})
    own = generate_rendered_machine_config(
        pool, [mc("00-worker", {constants.ROLE_LABEL: "worker"}, "pool")], cc,
        [mc("50-worker-own", {constants.OVERLAY_NODE_LABEL: "worker-own"}, "key-of-worker-own")])
    return own.config.to_dict()


def test_another_nodes_own_config_is_not_readable(server: Server) -> None:
    """Per-node overlays: a node's own config is named like a pool config, but only that node
    (node-config, or desiredConfig, both the controller's) may read it."""
    obj = own_config()
    name = obj["metadata"]["name"]
    assert name.startswith("rendered-worker-")
    server.store.put_rendered(RenderedConfig(obj))
    own, other = joined(server, "worker-own"), joined(server, "worker-other")
    server.store.patch_node_annotations("worker-own", {constants.NODE_CONFIG_ANNOTATION: name})
    assert api(server, "GET", f"/rendered/{name}", token=own).status == 200
    one_line(api(server, "GET", f"/rendered/{name}", token=other), 403)
    # the node cannot name it its own: node-config is the controller's key
    text = one_line(api(server, "PATCH", "/nodes/worker-other/annotations",
                        {"changes": {constants.NODE_CONFIG_ANNOTATION: name}}, other), 403)
    assert constants.NODE_CONFIG_ANNOTATION in text
    # nor does claiming it as currentConfig (a pool config's name) unlock it
    answer = api(server, "PATCH", "/nodes/worker-other/annotations", {"changes": {CURRENT: name}},
                 other)
    assert answer.status == 200
    one_line(api(server, "GET", f"/rendered/{name}", token=other), 403)
    assert api(server, "GET", f"/rendered/{WORKER_CONFIG}", token=other).status == 200


def test_pool_for_reads_comes_from_the_servers_record(server: Server) -> None:
    token = joined(server, "worker-relabel")
    # The admin moves the node to master (labels only the server writes): reads follow.
    server.store.set_node_labels("worker-relabel", {WORKER_LABEL: None, MASTER_LABEL: ""})
    assert api(server, "GET", f"/rendered/{MASTER_CONFIG}", token=token).status == 200
    one_line(api(server, "GET", f"/rendered/{WORKER_CONFIG}", token=token), 403)


def test_annotation_allow_list(server: Server) -> None:
    assert constants.DAEMON_OWNED_ANNOTATIONS == {
        CURRENT, STATE_KEY, constants.MACHINE_CONFIG_DAEMON_REASON_ANNOTATION,
        constants.DESIRED_DRAIN_ANNOTATION, constants.POST_CONFIG_ACTION_ANNOTATION,
        constants.FIRST_PIVOT_CONFIG_ANNOTATION,
        constants.LAST_SYNCED_CONTROLLER_CONFIG_ANNOTATION,  # the certificate writer's records
        constants.LAST_OBSERVED_SERVER_CA_ANNOTATION}
    token = joined(server, "worker-keys")
    path = "/nodes/worker-keys/annotations"
    for key in (constants.LAST_APPLIED_DRAIN_ANNOTATION, constants.CORDONED_BY_MCC_ANNOTATION,
                constants.DESIRED_IMAGE_ANNOTATION, constants.CONTROL_PLANE_TOPOLOGY_ANNOTATION, "x/y"):
        text = one_line(api(server, "PATCH", path, {"changes": {STATE_KEY: "Done", key: "v"}}, token), 403)
        assert key in text
    assert server.store.get_node("worker-keys").annotations == {}
    answer = api(server, "PATCH", path, {"changes": {STATE_KEY: "Done", CURRENT: WORKER_CONFIG,
                                                       DESIRED: WORKER_CONFIG}}, token)
    assert answer.status == 200 and answer.json()["annotations"][DESIRED] == WORKER_CONFIG


# -- 3. a live node's name cannot be taken over; tokens are revoked, expire, rotate ----------------------

def test_live_node_is_not_locked_out_by_a_second_registration(server: Server) -> None:
    token = joined(server, "worker-live")
    text = one_line(register(server, "worker-live"), 409)
    assert "mcs node revoke worker-live" in text
    one_line(register(server, "worker-live", proof="not-its-token"), 409)
    assert api(server, "GET", "/nodes/worker-live", token=token).status == 200
    # With its own token it re-registers (a restarted daemon) and gets a new one.
    fresh = joined(server, "worker-live", proof=token)
    assert fresh != token and api(server, "GET", "/nodes/worker-live", token=fresh).status == 200
    one_line(api(server, "GET", "/nodes/worker-live", token=token), 401)


def test_admin_revokes_a_node(server: Server) -> None:
    token = joined(server, "worker-lost")
    done = subprocess.run([sys.executable, "-m", "mcs.cli", "node", "revoke", "worker-lost",
                           "--state", str(server.sdir)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert token not in done.stdout + done.stderr
    deadline = time.monotonic() + 10  # the server re-reads the token file within a second
    while api(server, "GET", "/nodes/worker-lost", token=token).status != 401:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    joined(server, "worker-lost")  # a reinstalled machine joins again with the bootstrap token
    again = subprocess.run([sys.executable, "-m", "mcs.cli", "node", "revoke", "nobody",
                            "--state", str(server.sdir)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and again.stderr.count("\n") == 1


def test_tokens_expire_and_the_daemon_renews_them(tmp_path: Path) -> None:
    with running(tmp_path, "--node-token-ttl", "4") as srv:
        answer = register(srv, "worker-0")
        assert answer.status == 200 and answer.json()["expiresIn"] == 4
        first = answer.json()["token"]
        # Renewing: a new token; the old one keeps working for the grace period (here: its expiry).
        renewed = api(srv, "POST", "/token", {}, first)
        assert renewed.status == 200 and renewed.json()["node"]["name"] == "worker-0"
        second = renewed.json()["token"]
        assert second != first
        assert api(srv, "GET", "/nodes/worker-0", token=first).status == 200
        assert api(srv, "GET", "/nodes/worker-0", token=second).status == 200
        one_line(api(srv, "POST", "/token", {}, srv.token("worker")), 401)  # not a node token
        # The daemon's client renews at half-life and hands every new token to its keeper.
        kept: list[str] = []
        client = RemoteNodeAPI(srv.https, second, str(srv.ca_file), timeout=10, expires_in=4,
                               on_token=kept.append)
        started = time.monotonic()
        while time.monotonic() - started < 6:  # past the lifetime of `second`
            assert client.get_node("worker-0").name == "worker-0"
            time.sleep(0.5)
        assert kept and client.token == kept[-1] and len(set(kept)) == len(kept)
        # Unrenewed tokens are dead after their lifetime.
        one_line(api(srv, "GET", "/nodes/worker-0", token=first), 401)
        one_line(api(srv, "GET", "/nodes/worker-0", token=second), 401)
        # A node that was off past its token's lifetime re-registers with that token as proof.
        stale = joined(srv, "worker-1")
        time.sleep(4.5)
        one_line(api(srv, "GET", "/nodes/worker-1", token=stale), 401)
        one_line(register(srv, "worker-1"), 409)
        joined(srv, "worker-1", proof=stale)
        stored = json.loads((srv.sdir / "node-tokens.json").read_text())
        assert all(t not in json.dumps(stored) for t in (first, second, stale, *kept))


# -- 4. the plain port serves /config, /healthz and /metrics only ------------------------------------------

def test_plain_port_serves_no_node_api(server: Server) -> None:
    token = server.token("worker")
    for method, path, body in (("POST", "/nodes/register", {"name": "plain-0"}), ("GET", "/watch", None),
                               ("POST", "/token", {}), ("GET", "/nodes/plain-0", None)):
        text = one_line(call(server.http, method, API + path, body, token), 404)
        assert "TLS" in text
    assert absent(server.store, "plain-0")
    assert call(server.http, "GET", "/healthz").status == 200
    assert call(server.http, "GET", "/metrics").status == 200
    served = call(server.http, "GET", "/config/worker", token=token, headers={"Accept-Encoding": "identity"})
    assert served.status == 200
    # The config a machine fetched over the plain port sends its daemon to the TLS listener.
    creds, _ = credentials_of(served.json())
    assert creds["server"] == server.https


# -- 5. bounds ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("labels", [
    {"a/b/c": ""}, {"-bad": ""}, {"x" * 64: ""}, {"Bad_Prefix.com/x": ""}, {"/x": ""}, {"": ""},
    {f"{'p' * 254}/x": ""}, {"ok": "v" * 64}, {"ok": "-v"}, {"ok": "a b"}, {"ok": 1},
    {f"k{i}": "" for i in range(65)},
])
def test_labels_must_be_kubernetes_labels(server: Server, labels: dict[str, Any]) -> None:
    one_line(register(server, "worker-labels", labels=labels), 400)
    assert absent(server.store, "worker-labels")


def test_label_syntax_accepted(server: Server) -> None:
    labels = {"example.com/zone": "a-1", "topology.kubernetes.io/region": "eu_1.x", "plain": "",
              f"{'p' * 63}.example.com/{'n' * 63}": "v" * 63}
    joined(server, "worker-goodlabels", labels=labels)


def test_registration_rate_is_limited(tmp_path: Path) -> None:
    with running(tmp_path) as srv:
        peer = "127.0.0.7"
        statuses = [register(srv, f"worker-{i}", source=peer).status for i in range(25)]
        assert statuses[:20] == [200] * 20 and 429 in statuses[20:], statuses
        answer = register(srv, "worker-x", source=peer)
        text = one_line(answer, 429)
        assert int(answer.headers["retry-after"]) >= 1 and "retry" in text
        assert absent(srv.store, "worker-x")
        # Bad bootstrap tokens count as well (no guessing at full speed).
        assert api(srv, "POST", "/nodes/register", {"name": "w"}, "guess", source=peer).status == 429
        # Other peers are not held up by this one.
        assert register(srv, "worker-y", source="127.0.0.8").status == 200


def test_events_per_node_are_bounded(server: Server) -> None:
    token = joined(server, "worker-chatty")
    event = {"kind": "Node", "name": "worker-chatty", "reason": "Spam", "message": "m"}
    statuses = [api(server, "POST", "/events", event, token).status for _ in range(70)]
    assert statuses[:60] == [200] * 60 and statuses[-1] == 429, statuses
    assert len(server.store.list_events(kind="Node", name="worker-chatty")) == statuses.count(200)


def test_store_keeps_the_newest_events_per_object(tmp_path: Path) -> None:
    from machineconfig.store.local import MAX_EVENTS_PER_OBJECT

    store, _, _ = make_store(tmp_path)
    for i in range(MAX_EVENTS_PER_OBJECT + 20):
        store.record_event("Node", "n1", "R", str(i))
    store.record_event("Node", "n2", "R", "other")
    kept = store.list_events(kind="Node", name="n1")
    assert len(kept) == MAX_EVENTS_PER_OBJECT and kept[0].message == "20"
    assert len(store.list_events(kind="Node", name="n2")) == 1


# -- 6. bodies --------------------------------------------------------------------------------------------

def test_hostile_bodies_are_4xx_never_500(server: Server) -> None:
    pool = server.token("worker")
    node = joined(server, "worker-bodies")
    deep = b"[" * 1000 + b"]" * 1000
    deep_object = b'{"name": ' + b'{"a": ' * 1000 + b"1" + b"}" * 1000 + b"}"
    cases: list[tuple[str, str, str, bytes, dict[str, str], int]] = [
        ("POST", "/nodes/register", pool, b"{not json", {}, 400),
        ("POST", "/nodes/register", pool, deep, {}, 400),
        ("POST", "/nodes/register", pool, deep_object, {}, 400),
        ("POST", "/nodes/register", pool, b"\xff\xfe", {}, 400),
        ("POST", "/nodes/register", pool, b'{"name": "w"}', {"Content-Type": "application/json; charset=nope"}, 200),
        ("POST", "/nodes/register", pool, b'{"name": 5}', {}, 400),
        ("POST", "/nodes/register", pool, b'{"name": "w2", "labels": []}', {}, 400),
        ("POST", "/nodes/register", pool, b'{"name": "w2", "token": 5}', {}, 400),
        ("POST", "/nodes/register", pool, b"[]", {}, 400),
        ("POST", "/nodes/register", pool, b"1" + b"0" * 5000, {}, 400),
        ("POST", "/nodes/register", pool, b'{"name": "' + b"a" * 70_000 + b'"}', {}, 413),
        ("PATCH", "/nodes/worker-bodies/annotations", node, b'{"changes": []}', {}, 400),
        ("PATCH", "/nodes/worker-bodies/annotations", node, b'{"changes": {"' + constants.GROUP.encode()
         + b'/state": {"x": 1}}}', {}, 400),
        ("PATCH", "/nodes/worker-bodies/annotations", node, deep, {}, 400),
        ("POST", "/events", node, b'{"kind": "Node", "name": "worker-bodies", "reason": ["x"]}', {}, 400),
        ("POST", "/events", node, b'{"kind": "Node", "name": "worker-bodies", "reason": "R", "message": 7}', {}, 400),
        ("POST", "/events", node, b"null", {}, 400),
    ]
    for method, path, token, raw, headers, status in cases:
        answer = api(server, method, path, token=token, raw=raw, headers=headers, source=next_peer())
        assert answer.status == status, (path, raw[:60], answer.status, answer.text)
        if status != 200:
            one_line(answer, status)
    assert "Traceback" not in server.log.read_text()


# -- 7. secrets at rest -------------------------------------------------------------------------------------

def test_every_state_file_is_private(tmp_path: Path) -> None:
    """`mcs start` + a node joining + `mcc start --once` over the example cluster: every file the
    state directory holds is 0600, every directory 0700."""
    inputs, sdir = tmp_path / "inputs", tmp_path / "state"
    shutil.copytree(ROOT / "examples/cluster", inputs)
    proc, urls, ca_file = mcs_start(tmp_path, inputs, sdir)
    try:
        answer = call(urls["https"], "POST", f"{API}/nodes/register", {"name": "worker-0"},
                      pool_token(sdir, "worker"), ca_file)
        assert answer.status == 200, answer.text
        done = subprocess.run([sys.executable, "-m", "mcc.cli", "start", "--store", f"local:{inputs}",
                               "--state", str(sdir), "--once"], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        stop(proc)
    store = open_store(f"local:{inputs}", str(sdir))  # reopening must not loosen anything either
    assert store.list_rendered()
    seen = {}
    for path in [sdir, *sdir.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        seen[str(path.relative_to(sdir))] = oct(mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    for name in ("state.db", "tokens", "node-tokens.json", "rendered"):
        assert name in seen, sorted(seen)
    assert any(n.startswith("rendered/") for n in seen)


# -- the token store (a clock of our own) ---------------------------------------------------------------

def test_node_token_lifetimes(tmp_path: Path) -> None:
    from mcs.tokens import NodeTokens, TokenFileError

    now = [1000.0]
    tokens = NodeTokens(tmp_path, check_interval=0, ttl=100, grace=10, clock=lambda: now[0])
    first = tokens.issue("n1").token
    assert tokens.node_for(f"Bearer {first}") == "n1"
    rotated = tokens.rotate(f"Bearer {first}")
    assert rotated is not None and rotated[0] == "n1"
    second = rotated[1].token
    now[0] += 9  # within the grace period both work
    assert tokens.node_for(f"Bearer {first}") == tokens.node_for(f"Bearer {second}") == "n1"
    now[0] += 2  # past it only the new one
    assert tokens.node_for(f"Bearer {first}") is None and tokens.node_for(f"Bearer {second}") == "n1"
    assert tokens.rotate(f"Bearer {first}") is None
    now[0] += 100  # past its lifetime: no API call, but still proof for registering again
    assert tokens.node_for(f"Bearer {second}") is None and tokens.rotate(f"Bearer {second}") is None
    assert tokens.owns("n1", second) and tokens.owns("n1", first) and not tokens.owns("n1", "x")
    assert not tokens.owns("n2", second)
    assert tokens.revoke("n1") and not tokens.has_token("n1") and not tokens.revoke("n1")
    assert stat.S_IMODE((tmp_path / "node-tokens.json").stat().st_mode) == 0o600
    # The first file format (name -> digest) still loads, with a full lifetime from now.
    from mcs.tokens import digest

    (tmp_path / "node-tokens.json").write_text(json.dumps({"old": digest("legacy")}))
    assert tokens.node_for("Bearer legacy") == "old"
    # An unreadable file is never rewritten from memory (that would drop every node's token).
    (tmp_path / "node-tokens.json").write_text("{broken")
    with pytest.raises(TokenFileError):
        tokens.issue("n3")
    assert (tmp_path / "node-tokens.json").read_text() == "{broken"


def test_sigterm_answers_waiting_watches_and_the_server_exits(tmp_path: Path) -> None:
    """A stopping server answers every long poll at once (the daemon polls again and finds it
    gone) instead of holding its exit until aiohttp gives up on the requests (60 s): under
    systemd `systemctl stop mcs` would hang, and a node's poll would end in a reset."""
    import concurrent.futures

    with running(tmp_path) as srv:
        token = joined(srv, "watcher-0")
        since = json.loads(api(srv, "GET", "/watch?since=0&timeout=0", token=token).text)["revision"]

        sent = threading.Event()

        def long_poll() -> Answer:
            parts = urlsplit(srv.https)
            ctx = ssl.create_default_context(cafile=str(srv.ca_file))
            conn = http.client.HTTPSConnection(str(parts.hostname), parts.port, timeout=120,
                                               context=ctx)
            try:
                conn.request("GET", f"{API}/watch?since={since}&timeout=250",
                             headers={"Authorization": f"Bearer {token}"})
                sent.set()
                resp = conn.getresponse()
                return Answer(resp.status, dict(resp.getheaders()), resp.read().decode())
            finally:
                conn.close()

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(long_poll)
            assert sent.wait(30), waiting.result()
            time.sleep(2)  # time for the server to read it: the request is then in its handler
            assert not waiting.done(), waiting.result()
            srv.proc.send_signal(signal.SIGTERM)
            try:
                srv.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pytest.fail("mcs did not exit within 20 s of SIGTERM while a watch waited")
            answer = waiting.result(timeout=5)
        assert answer.status == 200, answer
        assert json.loads(answer.text) == {"revision": since}
        assert srv.proc.returncode == 0
