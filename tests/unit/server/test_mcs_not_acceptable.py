"""A config the requested spec cannot express is refused with 406, never silently narrowed (issue 17).

MCO's 3.5 -> 3.4 down-conversion drops LUKS `cex` without a word (its check compares the wrong
type), so a node asking for 3.4 gets a config without the encryption it was meant to have. We
answer 406 with one line naming the field, count it per pool and version, and answer the same
through the fast path (which hands errors to aiohttp) as through aiohttp alone.
"""
from __future__ import annotations

import dataclasses
import http.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from machineconfig.ignition.translate import Inexpressible, translate
from mcs.serve import NotAcceptable, convert
from tests.unit.server.test_mcs_fastpath import IGN, AUTHZ, FAST_TOKEN, InProcessServer, Tls, exchange, \
    split_responses, _request
from tests.unit.server.test_mcs_layout import ignition_config, write_layout

CEX = {"name": "data", "device": "/dev/sdb", "cex": {"enabled": True}}
FIELD = "storage.luks.0.cex.enabled"


def _cex_config() -> dict[str, Any]:
    config = ignition_config()
    config["storage"]["luks"] = [dict(CEX)]
    return config


def test_translation_names_the_field() -> None:
    with pytest.raises(Inexpressible) as err:
        translate(_cex_config(), "3.4.0")
    assert err.value.field == FIELD


@pytest.mark.parametrize("version", ["3.4.0", "3.2.0", "3.0.0", "2.2.0"])
def test_convert_refuses_with_one_line(version: str) -> None:
    with pytest.raises(NotAcceptable) as err:
        convert(_cex_config(), version)
    assert str(err.value) == f"config uses {FIELD}, which spec {version} cannot express"


def test_luks_in_spec_2_names_luks() -> None:
    config = ignition_config()
    config["storage"]["luks"] = [{"name": "data", "device": "/dev/sdb", "clevis": {"tpm2": True}}]
    convert(config, "3.4.0")  # clevis LUKS is fine in 3.4
    with pytest.raises(NotAcceptable, match=r"^config uses storage\.luks, which spec 2\.2\.0 cannot express$"):
        convert(config, "2.2.0")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessServer, InProcessServer, Tls]]:
    root = tmp_path_factory.mktemp("refuse")
    tls = Tls(root)
    base, kc = write_layout(root, _cex_config())
    tokens = root / "tokens"
    tokens.write_text(f"worker {FAST_TOKEN}\n")
    from mcs.options import BootstrapOptions
    options = BootstrapOptions(base, kc, cert=tls.cert, key=tls.key, secure_port=0, insecure_port=0,
                            bind_address="127.0.0.1", token_file=tokens)
    fast = InProcessServer(options).start()
    try:
        plain = InProcessServer(dataclasses.replace(options, fast_path=False)).start()
    except BaseException:
        fast.stop()
        raise
    yield fast, plain, tls
    fast.stop()
    plain.stop()


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("accept", ["3.4.0", "3.1.0", "2.2.0", None])
def test_406_same_on_fast_path_and_aiohttp(servers: tuple[InProcessServer, InProcessServer, Tls],
                                           scheme: str, accept: str | None) -> None:
    fast, plain, tls = servers
    extra = AUTHZ + (f"Accept: {IGN};version={accept}\r\n" if accept else "")
    raw = _request("/config/worker", extra=extra)
    handed = fast.handed_over
    ours, theirs = exchange(fast, scheme, tls, raw), exchange(plain, scheme, tls, raw)
    assert split_responses(ours, raw) == split_responses(theirs, raw)
    [(status, headers, body)] = split_responses(ours, raw)
    assert status == "HTTP/1.1 406 Not Acceptable"
    assert ("Content-Type", "text/plain; charset=utf-8") in headers
    assert body == f"config uses {FIELD}, which spec {accept or '2.2.0'} cannot express\n".encode()
    assert fast.handed_over == handed + 1  # the fast path leaves the answer to aiohttp


def test_newest_spec_is_still_served(servers: tuple[InProcessServer, InProcessServer, Tls]) -> None:
    fast, _, tls = servers
    raw = _request("/config/worker", extra=AUTHZ + f"Accept: {IGN};version=3.5.0\r\n")
    [(status, _, body)] = split_responses(exchange(fast, "http", tls, raw), raw)
    assert status == "HTTP/1.1 200 OK" and b'"cex":{"enabled":true}' in body


def test_refusals_counted_per_pool_and_version_and_not_rebuilt(tmp_path: Path) -> None:
    tls = Tls(tmp_path)
    base, kc = write_layout(tmp_path, _cex_config())
    tokens = tmp_path / "tokens"
    tokens.write_text(f"worker {FAST_TOKEN}\n")
    from mcs.options import BootstrapOptions
    srv = InProcessServer(BootstrapOptions(base, kc, cert=tls.cert, key=tls.key, secure_port=0, insecure_port=0,
                                        bind_address="127.0.0.1", token_file=tokens)).start()
    try:
        host, port = srv.address("http")
        conn = http.client.HTTPConnection(host, port, timeout=20)
        for version in ["3.4.0"] * 3 + ["3.3.0"] * 2:
            conn.request("GET", "/config/worker", headers={"Authorization": f"Bearer {FAST_TOKEN}",
                                                           "Accept": f"{IGN};version={version}"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 406
            conn.close()  # the fast path gave the last connection to aiohttp; start afresh
            conn = http.client.HTTPConnection(host, port, timeout=20)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
    finally:
        srv.stop()
    assert 'mcs_config_not_acceptable_total{pool="worker",version="3.4.0"} 3.0' in text
    assert 'mcs_config_not_acceptable_total{pool="worker",version="3.3.0"} 2.0' in text
    assert 'mcs_config_requests_total{code="406",pool="worker",version="3.4.0"} 3.0' in text
    # One build per version: later requests get the remembered refusal.
    assert 'mcs_config_builds_total{pool="worker",version="3.4.0"} 1.0' in text
    assert 'mcs_config_builds_total{pool="worker",version="3.3.0"} 1.0' in text
