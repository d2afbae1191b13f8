"""The server's per-request fast path: inputs checked at most every `input_check_interval` seconds (a
change is still served within that bound), metrics children bound once, the slow-client guard's
deadlines, the bounded Accept-Encoding cache, and the precomputed response headers.
"""
from __future__ import annotations

import asyncio
import gzip
import json
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from machineconfig import constants
from machineconfig.store import Store
from mcs import app as mcs_app
from mcs import cli
from mcs.app import ServerState, make_app
from mcs.cache import INPUT_CHECK_INTERVAL, ServedConfigCache
from mcs.layout import BootstrapSource, Resolved
from mcs.server import ConnectionGuard, ServerOptions, build_state
from mcs.store_mode import build_store_state
from tests.unit.test_mcs_layout import WORKER_CONFIG, WORKER_CONFIG_NEW, decode_files, ignition_config, \
    machine_config, pool, write_layout, write_yaml
from tests.unit.test_mcs_store_mode import bearer, data_url_text, make_store, pool_token, store_options
from tests.unit.test_mcs_tls import FakeHandler

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
        state = build_state(ServerOptions(base, kc, input_check_interval=0.2), guard=None)
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
    mcs_app._accepts_gzip.cache_clear()
    for value in ("gzip", "gzip", "br;q=1, gzip;q=0", "*"):
        assert mcs_app._accepts_gzip(value) == mcs_app.accepts_gzip(value)
    info = mcs_app._accepts_gzip.cache_info()
    assert info.hits == 1 and info.maxsize == 256


def test_precomputed_headers(tmp_path: Path) -> None:
    async def main() -> None:
        base, kc = write_layout(tmp_path, ignition_config(extra_files=40))
        state = build_state(ServerOptions(base, kc), guard=None)
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
        state = build_state(ServerOptions(base, kc), guard=None)
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
