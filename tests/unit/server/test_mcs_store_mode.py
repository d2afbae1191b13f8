"""`mcs start` in-process over a real local store: /config/<pool> needs the pool's bootstrap token,
serves the pool's config (spec once a node updated, else status), appends node-credentials.json
(0600, server URL, pool token, CA) and no kubeconfig; tokens files; `mcs pointer --state`.
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import stat
import sys
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from machineconfig import constants
from machineconfig.rendered_config import RenderedConfig
from machineconfig.store import Store, open_store
from mcs import cli
from mcs.app import make_app
from mcs.state import ServerState
from mcs.options import StoreOptions
from mcs.state import build_store_state
from mcs.tokens import PoolTokens
from tests.unit.server.test_mcs_layout import (
    MASTER_CONFIG, WORKER_CONFIG, WORKER_CONFIG_NEW, controller_config, decode_files, ignition_config,
    machine_config,
)
from tests.support.poolyaml import pool_yaml, pools_yaml

PLAIN = {"Accept-Encoding": "identity"}
WORKER_LABEL = "node-role.kubernetes.io/worker"
CA_PEM = "-----BEGIN CERTIFICATE-----\nTESTCA\n-----END CERTIFICATE-----\n"

POOLS = pools_yaml(pool_yaml("worker", role="worker", node_role="worker"),
                   pool_yaml("master", node_role="master"), pool_yaml("infra"))


def make_store(root: Path) -> tuple[Store, Path, Path]:
    """A local store with pools worker (status WORKER_CONFIG, spec WORKER_CONFIG_NEW, nobody
    updated yet), master and infra (nothing rendered), the ControllerConfig; (store, inputs, SDIR)."""
    inputs, sdir = root / "inputs", root / "state"
    inputs.mkdir(parents=True, exist_ok=True)
    (inputs / "pools.yaml").write_text(POOLS)
    (inputs / "controller-config.json").write_text(json.dumps(controller_config()))
    store = open_store(f"local:{inputs}", str(sdir))
    store.put_rendered(RenderedConfig(machine_config(WORKER_CONFIG, ignition_config(kargs=["nosmt"]))))
    store.put_rendered(RenderedConfig(machine_config(WORKER_CONFIG_NEW, ignition_config())))
    store.put_rendered(RenderedConfig(machine_config(MASTER_CONFIG, ignition_config())))
    store.set_pool_configuration("worker", WORKER_CONFIG_NEW, [])
    store.update_status("MachineConfigPool", "worker",
                        {"configuration": {"name": WORKER_CONFIG}, "updatedMachineCount": 0})
    store.set_pool_configuration("master", MASTER_CONFIG, [])
    store.update_status("MachineConfigPool", "master", {"configuration": {"name": MASTER_CONFIG}})
    return store, inputs, sdir


def store_options(sdir: Path, **kw: Any) -> StoreOptions:
    return StoreOptions(store="local:unused", state_dir=sdir, **kw)


Scenario = Callable[[TestClient, ServerState, Store, Path], Awaitable[None]]


def run(tmp_path: Path, scenario: Scenario, **options: Any) -> None:
    async def main() -> None:
        store, _, sdir = make_store(tmp_path)
        try:
            state = build_store_state(store_options(sdir, **options), store, guard=None)
            server = TestServer(make_app(state), host="127.0.0.1")
            await server.start_server(access_log=None)
            async with TestClient(server, auto_decompress=False) as client:
                await scenario(client, state, store, sdir)
        finally:
            store.close()  # its background input scan

    asyncio.run(main())


def pool_token(sdir: Path, pool: str) -> str:
    token = PoolTokens(sdir).token_for(pool)
    assert token is not None
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **PLAIN}


def data_url_text(source: str) -> str:
    assert source.startswith("data:,")
    return urllib.parse.unquote(source[len("data:,"):])


def credentials_of(served: dict[str, Any]) -> tuple[dict[str, Any], int]:
    entries = [f for f in served["storage"]["files"] if f["path"] == constants.NODE_CREDENTIALS_PATH]
    assert len(entries) == 1
    return json.loads(data_url_text(entries[0]["contents"]["source"])), entries[0]["mode"]


# -- tests -------------------------------------------------------------------------------------------

def test_tokens_file_created_private_one_per_pool(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServerState, store: Store, sdir: Path) -> None:
        path = sdir / "tokens"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        lines = [line.split() for line in path.read_text().splitlines()]
        assert sorted(p for p, _ in lines) == ["infra", "master", "worker"]
        assert len({t for _, t in lines}) == 3 and all(len(t) >= 40 for _, t in lines)

    run(tmp_path, scenario)


def test_token_required_and_scoped(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServerState, store: Store, sdir: Path) -> None:
        assert (await client.get("/config/worker", headers=PLAIN)).status == 401
        assert (await client.get("/config/worker", headers=bearer("nope"))).status == 401
        # A token opens its own pool only.
        assert (await client.get("/config/worker", headers=bearer(pool_token(sdir, "master")))).status == 401
        resp = await client.get("/config/worker", headers=bearer(pool_token(sdir, "worker")))
        assert resp.status == 200 and resp.headers["Content-Type"] == "application/json"
        assert (await client.get("/config/nosuch", headers=bearer(pool_token(sdir, "worker")))).status == 401

    run(tmp_path, scenario)


def test_served_config_with_credentials(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServerState, store: Store, sdir: Path) -> None:
        token = pool_token(sdir, "worker")
        headers = {**bearer(token), "Accept": "application/vnd.coreos.ignition+json;version=3.4.0"}
        resp = await client.get("/config/worker", headers=headers)
        assert resp.status == 200
        served = json.loads(await resp.read())
        assert served["ignition"]["version"] == "3.4.0"
        files = decode_files(served)
        assert "/etc/kubernetes/kubeconfig" not in files  # store mode has no API server
        paths = [f["path"] for f in served["storage"]["files"]]
        # Credentials just before the encapsulated config, which stays last.
        assert paths[-2:] == [constants.NODE_CREDENTIALS_PATH, "/etc/ignition-machine-config-encapsulated.json"]
        creds, mode = credentials_of(served)
        assert mode == 0o600
        assert creds == {"server": f"http://127.0.0.1:{client.port}", "pool": "worker", "token": token}
        annotations = json.loads(data_url_text(files["/etc/machine-config-daemon/node-annotations.json"][0]))
        assert annotations[constants.CURRENT_CONFIG_ANNOTATION] == WORKER_CONFIG

    run(tmp_path, scenario)


def test_spec_once_a_node_updated_else_status(tmp_path: Path) -> None:
    async def served_name(client: TestClient, token: str) -> str:
        resp = await client.get("/config/worker", headers=bearer(token))
        assert resp.status == 200
        files = decode_files(json.loads(await resp.read()))
        return str(json.loads(data_url_text(files["/etc/machine-config-daemon/node-annotations.json"][0]))
                   [constants.CURRENT_CONFIG_ANNOTATION])

    async def scenario(client: TestClient, state: ServerState, store: Store, sdir: Path) -> None:
        token = pool_token(sdir, "worker")
        assert await served_name(client, token) == WORKER_CONFIG
        store.update_status("MachineConfigPool", "worker",
                            {"configuration": {"name": WORKER_CONFIG}, "updatedMachineCount": 1})
        assert await served_name(client, token) == WORKER_CONFIG_NEW
        # No rendered config for a pool yet: 404, one line.
        resp = await client.get("/config/infra", headers=bearer(pool_token(sdir, "infra")))
        assert resp.status == 404 and (await resp.text()).count("\n") == 1

    run(tmp_path, scenario)


def test_advertise_url_and_ca(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text(CA_PEM)

    async def scenario(client: TestClient, state: ServerState, store: Store, sdir: Path) -> None:
        resp = await client.get("/config/master", headers=bearer(pool_token(sdir, "master")))
        creds, _ = credentials_of(json.loads(await resp.read()))
        assert creds["server"] == "https://mcs.example:22623" and creds["ca"] == CA_PEM
        assert creds["pool"] == "master"

    run(tmp_path, scenario, advertise_url="https://mcs.example:22623/", ca=ca)


def test_host_header_decides_server_url_and_is_checked(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServerState, store: Store, sdir: Path) -> None:
        token = pool_token(sdir, "worker")
        for host in ("mcs.example:22624", "[::1]:22624", "10.0.0.5"):
            resp = await client.get("/config/worker", headers={**bearer(token), "Host": host})
            creds, _ = credentials_of(json.loads(await resp.read()))
            assert creds["server"] == f"http://{host}"
        resp = await client.get("/config/worker", headers={**bearer(token), "Host": "evil/x y"})
        assert resp.status == 400

    run(tmp_path, scenario)


def test_token_file_still_accepted(tmp_path: Path) -> None:
    token_file = tmp_path / "extra-tokens"
    token_file.write_text("worker extra-token-123\n")

    async def scenario(client: TestClient, state: ServerState, store: Store, sdir: Path) -> None:
        assert (await client.get("/config/worker", headers=bearer("extra-token-123"))).status == 200
        assert (await client.get("/config/master", headers=bearer("extra-token-123"))).status == 401

    run(tmp_path, scenario, token_file=token_file)


def test_no_token_in_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario(client: TestClient, state: ServerState, store: Store, sdir: Path) -> None:
        token = pool_token(sdir, "worker")
        await client.get("/config/worker", headers=bearer(token))
        await client.get(f"/config/worker?token={token}", headers=bearer(token))
        assert token not in caplog.text

    run(tmp_path, scenario)
    assert "created bootstrap tokens" in caplog.text


def test_pointer_reads_token_from_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sdir = tmp_path / "state"
    sdir.mkdir()
    ca = tmp_path / "ca.crt"
    ca.write_text(CA_PEM)
    out = io.BytesIO()

    class Stdout:
        buffer = out

        def flush(self) -> None:
            pass

    monkeypatch.setattr(sys, "stdout", Stdout())
    url = "https://mcs.example:22623/config/worker"
    assert cli.main(["pointer", "--url", url, "--ca", str(ca), "--state", str(sdir)]) == 0
    token = pool_token(sdir, "worker")  # created by `mcs pointer` since no server ran yet
    pointer = json.loads(out.getvalue())
    merge = pointer["ignition"]["config"]["merge"][0]
    assert merge["source"] == url
    assert merge["httpHeaders"] == [{"name": "Authorization", "value": f"Bearer {token}"}]
    # The same token again, and --pool overrides the URL's last part.
    out.seek(0)
    out.truncate()
    assert cli.main(["pointer", "--url", url, "--ca", str(ca), "--state", str(sdir), "--pool", "master"]) == 0
    value = json.loads(out.getvalue())["ignition"]["config"]["merge"][0]["httpHeaders"][0]["value"]
    assert value == f"Bearer {pool_token(sdir, 'master')}" and value != f"Bearer {token}"
    assert stat.S_IMODE(os.stat(sdir / "tokens").st_mode) == 0o600
