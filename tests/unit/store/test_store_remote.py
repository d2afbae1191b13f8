"""`RemoteNodeAPI` against a real `mcs start` subprocess on 127.0.0.1 over TLS (throwaway CA) and
the real local store shared with this process: the join flow from the served node-credentials.json,
every NodeAPI call, errors as the store's exception types, timeouts, and tokens kept out of logs.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from machineconfig import constants
from machineconfig.errors import is_temporary
from machineconfig.store import (
    ConflictError, ForbiddenError, NodeAPI, NotFoundError, Store, StoreError, UnavailableError,
)
from machineconfig.store.base import rendered_config
from machineconfig.store.remote import RemoteNodeAPI, _error_for
from tests.unit.server.test_mcs_layout import WORKER_CONFIG
from tests.unit.server.test_mcs_server import open_url, write_tls
from tests.unit.server.test_mcs_store_mode import WORKER_LABEL, credentials_of, make_store, pool_token

ROOT = Path(__file__).resolve().parents[3]
STATE_KEY = constants.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    https: str
    http: str
    log: Path
    ca_file: Path
    sdir: Path
    store: Store


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    root = tmp_path_factory.mktemp("mcs-start")
    store, inputs, sdir = make_store(root)
    _, cert, key, ca_file = write_tls(root, "mcs-start")
    log = root / "server.log"
    # A short response deadline: long polls must be exempt from it.
    cmd = [sys.executable, "-m", "mcs.cli", "--log-level", "DEBUG", "start", "--store", f"local:{inputs}",
           "--state", str(sdir), "--cert", str(cert), "--key", str(key), "--ca", str(ca_file),
           "--secure-port", "0", "--insecure-port", "0", "--bind-address", "127.0.0.1",
           "--response-timeout", "2"]
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(root / "notify.sock"))
    notify.settimeout(30)
    env = {**os.environ, "NOTIFY_SOCKET": str(root / "notify.sock")}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    try:
        ready = notify.recv(4096).decode()
    finally:
        notify.close()
    assert ready.startswith("READY=1\n"), ready
    urls: dict[str, str] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(urls) < 2:
        if proc.poll() is not None:
            raise AssertionError("server exited:\n" + log.read_text())
        for url, scheme in re.findall(r"listening on ((https?)://[0-9.]+:[0-9]+)", log.read_text()):
            urls[scheme] = url
        time.sleep(0.05)
    assert len(urls) == 2, log.read_text()
    running = Running(proc, urls["https"], urls["http"], log, ca_file, sdir, store)
    secrets = [pool_token(sdir, p) for p in ("worker", "master", "infra")]
    yield running
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    text = log.read_text()
    secrets += re.findall(r"node-token:(\S+)", (sdir / "seen-node-tokens").read_text()) \
        if (sdir / "seen-node-tokens").exists() else []
    assert not any(s in text for s in secrets), "a token reached the server log"
    assert "PRIVATE KEY" not in text


def remember(server: Running, token: str) -> None:
    """Node tokens the fixture later checks the server log for."""
    with open(server.sdir / "seen-node-tokens", "a") as f:
        f.write(f"node-token:{token}\n")


def join(server: Running, name: str, pool: str = "worker") -> RemoteNodeAPI:
    api, record = RemoteNodeAPI.register(server.https, pool_token(server.sdir, pool), name, {"zone": "z1"},
                                         ca_file=str(server.ca_file), timeout=10)
    assert record.name == name
    remember(server, api.token)
    return api


# -- tests -------------------------------------------------------------------------------------------

def test_join_from_served_credentials(server: Running) -> None:
    """As a new machine does: fetch /config/worker with the pool token, register from the file."""
    token = pool_token(server.sdir, "worker")
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    req = urllib.request.Request(server.https + "/config/worker",
                                 headers={"Authorization": f"Bearer {token}", "Accept-Encoding": "identity"})
    with open_url(req, ctx) as resp:
        served = json.loads(resp.read())
    creds, mode = credentials_of(served)
    assert mode == 0o600
    assert creds["server"] == server.https and creds["token"] == token
    assert creds["ca"] == server.ca_file.read_text()
    ca = server.sdir.parent / "node-ca.crt"
    ca.write_text(creds["ca"])
    api, record = RemoteNodeAPI.register(creds["server"], creds["token"], "worker-0", {}, ca_file=str(ca))
    remember(server, api.token)
    assert record.labels == {WORKER_LABEL: ""}
    api_typed: NodeAPI = api  # satisfies the port
    assert api_typed.get_node("worker-0").name == "worker-0"


def test_every_call(server: Running) -> None:
    api = join(server, "worker-1")
    node = api.patch_node_annotations("worker-1", {STATE_KEY: "Working",
                                                   constants.CURRENT_CONFIG_ANNOTATION: WORKER_CONFIG})
    assert node.annotations[STATE_KEY] == "Working"
    assert server.store.get_node("worker-1").annotations[STATE_KEY] == "Working"
    node = api.patch_node_annotations("worker-1", {STATE_KEY: None})
    assert STATE_KEY not in api.get_node("worker-1").annotations and node.labels["zone"] == "z1"
    assert api.get_rendered(WORKER_CONFIG).name == WORKER_CONFIG
    api.record_event("Node", "worker-1", "Drain", "drain requested", "Normal")
    assert [e.reason for e in server.store.list_events(kind="Node", name="worker-1")] == ["Drain"]


def test_errors_map_to_store_exceptions(server: Running) -> None:
    api = join(server, "worker-2")
    join(server, "worker-3")
    with pytest.raises(ForbiddenError, match="403"):
        api.get_node("worker-3")
    with pytest.raises(ForbiddenError, match="desiredConfig"):
        api.patch_node_annotations("worker-2", {constants.DESIRED_CONFIG_ANNOTATION: "x"})
    with pytest.raises(ForbiddenError):
        api.record_event("Node", "worker-3", "R", "m")
    with pytest.raises(NotFoundError):
        api.get_rendered("rendered-worker-0000")
    with pytest.raises(ForbiddenError, match="401"):
        RemoteNodeAPI(server.https, "wrong-token", ca_file=str(server.ca_file)).get_node("worker-2")
    with pytest.raises(ForbiddenError):
        RemoteNodeAPI.register(server.https, "wrong-token", "worker-9", {}, ca_file=str(server.ca_file))
    assert isinstance(_error_for(409, "stale"), ConflictError)
    # retry as is: a conflict, a server in trouble; not: a refusal, a bad request
    assert [is_temporary(_error_for(s, "x")) for s in (409, 429, 500, 503, 400, 403, 404)] == \
        [True, True, True, True, False, False, False]
    assert type(_error_for(400, "x")) is StoreError
    # TLS without our CA: a StoreError, not an ssl exception (and not one to retry as is).
    with pytest.raises(StoreError, match="SSL|certificate") as err:
        RemoteNodeAPI(server.https, api.token, timeout=5).get_node("worker-2")
    assert not is_temporary(err.value)
    # nobody listening: retried
    with pytest.raises(UnavailableError) as gone:
        RemoteNodeAPI("https://127.0.0.1:1", api.token, timeout=5).get_node("worker-2")
    assert is_temporary(gone.value)
    # The plain listener does not serve the node API (tokens travel over TLS only).
    with pytest.raises(NotFoundError, match="TLS only"):
        RemoteNodeAPI(server.http, api.token, timeout=5).get_node("worker-2")


def test_wait_for_change(server: Running) -> None:
    api = join(server, "worker-4")
    since = api.wait_for_change(0, 5)
    started = time.monotonic()
    assert api.wait_for_change(since, 0.5) == since
    assert 0.4 <= time.monotonic() - started < 5
    timer = threading.Timer(0.5, lambda: server.store.patch_node_annotations("worker-4", {STATE_KEY: "Done"}))
    timer.start()
    started = time.monotonic()
    revision = api.wait_for_change(since, 20)
    timer.join()
    assert revision > since and time.monotonic() - started < 10


def test_unreachable_and_silent_servers_time_out() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StoreError):
        RemoteNodeAPI(f"http://127.0.0.1:{port}", "t", timeout=2).get_node("n")
    # Accepts connections, never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        with pytest.raises(StoreError, match="timed out|Timeout"):
            RemoteNodeAPI(f"http://127.0.0.1:{silent.getsockname()[1]}", "t", timeout=0.5).get_node("n")
        assert time.monotonic() - started < 5
    with pytest.raises(StoreError):
        RemoteNodeAPI("ftp://x", "t")
    assert "t0k" not in repr(RemoteNodeAPI("http://127.0.0.1:1", "t0k"))


def test_long_poll_outlives_the_response_deadline(server: Running) -> None:
    api = join(server, "worker-5")
    since = api.wait_for_change(0, 5)
    started = time.monotonic()
    # --response-timeout is 2 s; a 3 s watch must still get its answer, not a dropped connection.
    assert api.wait_for_change(since, 3.0) == since
    assert time.monotonic() - started >= 2.9


@pytest.mark.parametrize("answer", [
    {"kind": "Secret", "metadata": {"name": "rendered-worker-0000"}},  # another kind under the name
    {"kind": "MachineConfig", "metadata": {}},  # no name
    {"kind": "MachineConfig", "metadata": {"name": "x"}, "spec": ["not", "an", "object"]},
])
def test_a_rendered_config_that_is_not_one_is_a_store_error(answer: dict[str, object]) -> None:
    # what the kube and remote stores do with what a server answers (rendered.py: a local file)
    with pytest.raises(StoreError, match=r"^node API: rendered config x: corrupt rendered config: "):
        rendered_config(answer, "node API: rendered config x")
