"""The server's per-request fast path: inputs checked at most every `input_check_interval` seconds (a
change is still served within that bound), metrics children bound once, the slow-client guard's
deadlines, the bounded Accept-Encoding cache, and the precomputed response headers.
"""
from __future__ import annotations

import asyncio
import dataclasses
import signal
import gzip
import http.client
import json
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiohttp.test_utils import TestClient, TestServer

from machineconfig import constants
from machineconfig.store import Store
from mcs import answer as mcs_answer
from mcs import cli
from mcs.app import make_app
from mcs.state import ServerState
from mcs.cache import INPUT_CHECK_INTERVAL, ServedConfigCache
from mcs.fastpath import FastPath, parse_head
from mcs.options import BootstrapOptions, ServerOptions, StoreOptions
from mcs.server import ConnectionGuard, loop_factory, serve
from mcs.state import build_state
from mcs.sources import Resolved
from mcs.sources.bootstrap import BootstrapSource
from mcs.state import build_store_state
from tests.unit.server.test_mcs_layout import WORKER_CONFIG, WORKER_CONFIG_NEW, decode_files, ignition_config, \
    machine_config, pool, write_layout, write_yaml
from tests.unit.server.test_mcs_server import write_tls
from tests.support.slowclient import trickle_until_closed
from tests.unit.server.test_mcs_store_mode import bearer, credentials_of, data_url_text, make_store, pool_token, \
    store_options
from tests.unit.server.test_mcs_tls import FakeHandler

IGN = "application/vnd.coreos.ignition+json"
V35 = {"Accept": f"{IGN};version=3.5.0, */*;q=0.1", "Accept-Encoding": "identity"}
# Generous: the test polls until the change shows, and fails only if it never does.
DEADLINE = 30.0


async def _serve(state: ServerState) -> tuple[TestServer, "TestClient[Any, Any]"]:
    server = TestServer(make_app(state), host="127.0.0.1")
    await server.start_server(access_log=None)
    client = TestClient(server, auto_decompress=False)
    await client.start_server()
    return server, client


def _served_config(body: bytes) -> str:
    files = decode_files(json.loads(body))
    return str(json.loads(data_url_text(files["/etc/machine-config-daemon/node-annotations.json"][0]))
               [constants.CURRENT_CONFIG_ANNOTATION])


class CountingSource(BootstrapSource):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.resolves = 0

    def resolve(self, pool: str) -> Resolved:
        self.resolves += 1
        return super().resolve(pool)


def test_cli_default_interval_is_the_documented_constant() -> None:
    args = cli._parser().parse_args(["bootstrap"])
    assert args.input_check_interval == INPUT_CHECK_INTERVAL == 0.5
    args = cli._parser().parse_args(["start", "--store", "local:x", "--state", "s", "--input-check-interval", "0"])
    assert args.input_check_interval == 0.0
    # Library users (and the other tests) keep the exact behaviour: every request checks.
    assert ServerOptions().input_check_interval == 0.0


def test_inputs_checked_once_per_interval(tmp_path: Path) -> None:
    async def main() -> None:
        base, kc = write_layout(tmp_path)
        source = CountingSource(base, kc)
        cache = ServedConfigCache(source, check_interval=3600.0)
        for _ in range(20):
            await cache.get("worker", "3.5.0")
        assert source.resolves == 1 and cache.builds == 1
        # An unknown pool is not remembered (clients cannot grow the table) and stays a NotFound.
        for _ in range(3):
            try:
                await cache.get("nosuch", "3.5.0")
            except Exception as e:  # noqa: BLE001
                assert type(e).__name__ == "NotFound"
        assert source.resolves == 4 and set(cache._resolved) == {"worker"}

        exact = ServedConfigCache(source)  # interval 0: every request resolves, as before
        before = source.resolves
        for _ in range(5):
            await exact.get("worker", "3.5.0")
        assert source.resolves == before + 5

    asyncio.run(main())


def test_bootstrap_change_on_disk_served_within_the_bound(tmp_path: Path) -> None:
    async def main() -> None:
        base, kc = write_layout(tmp_path)
        state = build_state(BootstrapOptions(base, kc, input_check_interval=0.2), guard=None)
        server, client = await _serve(state)
        try:
            first = await client.get("/config/worker", headers=V35)
            assert first.status == 200 and _served_config(await first.read()) == WORKER_CONFIG
            etag = first.headers["ETag"]
            write_yaml(base / "machine-configs" / f"{WORKER_CONFIG_NEW}.yaml",
                       machine_config(WORKER_CONFIG_NEW, ignition_config()))
            write_yaml(base / "machine-pools" / "worker.yaml", pool("worker", WORKER_CONFIG_NEW))
            give_up = time.monotonic() + DEADLINE
            while True:
                resp = await client.get("/config/worker", headers={**V35, "If-None-Match": etag})
                if resp.status == 200 and _served_config(await resp.read()) == WORKER_CONFIG_NEW:
                    break
                # Until then the old config, unchanged (a 304 for the old tag), never an error.
                assert resp.status == 304, resp.status
                assert time.monotonic() < give_up, "the change on disk was never served"
                await asyncio.sleep(0.02)
            assert resp.headers["ETag"] != etag
        finally:
            await client.close()
            await server.close()

    asyncio.run(main())


