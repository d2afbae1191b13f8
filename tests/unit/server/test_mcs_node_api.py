"""The node API in-process over a real local store: register with a pool token for a node token,
own record only, daemon-owned annotation keys only, rendered configs, events about oneself, the
long-poll watch (on change, on timeout, capped), one-line errors and no token in the logs.
"""
from __future__ import annotations

import asyncio
import logging
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from machineconfig import constants
from machineconfig.store import Store
from mcs.app import make_app
from mcs.state import ServerState
from mcs.state import build_store_state
from tests.unit.server.test_mcs_layout import MASTER_CONFIG, WORKER_CONFIG
from tests.unit.server.test_mcs_store_mode import WORKER_LABEL, make_store, pool_token, store_options

API = constants.NODE_API_PREFIX
STATE_KEY = constants.MACHINE_CONFIG_DAEMON_STATE_ANNOTATION
REASON_KEY = constants.MACHINE_CONFIG_DAEMON_REASON_ANNOTATION

Scenario = Callable[[TestClient, ServerState, Store, Path], Awaitable[None]]


def run(tmp_path: Path, scenario: Scenario) -> None:
    async def main() -> None:
        store, _, sdir = make_store(tmp_path)
        try:
            state = build_store_state(store_options(sdir), store, guard=None)
            server = TestServer(make_app(state), host="127.0.0.1")
            await server.start_server(access_log=None)
            async with TestClient(server) as client:
                await scenario(client, state, store, sdir)
        finally:
            store.close()  # its background input scan

    asyncio.run(main())


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(client: TestClient, sdir: Path, name: str, pool: str = "worker",
                   labels: dict[str, str] | None = None, proof: str | None = None
                   ) -> tuple[dict[str, Any], str]:
    body: dict[str, Any] = {"name": name, "labels": labels or {}}
    if proof is not None:
        body["token"] = proof
    resp = await client.post(f"{API}/nodes/register", headers=auth(pool_token(sdir, pool)), json=body)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    return body["node"], body["token"]


async def refused(resp: ClientResponse, status: int) -> str:
    assert resp.status == status, await resp.text()
    text = await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain") and text.count("\n") == 1
    return text


# -- tests -------------------------------------------------------------------------------------------

def test_register_gives_node_token_and_pool_labels(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServerState, store: Store, sdir: Path) -> None:
        node, token = await register(client, sdir, "worker-0", labels={"zone": "a"})
        assert node["name"] == "worker-0" and node["labels"] == {"zone": "a", WORKER_LABEL: ""}
        assert store.get_node("worker-0").labels[WORKER_LABEL] == ""
        resp = await client.get(f"{API}/nodes/worker-0", headers=auth(token))
        assert resp.status == 200 and (await resp.json())["name"] == "worker-0"
        # Node tokens are kept hashed, in a private file.
        path = sdir / "node-tokens.json"
        assert token not in path.read_text() and stat.S_IMODE(path.stat().st_mode) == 0o600

    run(tmp_path, scenario)


def test_register_refusals(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServerState, store: Store, sdir: Path) -> None:
        url = f"{API}/nodes/register"
        await refused(await client.post(url, json={"name": "w"}), 401)
        await refused(await client.post(url, headers=auth("wrong"), json={"name": "w"}), 401)
        token = pool_token(sdir, "worker")
        await refused(await client.post(url, headers=auth(token), json={"name": "Bad_Name"}), 400)
        await refused(await client.post(url, headers=auth(token), data=b"{not json"), 400)
        await refused(await client.post(url, headers=auth(token), json={"name": "w", "labels": {"a": 1}}), 400)
        # A node token is not a pool token.
        _, node_token = await register(client, sdir, "worker-0")
        await refused(await client.post(url, headers=auth(node_token), json={"name": "w"}), 401)

    run(tmp_path, scenario)


def test_reregister_replaces_the_token(tmp_path: Path) -> None:
    """Re-registering needs the node's own token (see test_node_api_security for the refusal)."""
    async def scenario(client: TestClient, state: ServerState, store: Store, sdir: Path) -> None:
        _, first = await register(client, sdir, "worker-0")
        store.patch_node_annotations("worker-0", {STATE_KEY: "Done"})
        node, second = await register(client, sdir, "worker-0", proof=first)
        assert second != first and node["annotations"][STATE_KEY] == "Done"
        await refused(await client.get(f"{API}/nodes/worker-0", headers=auth(first)), 401)
        assert (await client.get(f"{API}/nodes/worker-0", headers=auth(second))).status == 200

    run(tmp_path, scenario)


def test_own_record_only(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServerState, store: Store, sdir: Path) -> None:
        _, mine = await register(client, sdir, "worker-0")
        await register(client, sdir, "master-0", pool="master")
        await refused(await client.get(f"{API}/nodes/master-0", headers=auth(mine)), 403)
        await refused(await client.patch(f"{API}/nodes/master-0/annotations", headers=auth(mine),
                                         json={"changes": {STATE_KEY: "Done"}}), 403)
        await refused(await client.get(f"{API}/nodes/worker-0", headers=auth("bad-token")), 401)
        await refused(await client.get(f"{API}/nodes/worker-0"), 401)

    run(tmp_path, scenario)


