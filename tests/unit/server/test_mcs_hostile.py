"""Hostile input to the server (issue 13, "Smaller"): pool names that no pool can have, a new Host
header on every request, request heads the fast path cannot read (LF-only lines, TLS on the plain
port), and the TLS 1.2 cipher suites offered.
"""
from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import logging
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from machineconfig.store import Store
from mcs.app import make_app
from mcs.state import ServerState
from mcs.cache import MAX_VARIANTS
from mcs.fastpath import may_be_fast
from mcs.options import BootstrapOptions, StoreOptions
from mcs.state import build_store_state
from mcs.sources.store import StoreSource
from mcs.tls import ReloadingTLS
from tests.unit.server.test_mcs_fastpath import ACCEPT35, InProcessServer, Tls
from tests.unit.server.test_mcs_layout import write_layout
from tests.unit.server.test_mcs_store_mode import bearer, credentials_of, make_store, pool_token, run

# Lengths around the limits: 250 is the longest `<pool>.yaml` a file system takes (NAME_MAX 255),
# 253 the longest DNS subdomain, 8,000 fits in aiohttp's request line limit.
LENGTHS = (63, 64, 250, 251, 253, 254, 300, 8000)


def _names() -> list[str]:
    return ["a" * n for n in LENGTHS] + ["a." * 126 + "a", "Worker", "-worker", "a..b", ".a", "a_b"]


def _ask(addr: tuple[str, int], raw: bytes, timeout: float = 10.0) -> bytes:
    """One request on a new connection; everything the server sends until it closes or goes quiet."""
    with socket.create_connection(addr, timeout=timeout) as sock:
        sock.sendall(raw)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                head, _, body = data.partition(b"\r\n\r\n")
                m = re.search(rb"Content-Length: (\d+)", head)
                if m is not None and len(body) >= int(m.group(1)):
                    break
    return data


# -- 1. pool names ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bootstrap_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessServer, InProcessServer]]:
    root = tmp_path_factory.mktemp("names")
    base, kc = write_layout(root)
    options = BootstrapOptions(base, kc, secure_port=None, insecure_port=0, bind_address="127.0.0.1")
    fast = InProcessServer(options).start()
    plain = InProcessServer(dataclasses.replace(options, fast_path=False)).start()
    yield fast, plain
    fast.stop()
    plain.stop()


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
def test_pool_names_no_pool_can_have_are_404(bootstrap_pair: tuple[InProcessServer, InProcessServer], fast: bool,
                                             caplog: pytest.LogCaptureFixture) -> None:
    srv = bootstrap_pair[0 if fast else 1]
    with caplog.at_level(logging.INFO, logger="mcs.access"):
        for name in _names():
            raw = f"GET /config/{name} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
            answer = _ask(srv.address("http"), raw)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 404 "), (len(name), answer[:200])
            assert body.endswith(b"\n") and body.count(b"\n") == 1 and len(body) < 400, body
        # Still serving, and the real pool is unaffected.
        answer = _ask(srv.address("http"), b"GET /config/worker HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Connection: close\r\n" + ACCEPT35.encode() + b"\r\n")
        assert answer.startswith(b"HTTP/1.1 200 ")
    lines = [r.getMessage() for r in caplog.records if r.name == "mcs.access"]
    assert len([line for line in lines if " 404 " in line]) == len(_names()), lines


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "aiohttp"])
def test_store_mode_pool_names(tmp_path: Path, fast: bool, caplog: pytest.LogCaptureFixture) -> None:
    _, inputs, sdir = make_store(tmp_path)
    options = StoreOptions(store=f"local:{inputs}", state_dir=sdir, secure_port=None, insecure_port=0,
                            bind_address="127.0.0.1", fast_path=fast)
    srv = InProcessServer(options).start()
    try:
        auth = f"Authorization: Bearer {pool_token(sdir, 'worker')}\r\n"
        with caplog.at_level(logging.INFO, logger="mcs.access"):
            for name in _names():
                raw = f"GET /config/{name} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n".encode()
                answer = _ask(srv.address("http"), raw)
                head, _, body = answer.partition(b"\r\n\r\n")
                # A valid name is the token's business first (401); one no pool can have is 404.
                valid = len(name) <= 253 and re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) and ".." not in name
                assert head.startswith(b"HTTP/1.1 401 " if valid else b"HTTP/1.1 404 "), (len(name), answer[:200])
                assert body.count(b"\n") == 1 and len(body) < 400, body
    finally:
        srv.stop()
    # Only this server's lines (its thread's): a server another test left behind may log here too.
    lines = [r.getMessage() for r in caplog.records if r.name == "mcs.access" and r.thread == srv.ident]
    assert len(lines) == len(_names()), lines