def test_store_change_served_within_the_bound(tmp_path: Path) -> None:
    async def main() -> None:
        store, _, sdir = make_store(tmp_path)
        state = build_store_state(store_options(sdir, input_check_interval=0.2), store, guard=None)
        server, client = await _serve(state)
        try:
            token = pool_token(sdir, "worker")
            resp = await client.get("/config/worker", headers=bearer(token))
            assert _served_config(await resp.read()) == WORKER_CONFIG
            store.update_status("MachineConfigPool", "worker",
                                {"configuration": {"name": WORKER_CONFIG}, "updatedMachineCount": 1})
            give_up = time.monotonic() + DEADLINE
            while True:
                resp = await client.get("/config/worker", headers=bearer(token))
                assert resp.status == 200
                if _served_config(await resp.read()) == WORKER_CONFIG_NEW:
                    break
                assert time.monotonic() < give_up, "the store change was never served"
                await asyncio.sleep(0.02)
        finally:
            await client.close()
            await server.close()
            store.close()  # its background input scan

    asyncio.run(main())


def test_store_revision_not_scanned_per_request(tmp_path: Path) -> None:
    async def main() -> None:
        store, _, sdir = make_store(tmp_path)
        state = build_store_state(store_options(sdir, input_check_interval=3600.0), store, guard=None)
        server, client = await _serve(state)
        try:
            token = pool_token(sdir, "worker")
            assert (await client.get("/config/worker", headers=bearer(token))).status == 200
            revisions = _count_revisions(store)
            for _ in range(10):
                assert (await client.get("/config/worker", headers=bearer(token))).status == 200
            assert revisions[0] == 0
        finally:
            await client.close()
            await server.close()
            store.close()  # its background input scan

    asyncio.run(main())


def _count_revisions(store: Store) -> list[int]:
    count = [0]
    original = store.revision

    def counting() -> int:
        count[0] += 1
        return original()

    store.revision = counting  # type: ignore[method-assign]
    return count


def test_gzip_parse_cached_and_bounded() -> None:
    mcs_answer._accepts_gzip.cache_clear()
    for value in ("gzip", "gzip", "br;q=1, gzip;q=0", "*"):
        assert mcs_answer._accepts_gzip(value) == mcs_answer.accepts_gzip(value)
    info = mcs_answer._accepts_gzip.cache_info()
    assert info.hits == 1 and info.maxsize == 256


def test_precomputed_headers(tmp_path: Path) -> None:
    async def main() -> None:
        base, kc = write_layout(tmp_path, ignition_config(extra_files=40))
        state = build_state(BootstrapOptions(base, kc), guard=None)
        server, client = await _serve(state)
        try:
            plain = await client.get("/config/worker", headers=V35)
            body = await plain.read()
            assert plain.headers["Content-Length"] == str(len(body)) and len(body) > 10_000
            assert plain.headers["Content-Type"] == "application/json"
            assert plain.headers["Server"] == "machine-config-server"
            assert "Content-Encoding" not in plain.headers
            gz = await client.get("/config/worker", headers={**V35, "Accept-Encoding": "gzip"})
            assert gz.headers["Content-Encoding"] == "gzip" and gz.headers["Vary"] == "Accept, Accept-Encoding"
            assert gzip.decompress(await gz.read()) == body
            head = await client.head("/config/worker", headers=V35)
            assert head.status == 200 and await head.read() == b""
            assert head.headers["Content-Length"] == str(len(body))
            # The cached header dicts are copied per response, never changed by one.
            served = await state.cache.get("worker", "3.5.0")
            assert "Server" not in served.headers and "Content-Length" not in served.headers
        finally:
            await client.close()
            await server.close()

    asyncio.run(main())


def test_metrics_children_bound_once(tmp_path: Path) -> None:
    async def main() -> None:
        base, kc = write_layout(tmp_path)
        state = build_state(BootstrapOptions(base, kc), guard=None)
        server, client = await _serve(state)
        try:
            for _ in range(3):
                await client.get("/config/worker", headers=V35)
            await client.get("/config/nosuch", headers=V35)
            assert list(state.metrics._served) == [("worker", "3.5.0", 200)]
            text = await (await client.get("/metrics")).text()
            assert 'mcs_config_requests_total{code="200",pool="worker",version="3.5.0"} 3.0' in text
            assert 'mcs_http_requests_total{code="200",route="config"} 3.0' in text
            assert 'mcs_http_requests_total{code="404",route="config"} 1.0' in text
            assert 'mcs_http_request_duration_seconds_count{route="config"} 4.0' in text
        finally:
            await client.close()
            await server.close()

    asyncio.run(main())


def test_guard_forgets_closed_connections() -> None:
    guard = ConnectionGuard(header_timeout=0.0, response_timeout=3600.0)
    gone, idle = FakeHandler(), FakeHandler()
    guard.connection_made(gone)  # type: ignore[arg-type]
    guard.connection_made(idle)  # type: ignore[arg-type]
    guard.connection_lost(gone)  # type: ignore[arg-type]
    time.sleep(0.01)
    assert guard.sweep() == 1 and idle.transport.aborted and not gone.transport.aborted
    assert guard.sweep() == 0


