"""TLS context and certificate reload in-process, and the slow-client connection guard."""
from __future__ import annotations

import ssl
import time
from pathlib import Path

import pytest

from mcs.server import ConnectionGuard
from mcs.tls import ReloadingTLS, new_server_context
from tests.unit.server.test_mcs_server import issue, make_ca, replace


def test_context_refuses_below_tls_12() -> None:
    ctx = new_server_context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_reload_only_a_matching_pair(tmp_path: Path) -> None:
    ca = make_ca()
    cert_pem, key_pem, _ = issue(ca, "one")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    tls = ReloadingTLS(cert, key)
    assert not tls.check()
    new_cert, new_key, _ = issue(ca, "two")
    replace(cert, new_cert)  # cert without its key: not loaded, old pair stays
    assert not tls.check() and tls.reloads == 0
    replace(key, new_key)
    assert tls.check() and tls.reloads == 1
    assert not tls.check()
    replace(cert, b"garbage")
    assert not tls.check()
    cert.unlink()
    assert not tls.check()


def test_missing_files_fail_at_start(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        ReloadingTLS(tmp_path / "nope.crt", tmp_path / "nope.key")


class FakeTransport:
    def __init__(self) -> None:
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


class FakeHandler:
    """What ConnectionGuard sees of a connection: a transport it can abort."""

    def __init__(self) -> None:
        self.transport = FakeTransport()


def test_guard_deadlines() -> None:
    guard = ConnectionGuard(header_timeout=0.0, response_timeout=3600.0)
    idle, busy = FakeHandler(), FakeHandler()
    guard.connection_made(idle)  # type: ignore[arg-type]
    guard.connection_made(busy)  # type: ignore[arg-type]
    guard.request_started(busy)  # ignored: not an aiohttp RequestHandler
    time.sleep(0.01)
    assert guard.sweep() == 2
    assert idle.transport.aborted and busy.transport.aborted
    assert guard.sweep() == 0
