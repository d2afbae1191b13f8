"""The HTTP application in-process: routes, status codes, one-line errors, HEAD, ETag/304, gzip,
token auth and scoping, cache behaviour, metrics, and logs free of secrets.
"""
from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from mcs.app import make_app
from mcs.state import ServerState
from mcs.auth import TokenAuth, bearer_token, parse_tokens, TokenFileError
from mcs.options import BootstrapOptions
from mcs.state import build_state
from tests.unit.server.test_mcs_layout import (
    WORKER_CONFIG, WORKER_CONFIG_NEW, ignition_config, machine_config, pool, write_layout, write_yaml,
)

IGN = "application/vnd.coreos.ignition+json"
V32 = {"Accept": f"{IGN};version=3.2.0, */*;q=0.1", "Accept-Encoding": "identity"}
PLAIN = {"Accept-Encoding": "identity"}
TOKEN_A = "tokA-7f3c9d2e1b"
TOKEN_B = "tokB-0a1b2c3d4e"

Scenario = Callable[[TestClient, ServerState, Path], Awaitable[None]]


def run(tmp_path: Path, scenario: Scenario, tokens: str | None = None) -> None:
    async def main() -> None:
        base, kc = write_layout(tmp_path)
        state = build_state(BootstrapOptions(base, kc), guard=None)
        if tokens is not None:
            token_file = tmp_path / "tokens"
            token_file.write_text(tokens)
            state.auth = TokenAuth(token_file, check_interval=0)
        # As in `mcs bootstrap`: aiohttp's own access log (it prints query strings) is off.
        server = TestServer(make_app(state))
        await server.start_server(access_log=None)
        async with TestClient(server, auto_decompress=False) as client:
            await scenario(client, state, base)

    asyncio.run(main())


async def one_line_error(resp: ClientResponse, status: int) -> str:
    assert resp.status == status
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    assert text.endswith("\n") and text.count("\n") == 1 and len(text) > 1, text
    return text


def test_get_default_version_is_22(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServerState, base: Path) -> None:
        resp = await client.get("/config/worker", headers=PLAIN)
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        body = await resp.read()
        assert int(resp.headers["Content-Length"]) == len(body)
        assert json.loads(body)["ignition"]["version"] == "2.2.0"
        assert resp.headers["ETag"].startswith('"') and resp.headers["Vary"] == "Accept, Accept-Encoding"
        assert resp.headers["Server"] == "machine-config-server"

    run(tmp_path, scenario)


@pytest.mark.parametrize("version", ["2.2.0", "3.0.0", "3.1.0", "3.2.0", "3.3.0", "3.4.0", "3.5.0", "3.6.0"])
def test_get_each_version(tmp_path: Path, version: str) -> None:
    async def scenario(client: TestClient, state: ServerState, base: Path) -> None:
        resp = await client.get("/config/worker", headers={"Accept": f"{IGN};version={version}", **PLAIN})
        assert resp.status == 200
        assert json.loads(await resp.read())["ignition"]["version"] == version

    run(tmp_path, scenario)


def test_head_has_headers_only(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServerState, base: Path) -> None:
        get = await client.get("/config/worker", headers=V32)
        body = await get.read()
        head = await client.head("/config/worker", headers=V32)
        assert head.status == 200
        assert await head.read() == b""
        assert head.headers["Content-Length"] == str(len(body))
        assert head.headers["ETag"] == get.headers["ETag"]
        health = await client.head("/healthz")
        assert health.status == 200 and health.headers["Content-Length"] == "0"

    run(tmp_path, scenario)


def test_etag_and_304(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServerState, base: Path) -> None:
        first = await client.get("/config/worker", headers=V32)
        etag = first.headers["ETag"]
        again = await client.get("/config/worker", headers={**V32, "If-None-Match": etag})
        assert again.status == 304 and await again.read() == b"" and again.headers["ETag"] == etag
        listed = await client.get("/config/worker", headers={**V32, "If-None-Match": f'"nope", {etag}'})
        assert listed.status == 304
        other = await client.get("/config/worker", headers={**V32, "If-None-Match": '"other"'})
        assert other.status == 200
        # Another version is another representation with its own tag.
        v35 = await client.get("/config/worker", headers={"Accept": f"{IGN};version=3.5.0", **PLAIN})
        assert v35.headers["ETag"] != etag
        # A new rendered config on disk: new bytes, new tag, the old tag no longer matches.
        write_yaml(base / "machine-configs" / f"{WORKER_CONFIG_NEW}.yaml",
                   machine_config(WORKER_CONFIG_NEW, ignition_config()))
        write_yaml(base / "machine-pools" / "worker.yaml", pool("worker", WORKER_CONFIG_NEW))
        changed = await client.get("/config/worker", headers={**V32, "If-None-Match": etag})
        assert changed.status == 200 and changed.headers["ETag"] != etag
        assert WORKER_CONFIG_NEW.encode() in await changed.read()

    run(tmp_path, scenario)