# -- mcs.fastpath: the protocol in front of aiohttp, against the real server ----------------------------

class InProcessServer:
    """`serve()` on 127.0.0.1 (HTTPS and HTTP, ports picked by the kernel) in a thread of its own."""

    def __init__(self, options: BootstrapOptions | StoreOptions, loop: str = "auto") -> None:
        self.options = options
        self.loop = loop
        self.urls: list[str] = []
        self.fast_paths: list[FastPath] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await serve(self.options, self._stop, on_ready=lambda urls: (self.urls.extend(urls), self._ready.set()),
                        fast_paths=self.fast_paths)

        try:
            with asyncio.Runner(loop_factory=loop_factory(self.loop)) as runner:
                runner.run(main())
        except BaseException as e:  # noqa: BLE001 - reported by start() / stop()
            self._error = e
            self._ready.set()

    def start(self) -> "InProcessServer":
        self._thread.start()
        assert self._ready.wait(30) and self._error is None, self._error
        return self

    def stop(self) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        assert not self._thread.is_alive() and self._error is None, self._error

    def address(self, scheme: str) -> tuple[str, int]:
        url = next(u for u in self.urls if u.startswith(scheme + "://"))
        host, port = url.split("://")[1].rsplit(":", 1)
        return host, int(port)

    @property
    def ident(self) -> int | None:
        """The server thread's id (log records carry it)."""
        return self._thread.ident

    @property
    def answered(self) -> int:
        return sum(f.answered for f in self.fast_paths)

    @property
    def handed_over(self) -> int:
        return sum(f.handed_over for f in self.fast_paths)


class Tls:
    def __init__(self, root: Path) -> None:
        self.ca, self.cert, self.key, self.ca_file = write_tls(root, "mcs-fast")

    def client(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca.pem().decode())


def _options(root: Path, tls: Tls, **kw: Any) -> BootstrapOptions:
    base, kc = write_layout(root, ignition_config(extra_files=40))
    write_yaml(base / "machine-configs" / f"{LARGE}.yaml", machine_config(LARGE, ignition_config(extra_files=600)))
    write_yaml(base / "machine-pools" / "large.yaml", pool("large", LARGE))
    tokens = root / "tokens"
    tokens.write_text(f"worker {FAST_TOKEN}\nlarge {FAST_TOKEN}\n")
    return BootstrapOptions(base, kc, cert=tls.cert, key=tls.key, secure_port=0, insecure_port=0,
                         bind_address="127.0.0.1", token_file=tokens, **kw)


LARGE = "rendered-large-0123456789abcdef0123456789abcdef"
FAST_TOKEN = "fast-token-8c1e5f"
AUTHZ = f"Authorization: Bearer {FAST_TOKEN}\r\n"
ACCEPT35 = f"Accept: {IGN};version=3.5.0, */*;q=0.1\r\n"


def exchange(srv: InProcessServer, scheme: str, tls: Tls, raw: bytes, timeout: float = 20.0) -> bytes:
    """Send `raw` on a new connection; read until every request in it is answered or the server closes."""
    sock = socket.create_connection(srv.address(scheme), timeout=timeout)
    if scheme == "https":
        sock = tls.client().wrap_socket(sock, server_hostname="127.0.0.1")
    with sock:
        sock.sendall(raw)
        data = b""
        while len(split_responses(data, raw)) < raw.count(b"\r\n\r\n"):
            try:
                chunk = sock.recv(1 << 20)
            except (ConnectionResetError, ssl.SSLError):
                break
            if not chunk:
                break
            data += chunk
    return data


def split_responses(data: bytes, raw: bytes) -> list[tuple[str, list[tuple[str, str]], bytes]]:
    """(status line, headers without Date, body) of each response; HEAD and 304 answers have no body."""
    methods = [line.split(b" ", 1)[0] for line in raw.split(b"\r\n") if line.split(b" ", 1)[0] in
               (b"GET", b"HEAD", b"POST", b"PUT")]
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        headers = [tuple(h.split(": ", 1)) for h in lines[1:]]
        length = int(dict(headers).get("Content-Length", "0"))
        method = methods[len(out)] if len(out) < len(methods) else b"GET"
        status = lines[0]
        if method == b"HEAD" or " 304 " in status:
            length = 0
        if len(rest) < length:
            break
        out.append((status, [(k, v) for k, v in headers if k != "Date"], rest[:length]))
        data = rest[length:]
    return out


def _request(path: str, method: str = "GET", extra: str = "", version: str = "HTTP/1.1") -> bytes:
    return f"{method} {path} {version}\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