# -- 2. the Host header -------------------------------------------------------------------------------

def test_random_hosts_neither_rebuild_nor_grow_the_cache(tmp_path: Path) -> None:
    async def scenario(client: "TestClient[Any, Any]", state: ServerState, store: Store, sdir: Path) -> None:
        token = pool_token(sdir, "worker")
        hosts = [f"h{i}.example:22624" for i in range(3 * MAX_VARIANTS)]
        for host in hosts:
            for coding in ("identity", "gzip"):
                resp = await client.get("/config/worker", headers={**bearer(token), "Host": host,
                                                                   "Accept-Encoding": coding})
                assert resp.status == 200
                body = await resp.read()
                if coding == "gzip":
                    assert resp.headers["Content-Encoding"] == "gzip"
                    body = gzip.decompress(body)
                assert credentials_of(json.loads(body))[0]["server"] == f"http://{host}"
        # One build of the rendered config; each Host only changes the server URL written into it.
        assert state.cache.builds == 1
        assert state.cache.entry_count("worker") <= MAX_VARIANTS
        # The derived answer is exactly what a full build for that Host gives.
        source = state.source
        assert isinstance(source, StoreSource)
        resolved = dataclasses.replace(source.resolve("worker"), variant=f"http://{hosts[-1]}")
        resp = await client.get("/config/worker", headers={**bearer(token), "Host": hosts[-1],
                                                           "Accept-Encoding": "identity"})
        assert await resp.read() == source.build(resolved, "2.2.0")
        # A Host spelled differently that names the same server changes nothing: no build, no entry.
        derived = state.cache.derived
        for host in (hosts[-1].upper(), hosts[-1]):
            resp = await client.get("/config/worker", headers={**bearer(token), "Host": host})
            assert credentials_of(json.loads(await resp.read()))[0]["server"] == f"http://{hosts[-1]}"
        assert state.cache.builds == 1 and state.cache.derived == derived
        resp = await client.get("/config/worker", headers={**bearer(token), "Host": "mcs.example:80"})
        assert credentials_of(json.loads(await resp.read()))[0]["server"] == "http://mcs.example"
        derived = state.cache.derived
        await client.get("/config/worker", headers={**bearer(token), "Host": "MCS.example"})
        assert state.cache.derived == derived

    run(tmp_path, scenario)


def test_host_is_no_key_when_the_answer_does_not_name_it(tmp_path: Path) -> None:
    async def scenario(client: "TestClient[Any, Any]", state: ServerState, store: Store, sdir: Path) -> None:
        token = pool_token(sdir, "worker")
        for i in range(20):
            resp = await client.get("/config/worker", headers={**bearer(token), "Host": f"h{i}.example"})
            assert resp.status == 200
            creds, _ = credentials_of(json.loads(await resp.read()))
            assert creds["server"] == "https://mcs.example:22623"
        assert state.cache.builds == 1 and state.cache.entry_count("worker") == 1

    run(tmp_path, scenario, advertise_url="https://mcs.example:22623/")


def test_host_is_no_key_without_node_credentials(tmp_path: Path) -> None:
    # No state directory (as with the kube store): no node-credentials.json, so no server URL in the
    # answer, and a new Host is no reason to build again.
    async def main() -> None:
        store, _, _ = make_store(tmp_path)
        try:
            state = build_store_state(StoreOptions(store="local:unused"), store, guard=None)
            server = TestServer(make_app(state), host="127.0.0.1")
            await server.start_server(access_log=None)
            async with TestClient(server, auto_decompress=False) as client:
                bodies = set()
                for i in range(3 * MAX_VARIANTS):
                    resp = await client.get("/config/worker", headers={"Host": f"h{i}.example"})
                    assert resp.status == 200
                    bodies.add(await resp.read())
                assert len(bodies) == 1 and b"h0.example" not in bodies.pop()
                assert state.cache.builds == 1 and state.cache.derived == 0
        finally:
            store.close()  # its background input scan

    asyncio.run(main())