def test_gzip_when_accepted(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServerState, base: Path) -> None:
        plain = await client.get("/config/worker", headers=V32)
        plain_body = await plain.read()
        gz = await client.get("/config/worker", headers={**V32, "Accept-Encoding": "gzip"})
        assert gz.headers["Content-Encoding"] == "gzip"
        raw = await gz.read()
        assert len(raw) < len(plain_body) and gzip.decompress(raw) == plain_body
        assert gz.headers["ETag"] != plain.headers["ETag"]
        cond = await client.get("/config/worker", headers={**V32, "Accept-Encoding": "gzip",
                                                           "If-None-Match": gz.headers["ETag"]})
        assert cond.status == 304
        refused = await client.get("/config/worker", headers={**V32, "Accept-Encoding": "gzip;q=0"})
        assert "Content-Encoding" not in refused.headers
        go_client = await client.get("/config/worker", headers={**V32, "Accept-Encoding": "deflate, gzip;q=0.5"})
        assert go_client.headers["Content-Encoding"] == "gzip"

    run(tmp_path, scenario)


def test_not_found_and_methods(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServerState, base: Path) -> None:
        text = await one_line_error(await client.get("/config/infra"), 404)
        assert "infra" in text
        resp = await client.post("/config/worker", data=b"x")
        await one_line_error(resp, 405)
        assert resp.headers["Allow"] == "GET, HEAD"
        await one_line_error(await client.put("/healthz"), 405)
        await one_line_error(await client.delete("/anything"), 405)
        await one_line_error(await client.get("/anything"), 404)
        await one_line_error(await client.get("/"), 404)
        await one_line_error(await client.request("OPTIONS", "/config/worker"), 405)
        await one_line_error(await client.get("/config/worker", headers={"Accept": f"{IGN};version=4.0.0"}), 400)
        health = await client.get("/healthz")
        assert health.status == 200 and await health.read() == b""
        assert (await client.get("/config/worker/", headers=PLAIN)).status == 200

    run(tmp_path, scenario)


@pytest.mark.parametrize("path", [
    "/config/", "/config/Worker", "/config/-worker", "/config/worker-", "/config/wor_ker", "/config/a.b",
    "/config/x/worker", "/config/..%2F..%2Fetc%2Fpasswd", "/config/%2e%2e", "/config/worker%00",
    "/config/" + "a" * 254, "/config/worker//", "/config/w%20orker",
])
def test_invalid_pool_names(tmp_path: Path, path: str) -> None:
    async def scenario(client: TestClient, state: ServerState, base: Path) -> None:
        resp = await client.get(path)
        assert resp.status in (400, 404)
        await one_line_error(resp, resp.status)

    run(tmp_path, scenario)


def test_traversal_never_reads_outside(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServerState, base: Path) -> None:
        (base / "secret.yaml").write_text("apiVersion: v1\n")
        for path in ("/config/../secret", "/config/..%2Fsecret", "/config/%2E%2E%2Fsecret"):
            resp = await client.get(path)
            assert resp.status in (400, 404), path
            assert b"apiVersion" not in await resp.read()

    run(tmp_path, scenario)


TOKENS = f"# pool token\nworker {TOKEN_A}\nmaster {TOKEN_A}\n\nworker {TOKEN_B}\n"


def test_tokens_required_and_scoped(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServerState, base: Path) -> None:
        def auth(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}", **PLAIN}

        resp = await client.get("/config/worker")
        await one_line_error(resp, 401)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await client.get("/config/worker", headers=auth(TOKEN_A))).status == 200
        assert (await client.get("/config/master", headers=auth(TOKEN_A))).status == 200
        assert (await client.get("/config/worker", headers=auth(TOKEN_B))).status == 200
        await one_line_error(await client.get("/config/master", headers=auth(TOKEN_B)), 401)  # not its pool
        await one_line_error(await client.get("/config/worker", headers=auth("wrong")), 401)
        await one_line_error(await client.get("/config/worker", headers={"Authorization": f"Basic {TOKEN_A}"}), 401)
        await one_line_error(await client.get("/config/worker", headers={"Authorization": "Bearer"}), 401)
        assert (await client.get("/config/worker", headers={"Authorization": f"bearer {TOKEN_A}"})).status == 200
        # Unknown pools look the same as forbidden ones: no pool enumeration without a token.
        await one_line_error(await client.get("/config/infra", headers=auth(TOKEN_A)), 401)
        # The token query parameter of MCO's old provisioning-token idea is not a credential.
        await one_line_error(await client.get(f"/config/worker?token={TOKEN_A}"), 401)
        # Health and metrics stay open for probes and scrapers.
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/metrics")).status == 200
        # The file is re-read when it changes.
        (tmp_path / "tokens").write_text("worker newtoken-123\n")
        assert (await client.get("/config/worker", headers=auth("newtoken-123"))).status == 200
        await one_line_error(await client.get("/config/worker", headers=auth(TOKEN_A)), 401)
        # A broken rewrite keeps the previous tokens.
        (tmp_path / "tokens").write_text("worker\n")
        assert (await client.get("/config/worker", headers=auth("newtoken-123"))).status == 200

    run(tmp_path, scenario, tokens=TOKENS)