# Requests whose answers the fast path must give exactly as aiohttp does (or leave to aiohttp).
CASES: dict[str, bytes] = {
    "get": _request("/config/worker", extra=AUTHZ + ACCEPT35),
    "get 2.2 default": _request("/config/worker", extra=AUTHZ),
    "get gzip": _request("/config/worker", extra=AUTHZ + ACCEPT35 + "Accept-Encoding: gzip\r\n"),
    "get gzip q=0": _request("/config/worker", extra=AUTHZ + ACCEPT35 + "Accept-Encoding: gzip;q=0\r\n"),
    "head": _request("/config/worker", "HEAD", AUTHZ + ACCEPT35),
    "head gzip": _request("/config/worker", "HEAD", AUTHZ + ACCEPT35 + "Accept-Encoding: gzip, br\r\n"),
    "trailing slash": _request("/config/worker/", extra=AUTHZ + ACCEPT35),
    "304 star": _request("/config/worker", extra=AUTHZ + ACCEPT35 + "If-None-Match: *\r\n"),
    "304 gzip": _request("/config/worker", extra=AUTHZ + ACCEPT35 + "Accept-Encoding: gzip\r\n"
                         + "If-None-Match: W/\"nope\", *\r\n"),
    "etag mismatch": _request("/config/worker", extra=AUTHZ + ACCEPT35 + "If-None-Match: \"nope\"\r\n"),
    "no token": _request("/config/worker", extra=ACCEPT35),
    "wrong token": _request("/config/worker", extra="Authorization: Bearer nope\r\n" + ACCEPT35),
    "token of another pool": _request("/config/master", extra=AUTHZ + ACCEPT35),
    "unknown pool": _request("/config/nosuch", extra=AUTHZ + ACCEPT35),
    "bad pool": _request("/config/Worker", extra=AUTHZ + ACCEPT35),
    "nested": _request("/config/worker/x", extra=AUTHZ + ACCEPT35),
    "version 4": _request("/config/worker", extra=AUTHZ + f"Accept: {IGN};version=4.0.0\r\n"),
    "post": _request("/config/worker", "POST", AUTHZ + ACCEPT35 + "Content-Length: 0\r\n"),
    "query": _request("/config/worker?x=1", extra=AUTHZ + ACCEPT35),
    "escaped": _request("/config/w%6Frker", extra=AUTHZ + ACCEPT35),
    "http/1.0": _request("/config/worker", extra=AUTHZ + ACCEPT35, version="HTTP/1.0"),
    "no host": f"GET /config/worker HTTP/1.1\r\n{AUTHZ}{ACCEPT35}\r\n".encode(),
    "two accepts": _request("/config/worker", extra=AUTHZ + ACCEPT35 + f"Accept: {IGN};version=2.2.0\r\n"),
    "connection close": _request("/config/worker", extra=AUTHZ + ACCEPT35 + "Connection: close\r\n"),
    "healthz": _request("/healthz"),
    "other path head": _request("/nosuch", "HEAD"),
    "big header": _request("/config/worker", extra=AUTHZ + ACCEPT35 + "X-Big: " + "a" * 9000 + "\r\n"),
    "bad header": _request("/config/worker", extra=AUTHZ + ACCEPT35 + "Bad Header: x\r\n"),
    "pipelined": _request("/config/worker", extra=AUTHZ + ACCEPT35) + _request("/config/worker", "HEAD", AUTHZ)
    + _request("/healthz") + _request("/config/worker", extra=AUTHZ + ACCEPT35 + "Accept-Encoding: gzip\r\n"),
    # The large pool (about 180 KB): on plain HTTP its body goes out by os.sendfile, in pieces.
    "get large": _request("/config/large", extra=AUTHZ + ACCEPT35),
    "get large close": _request("/config/large", extra=AUTHZ + ACCEPT35 + "Connection: close\r\n"),
    "pipelined large": _request("/config/large", extra=AUTHZ + ACCEPT35) + _request("/config/large", "HEAD", AUTHZ)
    + _request("/config/worker", extra=AUTHZ + ACCEPT35) + _request("/config/large", extra=AUTHZ + ACCEPT35)
    + _request("/config/large", extra=AUTHZ + ACCEPT35 + "Accept-Encoding: gzip\r\n")
    + _request("/config/large", extra=AUTHZ + ACCEPT35 + "If-None-Match: *\r\n")
    + _request("/config/large", extra=AUTHZ + ACCEPT35 + "Connection: close\r\n"),
    "pipelined large then aiohttp": _request("/config/large", extra=AUTHZ + ACCEPT35) + _request("/healthz")
    + _request("/config/large", extra=AUTHZ + ACCEPT35),
}
# Answered by the fast path itself (the rest are handed to aiohttp before anything is written).
FAST = {"get", "get 2.2 default", "get gzip", "get gzip q=0", "head", "head gzip", "trailing slash", "304 star",
        "304 gzip", "etag mismatch", "connection close", "pipelined", "get large", "get large close",
        "pipelined large", "pipelined large then aiohttp"}


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def pair(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessServer, InProcessServer, Tls]]:
    """The same layout served with the fast path and without it (aiohttp alone), on either loop."""
    root = tmp_path_factory.mktemp("fast")
    tls = Tls(root)
    options = _options(root, tls, header_timeout=2.0, response_timeout=2.0)
    fast = InProcessServer(options, request.param).start()
    plain = InProcessServer(dataclasses.replace(options, fast_path=False), request.param).start()
    yield fast, plain, tls
    fast.stop()
    plain.stop()


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_same_answers_as_aiohttp(pair: tuple[InProcessServer, InProcessServer, Tls], scheme: str,
                                 case: str) -> None:
    fast, plain, tls = pair
    raw = CASES[case]
    exchange(plain, scheme, tls, raw)  # both caches warm: the first answer is then the fast path's
    exchange(fast, scheme, tls, raw)
    answered, handed = fast.answered, fast.handed_over
    ours, theirs = exchange(fast, scheme, tls, raw), exchange(plain, scheme, tls, raw)
    assert split_responses(ours, raw) == split_responses(theirs, raw)
    assert len(split_responses(ours, raw)) >= 1
    if case in FAST:
        assert fast.answered > answered
    else:
        assert fast.answered == answered and fast.handed_over == handed + 1
    if case == "pipelined large":
        assert fast.answered == answered + 7 and fast.handed_over == handed
        assert len(split_responses(ours, raw)) == 7
    if case == "pipelined large then aiohttp":  # the body is out before aiohttp takes the connection
        assert fast.answered == answered + 1 and fast.handed_over == handed + 1
        assert [len(r[2]) > 100_000 for r in split_responses(ours, raw)] == [True, False, True]
    if case == "pipelined":  # two answered, then /healthz handed over with the request after it
        assert fast.answered == answered + 2 and fast.handed_over == handed + 1
        assert [r[0].split(" ", 1)[1] for r in split_responses(ours, raw)] == ["200 OK"] * 4