# -- 3. heads the fast path cannot read ---------------------------------------------------------------

def _client_hello() -> bytes:
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.1\n\n",
    b"GET /config/worker HTTP/1.1\nHost: 127.0.0.1\n\n",
    b"GET /config/worker HTTP/1.1\r\nHost: 127.0.0.1\n\n",
    b"\x16\x03\x01",  # the start of a TLS record
    b"tls",  # replaced by a whole ClientHello below
], ids=["lf-root", "lf-config", "mixed", "tls-record-start", "tls-client-hello"])
def test_unreadable_heads_answered_at_once(bootstrap_pair: tuple[InProcessServer, InProcessServer],
                                           raw: bytes) -> None:
    # The server's header timeout stays 10 s; the client waits 3 s: the answer must not wait for it.
    if raw == b"tls":
        raw = _client_hello()
    fast, plain = bootstrap_pair
    handed = fast.handed_over
    theirs = _ask(plain.address("http"), raw, timeout=3.0)
    ours = _ask(fast.address("http"), raw, timeout=3.0)
    assert theirs.startswith(b"HTTP/1.") and b" 400 " in theirs.split(b"\r\n", 1)[0], theirs
    assert ours.split(b"\r\n", 1)[0] == theirs.split(b"\r\n", 1)[0]
    assert fast.handed_over == handed + 1


@pytest.mark.parametrize(("partial", "expected"), [
    (b"G", True), (b"GET /con", True), (b"HEAD /config/worker HTTP/1.1\r\nHost: x\r\n", True),
    (b"GET /config/worker HTTP/1.1\r", True), (b"GET /healthz", False), (b"POST /", False),
    (b"GET /config/w HTTP/1.1\n", False), (b"GET /config/w HTTP/1.1\r\nX: \xff", False), (b"\x16\x03", False),
])
def test_may_be_fast(partial: bytes, expected: bool) -> None:
    assert may_be_fast(partial) is expected


# -- 4. TLS cipher suites -----------------------------------------------------------------------------

CBC = "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA"
AEAD = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305"


def _handshake(tmp_path: Path, ciphers: str, tls13: bool = False) -> str:
    """The suite a client limited to `ciphers` (TLS 1.2) gets from the server's context, over a socketpair."""
    tls = Tls(tmp_path)
    server_ctx = ReloadingTLS(tls.cert, tls.key).context
    client_ctx = tls.client()
    if not tls13:
        client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        client_ctx.set_ciphers(ciphers)
    a, b = socket.socketpair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(b, server_side=True) as s:
                s.recv(1)
        except (ssl.SSLError, OSError) as e:
            errors.append(e)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        a.settimeout(10)
        with client_ctx.wrap_socket(a, server_hostname="localhost") as c:
            cipher = c.cipher()
            c.sendall(b"x")
            assert cipher is not None
            return str(cipher[0])
    finally:
        a.close()
        b.close()
        thread.join(10)


def test_tls12_offers_only_aead_suites(tmp_path: Path) -> None:
    with pytest.raises(ssl.SSLError):
        _handshake(tmp_path, CBC)
    assert re.search(r"GCM|CHACHA20", _handshake(tmp_path, AEAD))
    for suite in AEAD.split(":"):
        assert _handshake(tmp_path, suite) == suite
    assert _handshake(tmp_path, "", tls13=True).startswith("TLS_")


def test_server_context_lists_no_cbc_suite() -> None:
    from mcs.tls import new_server_context

    names = [c["name"] for c in new_server_context().get_ciphers()]
    assert names and not [n for n in names if not re.search(r"GCM|CHACHA20|TLS_", n)], names