def test_patch_daemon_owned_keys(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServerState, store: Store, sdir: Path) -> None:
        _, token = await register(client, sdir, "worker-0")
        url = f"{API}/nodes/worker-0/annotations"
        changes = {constants.CURRENT_CONFIG_ANNOTATION: WORKER_CONFIG, STATE_KEY: "Degraded",
                   REASON_KEY: "x" * 2000, constants.DESIRED_DRAIN_ANNOTATION: f"drain-{WORKER_CONFIG}",
                   constants.POST_CONFIG_ACTION_ANNOTATION: "", constants.FIRST_PIVOT_CONFIG_ANNOTATION: WORKER_CONFIG}
        resp = await client.patch(url, headers=auth(token), json={"changes": changes})
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["annotations"] == changes
        resp = await client.patch(url, headers=auth(token), json={"changes": {REASON_KEY: None}})
        assert REASON_KEY not in (await resp.json())["annotations"]
        assert REASON_KEY not in store.get_node("worker-0").annotations
        # Keys the controller owns, or anybody else's, are refused; nothing is written.
        for key in (constants.DESIRED_CONFIG_ANNOTATION, constants.LAST_APPLIED_DRAIN_ANNOTATION, "other"):
            text = await refused(await client.patch(url, headers=auth(token),
                                                    json={"changes": {STATE_KEY: "Done", key: "x"}}), 403)
            assert key in text
        assert store.get_node("worker-0").annotations[STATE_KEY] == "Degraded"
        await refused(await client.patch(url, headers=auth(token), json={"changes": {STATE_KEY: 1}}), 400)
        await refused(await client.patch(url, headers=auth(token), json={"changes": "x"}), 400)

    run(tmp_path, scenario)


def test_desired_config_once_at_bootstrap(tmp_path: Path) -> None:
    """As MCO's daemon does from node-annotations.json: desiredConfig = currentConfig, once."""
    async def scenario(client: TestClient, state: ServerState, store: Store, sdir: Path) -> None:
        _, token = await register(client, sdir, "worker-0")
        url = f"{API}/nodes/worker-0/annotations"
        desired, current = constants.DESIRED_CONFIG_ANNOTATION, constants.CURRENT_CONFIG_ANNOTATION
        # Not some other config than the current one.
        await refused(await client.patch(url, headers=auth(token), json={"changes": {
            current: WORKER_CONFIG, desired: "rendered-worker-other"}}), 403)
        resp = await client.patch(url, headers=auth(token), json={"changes": {
            current: WORKER_CONFIG, desired: WORKER_CONFIG, STATE_KEY: "Done"}})
        assert resp.status == 200 and (await resp.json())["annotations"][desired] == WORKER_CONFIG
        # From then on the controller owns it.
        store.patch_node_annotations("worker-0", {desired: "rendered-worker-next"})
        await refused(await client.patch(url, headers=auth(token), json={"changes": {
            desired: WORKER_CONFIG}}), 403)
        await refused(await client.patch(url, headers=auth(token), json={"changes": {desired: None}}), 403)
        assert store.get_node("worker-0").annotations[desired] == "rendered-worker-next"

    run(tmp_path, scenario)


def test_rendered(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServerState, store: Store, sdir: Path) -> None:
        _, token = await register(client, sdir, "worker-0")
        resp = await client.get(f"{API}/rendered/{WORKER_CONFIG}", headers=auth(token))
        assert resp.status == 200 and (await resp.json())["metadata"]["name"] == WORKER_CONFIG
        await refused(await client.get(f"{API}/rendered/rendered-worker-ffff", headers=auth(token)), 404)
        await refused(await client.get(f"{API}/rendered/{WORKER_CONFIG}"), 401)

    run(tmp_path, scenario)


def test_rendered_only_of_own_pool(tmp_path: Path) -> None:
    """Rendered configs carry pull secrets: a worker's token does not read the master's config,
    unless the controller names it as the node's own current or desired config."""
    async def scenario(client: TestClient, state: ServerState, store: Store, sdir: Path) -> None:
        _, worker = await register(client, sdir, "worker-0")
        _, master = await register(client, sdir, "master-0", pool="master")
        text = await refused(await client.get(f"{API}/rendered/{MASTER_CONFIG}", headers=auth(worker)), 403)
        assert "own pool" in text
        await refused(await client.get(f"{API}/rendered/{WORKER_CONFIG}", headers=auth(master)), 403)
        assert (await client.get(f"{API}/rendered/{MASTER_CONFIG}", headers=auth(master))).status == 200
        # A pool whose name extends another's ("worker-a") is not covered by the shorter one.
        await refused(await client.get(f"{API}/rendered/rendered-worker-a-0123", headers=auth(worker)), 403)
        store.patch_node_annotations("worker-0", {constants.DESIRED_CONFIG_ANNOTATION: MASTER_CONFIG})
        assert (await client.get(f"{API}/rendered/{MASTER_CONFIG}", headers=auth(worker))).status == 200

    run(tmp_path, scenario)