def test_fast_answers_are_the_served_config(pair: tuple[InProcessServer, InProcessServer, Tls]) -> None:
    fast, _, tls = pair
    host, port = fast.address("https")
    conn = http.client.HTTPSConnection(host, port, context=tls.client(), timeout=20)
    answered = fast.answered
    try:
        conn.request("GET", "/config/worker", headers={"Authorization": f"Bearer {FAST_TOKEN}", "Accept": V35["Accept"]})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200 and json.loads(body)["ignition"]["version"] == "3.5.0"
        assert _served_config(body) == WORKER_CONFIG
        etag = resp.headers["ETag"]
        # The same keep-alive connection: gzip, a 304 for either tag, HEAD; all on the fast path.
        conn.request("GET", "/config/worker", headers={"Authorization": f"Bearer {FAST_TOKEN}",
                                                       "Accept": V35["Accept"], "Accept-Encoding": "gzip"})
        resp = conn.getresponse()
        assert gzip.decompress(resp.read()) == body and resp.headers["Content-Encoding"] == "gzip"
        for tag in (etag, resp.headers["ETag"]):
            conn.request("GET", "/config/worker", headers={"Authorization": f"Bearer {FAST_TOKEN}",
                                                           "Accept": V35["Accept"], "If-None-Match": tag})
            resp = conn.getresponse()
            assert resp.status == 304 and resp.read() == b""
        conn.request("HEAD", "/config/worker", headers={"Authorization": f"Bearer {FAST_TOKEN}"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"" and int(resp.headers["Content-Length"]) > 10_000
    finally:
        conn.close()
    assert fast.answered == answered + 5 and resp.headers["Server"] == "machine-config-server"


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_every_fast_answer_is_counted(tmp_path: Path, loop: str) -> None:
    tls = Tls(tmp_path)
    srv = InProcessServer(_options(tmp_path, tls), loop).start()
    try:
        host, port = srv.address("http")
        conn = http.client.HTTPConnection(host, port, timeout=20)
        for i in range(30):
            conn.request("HEAD" if i % 3 == 0 else "GET", "/config/worker",
                         headers={"Authorization": f"Bearer {FAST_TOKEN}", "Accept": V35["Accept"]})
            conn.getresponse().read()
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
    finally:
        srv.stop()
    # The first request built the config (a miss the fast path waited for), the other 29 hit.
    assert srv.answered == 30 and srv.handed_over == 1  # /metrics
    assert 'mcs_config_requests_total{code="200",pool="worker",version="3.5.0"} 30.0' in text
    assert 'mcs_http_request_duration_seconds_count{route="config"} 30.0' in text
    assert 'mcs_config_builds_total{pool="worker",version="3.5.0"} 1.0' in text


def test_access_log_has_no_secrets(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tls = Tls(tmp_path)
    srv = InProcessServer(_options(tmp_path, tls)).start()
    with caplog.at_level(logging.INFO, logger="mcs.access"):
        try:
            for scheme in ("http", "https"):
                exchange(srv, scheme, tls, _request("/config/worker", extra=AUTHZ + ACCEPT35 + "Connection: close\r\n"))
        finally:
            srv.stop()  # also waits for the log lines written after the answers
    lines = [r.getMessage() for r in caplog.records if r.name == "mcs.access"]
    assert len(lines) == 2 and srv.answered == 2
    assert all(re.fullmatch(r"127\.0\.0\.1 GET /config/worker 200 3\.5\.0 [0-9.]+ms", line) for line in lines), lines
    assert FAST_TOKEN not in caplog.text


def test_pool_change_served_through_the_fast_path(tmp_path: Path) -> None:
    tls = Tls(tmp_path)
    options = _options(tmp_path, tls, input_check_interval=0.1)
    srv = InProcessServer(options).start()
    try:
        host, port = srv.address("http")
        conn = http.client.HTTPConnection(host, port, timeout=20)
        headers = {"Authorization": f"Bearer {FAST_TOKEN}", "Accept": V35["Accept"]}
        conn.request("GET", "/config/worker", headers=headers)
        assert _served_config(conn.getresponse().read()) == WORKER_CONFIG
        assert options.basedir is not None
        write_yaml(options.basedir / "machine-configs" / f"{WORKER_CONFIG_NEW}.yaml",
                   machine_config(WORKER_CONFIG_NEW, ignition_config()))
        write_yaml(options.basedir / "machine-pools" / "worker.yaml", pool("worker", WORKER_CONFIG_NEW))
        give_up = time.monotonic() + DEADLINE
        while True:
            conn.request("GET", "/config/worker", headers=headers)
            if _served_config(conn.getresponse().read()) == WORKER_CONFIG_NEW:
                break
            assert time.monotonic() < give_up, "the change on disk was never served"
            time.sleep(0.02)
        conn.close()
    finally:
        srv.stop()
    assert srv.handed_over == 0  # the rebuild happened on the fast path's own connection


def test_trickling_client_is_dropped_on_the_fast_path(pair: tuple[InProcessServer, InProcessServer, Tls]) -> None:
    fast, _, tls = pair
    # A head trickled one byte at a time: dropped by the head deadline (2 s here), not answered.
    request = CASES["get"]
    with socket.create_connection(fast.address("http"), timeout=10) as sock:
        started = time.monotonic()
        closed = trickle_until_closed(sock, request[:-1])
        assert closed, "a client trickling its request head was never disconnected"
        assert time.monotonic() - started < 15


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_never_reading_client_is_dropped_on_the_fast_path(tmp_path: Path, loop: str) -> None:
    # A client that asks for the large config many times and never reads: while the transport
    # holds more than it takes, no further request is answered and the response deadline applies
    # (the long head deadline here would let it linger).
    tls = Tls(tmp_path)
    fast = InProcessServer(_options(tmp_path, tls, header_timeout=60.0, response_timeout=1.5), loop).start()
    exchange(fast, "http", tls, _request("/config/large", "HEAD", AUTHZ + ACCEPT35))  # built
    aborted = sum(f.guard.aborted for f in fast.fast_paths if isinstance(f.guard, ConnectionGuard))
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        sock.settimeout(10)
        sock.connect(fast.address("http"))
        sock.sendall(_request("/config/large", extra=AUTHZ + ACCEPT35) * 20)
        time.sleep(4.5)
        got = b""
        try:
            sock.settimeout(5)
            while chunk := sock.recv(1 << 20):
                got += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    assert len(got) < 20 * 500_000, "the never-reading client was sent everything"
    try:
        assert sum(f.guard.aborted for f in fast.fast_paths if isinstance(f.guard, ConnectionGuard)) > aborted
        assert exchange(fast, "http", tls, CASES["healthz"]).startswith(b"HTTP/1.1 200 OK")
    finally:
        fast.stop()


def small_window_connection(srv: InProcessServer) -> socket.socket:
    """A connection whose receive window (set before connecting) is far below a large body."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    sock.settimeout(20)
    sock.connect(srv.address("http"))
    return sock


def _open_fds() -> int:
    import os

    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_large_bodies_sent_in_pieces_leave_no_descriptor(tmp_path: Path, loop: str) -> None:
    # The large body goes out by os.sendfile on a duplicate of the connection's descriptor: a client
    # that ends its side after asking still gets the whole answer (then EOF), one that goes away
    # mid-body is dropped, and every duplicate is closed with its connection.
    tls = Tls(tmp_path)
    fast = InProcessServer(_options(tmp_path, tls), loop).start()
    plain = InProcessServer(dataclasses.replace(_options(tmp_path, tls), fast_path=False), loop).start()
    raw = CASES["get large"]
    try:
        expected = split_responses(exchange(plain, "http", tls, raw), raw)
        exchange(fast, "http", tls, raw)  # built
        fds = _open_fds()
        for _ in range(3):
            with small_window_connection(fast) as sock:
                sock.sendall(raw * 2)
                sock.shutdown(socket.SHUT_WR)
                data = b""
                while chunk := sock.recv(1 << 16):
                    data += chunk
            assert split_responses(data, raw * 2) == expected * 2
            with small_window_connection(fast) as sock:
                sock.sendall(raw * 5)
                assert sock.recv(1000).startswith(b"HTTP/1.1 200 OK\r\n")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        answered = fast.answered
        assert answered >= 3 * 2 + 3
        give_up = time.monotonic() + DEADLINE
        while _open_fds() > fds:  # the server notices the resets in its own time
            assert time.monotonic() < give_up, f"{_open_fds() - fds} descriptor(s) left open"
            time.sleep(0.05)
        assert split_responses(exchange(fast, "http", tls, raw), raw) == expected
    finally:
        fast.stop()
        plain.stop()


def _aborted(srv: InProcessServer) -> int:
    return sum(f.guard.aborted for f in srv.fast_paths if isinstance(f.guard, ConnectionGuard))


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_client_that_stops_reading_holds_up_no_other(tmp_path: Path, loop: str) -> None:
    # One client asks for the large config more times than loopback's largest send buffer holds
    # and stops reading after a few bytes. While its connection is still open with answers unsent
    # (no deadline has ended it: both are a minute here), other clients of the same server get
    # every large answer in full, byte for byte; then the stalled client reads and gets all of
    # its own. A send that blocked on the stalled client would stall the others until it read.
    tls = Tls(tmp_path)
    fast = InProcessServer(_options(tmp_path, tls, header_timeout=60.0, response_timeout=60.0), loop).start()
    plain = InProcessServer(dataclasses.replace(_options(tmp_path, tls), fast_path=False), loop).start()
    raw = CASES["get large"]
    try:
        expected = split_responses(exchange(plain, "http", tls, raw), raw)
        size = len(expected[0][2])
        assert size > 100_000
        most_buffered = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
        asks = most_buffered // size + 8
        exchange(fast, "http", tls, raw)  # built
        answered, aborted = fast.answered, _aborted(fast)
        with small_window_connection(fast) as stalled:
            stalled.sendall(raw * asks)
            data = stalled.recv(100)
            assert data.startswith(b"HTTP/1.1 200 OK\r\n")
            for _ in range(5):
                assert split_responses(exchange(fast, "http", tls, raw * 2), raw * 2) == expected * 2
            assert _aborted(fast) == aborted  # the stalled connection was open all along
            assert fast.answered < answered + asks + 10  # with its last answers not begun
            while len(split_responses(data, raw * asks)) < asks:
                chunk = stalled.recv(1 << 20)
                assert chunk, "the stalled client's connection was closed before its answers"
                data += chunk
        assert split_responses(data, raw * asks) == expected * asks
    finally:
        fast.stop()
        plain.stop()


def test_body_file_is_the_body_sealed() -> None:
    import fcntl
    import os

    from mcs.cache import make_served

    served = make_served("rendered-x", "3.5.0", b'{"ignition":{"version":"3.5.0"}}' * 5000)
    for use_gzip, body in ((False, served.body), (True, served.gzip_body)):
        file = served.body_file(use_gzip)
        assert served.body_file(use_gzip) is file and file.size == len(body or b"")
        assert os.pread(file.fd, file.size + 1, 0) == body
        with pytest.raises(PermissionError):
            os.pwrite(file.fd, b"x", 0)
        assert fcntl.fcntl(file.fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_WRITE
    fd = served.body_file(False).fd
    del served, file
    import gc

    gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)  # closed with its Served


def test_responses_prebuilt_per_served_config() -> None:
    from mcs.cache import make_served

    served = make_served("rendered-x", "3.5.0", b'{"ignition":{"version":"3.5.0"}}' * 20)
    fast = FastPath(ServerState(source=None, cache=None))  # type: ignore[arg-type]
    first = fast.responses(served)
    assert fast.responses(served) is first  # built once per second
    head, _, body = first.full.partition(b"\r\n\r\n")
    assert body == served.body and first.head == head + b"\r\n\r\n"
    assert f"Content-Length: {len(served.body)}".encode() in head and b"\r\nDate: " in head
    assert first.full_gz.endswith(served.gzip_body or b"-") and b"Content-Encoding: gzip" in first.head_gz
    assert first.not_modified.startswith(b"HTTP/1.1 304 Not Modified\r\n")
    assert b"Content-Length" not in first.not_modified and served.etag.encode() in first.not_modified
    assert served.gzip_etag.encode() in first.not_modified_gz


@pytest.mark.parametrize("head", [
    b"GET /config/worker HTTP/1.1\r\nHost: x\r\nX: \x80",  # not ASCII
    b"GET /config/worker HTTP/1.1\r\nHost: x\r\n folded",  # obs-fold
    b"GET /config/worker HTTP/1.1\r\nHost: x\nAccept: y",  # bare LF
    b"GET /config/worker HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked",
    b"GET /config/worker HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: upgrade",
    b"GET /config/worker HTTP/1.1\r\nHost: x\r\nHost: y",
    b"GET /config/worker  HTTP/1.1\r\nHost: x",
    b"get /config/worker HTTP/1.1\r\nHost: x",
    b"GET /config/-worker HTTP/1.1\r\nHost: x",
    b"GET /config/worker HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(70)) + b"Host: x",
])
def test_heads_left_to_aiohttp(head: bytes) -> None:
    assert parse_head(head, max_headers=64) is None


def test_head_parsed() -> None:
    req = parse_head(b"HEAD /config/worker/ HTTP/1.1\r\nhost: x\r\nACCEPT:  a/b \r\nConnection: Keep-Alive, close\r\n"
                     b"X-Other: 1\r\nX-Other: 2", max_headers=64)
    assert req is not None and req.head_method and req.pool == "worker" and req.raw_path == "/config/worker/"
    assert req.accept == "a/b" and req.close and req.authorization is None and req.accept_encoding == ""


def test_tallied_metrics_equal_per_request_observations() -> None:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from mcs.metrics import _BUCKETS, ServerMetrics

    metrics = ServerMetrics()
    registry = CollectorRegistry()
    hist = Histogram("ref", "reference", buckets=_BUCKETS, registry=registry)
    count = Counter("refc", "reference", registry=registry)
    latencies = [0.0, 0.0001, 0.0005, 0.0007, 0.001, 0.003, 0.2, 4.9, 10.0, 11.0, 99.0] * 3
    for i, seconds in enumerate(latencies):
        metrics.observe_served("worker", "3.5.0", 304 if i % 4 == 0 else 200, seconds)
        hist.observe(seconds)
        count.inc()
    get = metrics.registry.get_sample_value
    assert not get("mcs_http_request_duration_seconds_count", {"route": "config"})  # not flushed yet
    metrics.flush()
    for bound in [*_BUCKETS, float("inf")]:
        le = "+Inf" if bound == float("inf") else str(bound)
        assert get("mcs_http_request_duration_seconds_bucket", {"route": "config", "le": le}) == \
            registry.get_sample_value("ref_bucket", {"le": le}), le
    assert get("mcs_http_request_duration_seconds_sum", {"route": "config"}) == \
        pytest.approx(registry.get_sample_value("ref_sum"))
    served = sum(get("mcs_config_requests_total", {"pool": "worker", "version": "3.5.0", "code": code}) or 0
                 for code in ("200", "304"))
    assert served == count._value.get() == len(latencies)
    metrics.flush()  # nothing new: nothing added twice
    assert get("mcs_http_requests_total", {"route": "config", "code": "200"}) == 24
    metrics.observe_served("worker", "3.5.0", 200, 0.001)
    assert b'mcs_http_requests_total{code="200",route="config"} 25.0' in metrics.render()  # render flushes


def test_event_loop_choice() -> None:
    import uvloop

    assert loop_factory("auto") is uvloop.new_event_loop  # a dependency: always there
    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("asyncio") is asyncio.new_event_loop
    with pytest.raises(ValueError, match="expected auto, uvloop or asyncio"):
        loop_factory("trio")


def test_store_mode_same_answers_as_aiohttp(tmp_path: Path) -> None:
    # `mcs start`: the served config names the server URL the request came in by (Host header and
    # scheme), so each (scheme, Host) is its own cached variant; a Host that is no host is aiohttp's 400.
    _, inputs, sdir = make_store(tmp_path)
    tls = Tls(tmp_path)
    options = StoreOptions(store=f"local:{inputs}", state_dir=sdir, cert=tls.cert, key=tls.key, secure_port=0,
                            insecure_port=0, bind_address="127.0.0.1")
    fast = InProcessServer(options).start()
    plain = InProcessServer(dataclasses.replace(options, fast_path=False)).start()
    try:
        auth = f"Authorization: Bearer {pool_token(sdir, 'worker')}\r\n"
        for scheme in ("http", "https"):
            for host in ("mcs.example:22624", "[::1]:22624", "10.0.0.5", "evil/x y"):
                raw = f"GET /config/worker HTTP/1.1\r\nHost: {host}\r\n{auth}{ACCEPT35}\r\n".encode()
                for _ in range(2):  # the first builds the variant
                    answered = fast.answered
                    ours, theirs = exchange(fast, scheme, tls, raw), exchange(plain, scheme, tls, raw)
                    if scheme == "https":
                        assert split_responses(ours, raw) == split_responses(theirs, raw)
                status = split_responses(ours, raw)[0][0]
                assert status == split_responses(theirs, raw)[0][0]
                if host == "evil/x y":
                    assert status == "HTTP/1.1 400 Bad Request" and fast.answered == answered
                else:
                    assert status == "HTTP/1.1 200 OK" and fast.answered == answered + 1
                    for server, answer in ((fast, ours), (plain, theirs)):
                        body = split_responses(answer, raw)[0][2]
                        # The node API is on the TLS listener only: a config fetched over plain
                        # HTTP names that listener (each server's own port) at the same host.
                        bare = {"mcs.example:22624": "mcs.example", "[::1]:22624": "[::1]"}.get(host, host)
                        expected = f"{scheme}://{host}" if scheme == "https" else \
                            f"https://{bare}:{server.address('https')[1]}"
                        assert credentials_of(json.loads(body))[0]["server"] == expected
    finally:
        fast.stop()
        plain.stop()


def test_two_workers_count_every_request(tmp_path: Path) -> None:
    # `mcs bootstrap --workers 2` with prometheus-client's multiprocess directory: each worker adds
    # its tallies to the shared files at least once a second, so a scrape (answered by either
    # worker) comes to the number of requests made, over connections both workers took.
    import os
    import subprocess
    import sys

    from tests.unit.server.test_mcs_server import ROOT

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base, kubeconfig = write_layout(tmp_path)
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    log = tmp_path / "log"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mcs.cli", "bootstrap", "--server-basedir", str(base),
                                 "--bootstrap-kubeconfig", str(kubeconfig), "--insecure-port", str(port),
                                 "--secure-port", "-1", "--bind-address", "127.0.0.1", "--workers", "2"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    try:
        give_up = time.monotonic() + DEADLINE
        while log.read_text().count("listening on") < 2:
            assert proc.poll() is None and time.monotonic() < give_up, log.read_text()
            time.sleep(0.05)
        assert log.read_text().count("(event loop: uvloop)") == 2
        for _ in range(40):  # a new connection each: SO_REUSEPORT spreads them over the workers
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            conn.request("GET", "/config/worker", headers={"Accept": V35["Accept"]})
            assert conn.getresponse().read()
            conn.close()
        line = 'mcs_config_requests_total{code="200",pool="worker",version="3.5.0"} 40.0'
        # One connection, so one worker answers every scrape: the other's count arrives by itself.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        while True:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
            if line in text:
                break
            assert time.monotonic() < give_up, text
            time.sleep(0.2)
        conn.close()
        assert len(list(metrics_dir.glob("counter_*.db"))) == 2  # both workers answered some
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.read_text()