def test_token_file_parsing() -> None:
    assert set(parse_tokens(TOKENS)) == {"worker", "master"}
    assert len(parse_tokens(TOKENS)["worker"]) == 2
    with pytest.raises(TokenFileError, match="line 1") as e:
        parse_tokens("worker a b\n")
    assert "a b" not in str(e.value)
    with pytest.raises(TokenFileError, match="invalid pool"):
        parse_tokens("../x tok\n")
    assert bearer_token("Bearer  abc ") == "abc" and bearer_token("Token abc") is None and bearer_token(None) is None


def test_concurrent_misses_build_once(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServerState, base: Path) -> None:
        responses = await asyncio.gather(*(client.get("/config/worker", headers=V32) for _ in range(20)))
        bodies = {await r.read() for r in responses}
        assert len(bodies) == 1 and all(r.status == 200 for r in responses)
        assert state.cache.builds == 1
        await client.get("/config/worker", headers=V32)
        assert state.cache.builds == 1
        # Touching an input (here the kubeconfig) invalidates.
        (base.parent / "kubeconfig").write_bytes(b"apiVersion: v1\nkind: Config\n")
        await client.get("/config/worker", headers=V32)
        assert state.cache.builds == 2

    run(tmp_path, scenario)


def test_server_error_is_one_line_500(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServerState, base: Path) -> None:
        (base / "controller-config" / "machine-config-controller.yaml").unlink()
        text = await one_line_error(await client.get("/config/worker"), 500)
        assert "controller config" in text
        cfg = ignition_config(should_not_exist=["mitigations=off"])
        write_yaml(base / "machine-configs" / f"{WORKER_CONFIG}.yaml", machine_config(WORKER_CONFIG, cfg))
        write_yaml(base / "controller-config" / "machine-config-controller.yaml",
                   {"kind": "ControllerConfig", "spec": {}})
        text = await one_line_error(await client.get("/config/worker", headers=V32), 500)
        assert "shouldNotExist" in text
        assert (await client.get("/config/worker", headers={"Accept": f"{IGN};version=3.3.0"})).status == 200

    run(tmp_path, scenario)


def test_metrics(tmp_path: Path) -> None:
    async def scenario(client: TestClient, state: ServerState, base: Path) -> None:
        await client.get("/config/worker", headers=V32)
        await client.get("/config/worker", headers=V32)
        await client.get("/config/worker")
        await client.get("/config/nosuchpool")
        await client.get("/config/Bad")
        resp = await client.get("/metrics")
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
        assert 'mcs_config_requests_total{code="200",pool="worker",version="3.2.0"} 2.0' in text
        assert 'mcs_config_requests_total{code="200",pool="worker",version="2.2.0"} 1.0' in text
        assert 'mcs_config_requests_total{code="404",pool="_unknown",version="2.2.0"} 1.0' in text
        assert 'mcs_config_requests_total{code="404",pool="_unknown",version=""} 1.0' in text
        assert "nosuchpool" not in text
        assert 'mcs_http_request_duration_seconds_bucket{le="0.001",route="config"}' in text
        assert 'mcs_config_builds_total{pool="worker",version="3.2.0"} 1.0' in text
        assert (await client.post("/metrics")).status == 405

    run(tmp_path, scenario)


def test_logs_hold_no_secret(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario(client: TestClient, state: ServerState, base: Path) -> None:
        await client.get("/config/worker", headers={"Authorization": f"Bearer {TOKEN_A}"})
        await client.get(f"/config/worker?token={TOKEN_B}", headers={"Authorization": f"Bearer {TOKEN_B}x"})
        await client.get(f"/config/master?token={TOKEN_A}")
        (tmp_path / "tokens").write_text(f"worker {TOKEN_A} extra\n")
        await client.get("/config/worker", headers={"Authorization": f"Bearer {TOKEN_A}"})

    run(tmp_path, scenario, tokens=TOKENS)
    assert caplog.records, "expected access log lines"
    for secret in (TOKEN_A, TOKEN_B, "s3cr3t-bootstrap-token"):
        assert secret not in caplog.text


def test_log_lines_cannot_be_forged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mcs.access")

    async def scenario(client: TestClient, state: ServerState, base: Path) -> None:
        await client.get("/config/worker%0A2026-01-01%20INFO%20forged")

    run(tmp_path, scenario)
    lines = [r.getMessage() for r in caplog.records if r.name == "mcs.access"]
    assert lines and all("\n" not in line for line in lines)