def test_pool_token_cannot_take_over_another_pools_node(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServerState, store: Store, sdir: Path) -> None:
        _, master = await register(client, sdir, "master-0", pool="master")
        resp = await client.post(f"{API}/nodes/register", headers=auth(pool_token(sdir, "worker")),
                                 json={"name": "master-0"})
        text = await refused(resp, 403)
        assert "master-0" in text and "pool master" in text
        # Nothing changed: the master keeps its token and labels.
        assert (await client.get(f"{API}/nodes/master-0", headers=auth(master))).status == 200
        assert WORKER_LABEL not in store.get_node("master-0").labels
        # Re-joining its own pool still works (a reinstalled node), with its own token.
        await register(client, sdir, "master-0", pool="master", proof=master)

    run(tmp_path, scenario)


def test_events_only_about_itself(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServerState, store: Store, sdir: Path) -> None:
        _, token = await register(client, sdir, "worker-0")
        url = f"{API}/events"
        event = {"kind": "Node", "name": "worker-0", "reason": "Reboot", "message": "rebooting", "type": "Normal"}
        assert (await client.post(url, headers=auth(token), json=event)).status == 200
        got = store.list_events(kind="Node", name="worker-0")
        assert [(e.reason, e.message, e.type) for e in got] == [("Reboot", "rebooting", "Normal")]
        await refused(await client.post(url, headers=auth(token), json={**event, "name": "worker-1"}), 403)
        await refused(await client.post(url, headers=auth(token),
                                        json={**event, "kind": "MachineConfigPool", "name": "worker"}), 403)
        await refused(await client.post(url, headers=auth(token), json={**event, "type": "Odd"}), 400)
        await refused(await client.post(url, headers=auth(token), json={**event, "reason": ""}), 400)
        await refused(await client.post(url, json=event), 401)
        assert len(store.list_events(kind="Node")) == 1

    run(tmp_path, scenario)


def test_watch_returns_on_change_and_on_timeout(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServerState, store: Store, sdir: Path) -> None:
        _, token = await register(client, sdir, "worker-0")
        since = store.revision()
        started = time.monotonic()
        resp = await client.get(f"{API}/watch", params={"since": since, "timeout": "0.5"}, headers=auth(token))
        assert (await resp.json()) == {"revision": since} and time.monotonic() - started >= 0.45
        # An old revision returns at once.
        resp = await client.get(f"{API}/watch", params={"since": 0, "timeout": "30"}, headers=auth(token))
        assert (await resp.json())["revision"] == since
        # So does a revision ahead of the store (its state was replaced).
        started = time.monotonic()
        resp = await client.get(f"{API}/watch", params={"since": since + 1000, "timeout": "30"},
                                headers=auth(token))
        assert (await resp.json())["revision"] == since and time.monotonic() - started < 5
        waiter = asyncio.ensure_future(client.get(f"{API}/watch", params={"since": since, "timeout": "30"},
                                                  headers=auth(token)))
        await asyncio.sleep(0.3)
        assert not waiter.done()
        started = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: store.patch_node_annotations("worker-0", {STATE_KEY: "Working"}))
        resp = await asyncio.wait_for(waiter, 10)
        assert (await resp.json())["revision"] > since and time.monotonic() - started < 5
        await refused(await client.get(f"{API}/watch", params={"since": "x"}, headers=auth(token)), 400)
        await refused(await client.get(f"{API}/watch", params={"since": 0}), 401)

    run(tmp_path, scenario)


def test_watch_timeout_is_capped(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServerState, store: Store, sdir: Path) -> None:
        _, token = await register(client, sdir, "worker-0")
        assert state.node_api is not None
        state.node_api.max_watch = 0.3  # stands in for the 300 s cap
        started = time.monotonic()
        resp = await client.get(f"{API}/watch", params={"since": store.revision(), "timeout": "3600"},
                                headers=auth(token))
        assert resp.status == 200 and time.monotonic() - started < 5

    run(tmp_path, scenario)
    assert constants.NODE_API_MAX_WATCH_SECONDS == 300.0


def test_unknown_routes_and_methods(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServerState, store: Store, sdir: Path) -> None:
        _, token = await register(client, sdir, "worker-0")
        await refused(await client.delete(f"{API}/nodes/worker-0", headers=auth(token)), 405)
        await refused(await client.get(f"{API}/nope", headers=auth(token)), 404)
        big = {"kind": "Node", "name": "worker-0", "reason": "R", "message": "x" * 100_000}
        assert (await client.post(f"{API}/events", headers=auth(token), json=big)).status == 413

    run(tmp_path, scenario)


def test_no_token_in_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []

    async def scenario(client: TestClient, state: ServerState, store: Store, sdir: Path) -> None:
        _, token = await register(client, sdir, "worker-0")
        seen.extend([token, pool_token(sdir, "worker")])
        await client.get(f"{API}/watch", params={"since": 0, "token": token}, headers=auth(token))
        await client.get(f"{API}/nodes/worker-1", headers=auth(token))

    run(tmp_path, scenario)
    assert seen and not any(t in caplog.text for t in seen)
    assert "node worker-0 registered into pool worker" in caplog.text
