"""mcd.reboot_lock, the daemon's FleetLock client, against `mcs start`'s FleetLock (a real
subprocess over HTTPS on loopback) and against a server that answers garbage."""
from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mcd.reboot_lock import RebootLock, RebootLockError, RebootSlotBusy
from tests.unit.test_fleetlock import FleetLockClient
from tests.unit.test_node_api_security import running


def test_takes_shares_and_gives_back_a_slot_with_mcs(tmp_path: Path) -> None:
    with running(tmp_path) as srv:
        base = srv.https + "/fleetlock"
        node = RebootLock(base, "worker-1", ca_pem=srv.ca_file.read_bytes())
        zincati = FleetLockClient(base, srv.ca_file, "c988d2509fdf4cdcbed39037c56406fb")
        node.acquire()
        node.acquire()  # recursive
        assert zincati.lock()[0] == 409  # the worker pool's one slot is the daemon's
        node.release()
        assert zincati.lock()[0] == 200
        with pytest.raises(RebootSlotBusy, match=r"refused a reboot slot of group default "
                                                  r"\(409 failed_lock_semaphore_full: all 1 "
                                                  r"reboot slots of pool worker are taken"):
            node.acquire()
        node.release()  # not held: still fine
        other_pool = RebootLock(base, "worker-1", group="nosuchpool",
                                ca_pem=srv.ca_file.read_bytes())
        with pytest.raises(RebootSlotBusy, match=r"\(4\d\d \w+: "):
            other_pool.acquire()


def test_refuses_what_it_should_not_send(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="an https:// URL is required"):
        RebootLock("http://127.0.0.1:1/fleetlock", "n1")
    with pytest.raises(ValueError, match="--fleetlock-group"):
        RebootLock("https://127.0.0.1:1/fleetlock", "n1", group="a b")
    with pytest.raises(ValueError, match="--fleetlock-id"):
        RebootLock("https://127.0.0.1:1/fleetlock", "n 1")


@contextmanager
def answering(tmp_path: Path, status: int, body: bytes) -> Iterator[tuple[str, bytes]]:
    """An HTTPS server answering every POST with `status` and `body`."""
    from tests.e2e.cluster import make_tls
    ca, cert, key = make_tls(tmp_path)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}/fleetlock", ca.read_bytes()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_a_hostile_server_gives_one_bounded_line(tmp_path: Path) -> None:
    with answering(tmp_path, 500, b"<html>\n" + b"x" * 200_000) as (url, ca):
        with pytest.raises(RebootSlotBusy) as err:
            RebootLock(url, "n1", ca_pem=ca).acquire()
        assert "\n" not in str(err.value) and len(str(err.value)) < 400, str(err.value)
        with pytest.raises(RebootLockError, match="refused steady-state"):
            RebootLock(url, "n1", ca_pem=ca).release()
    with answering(tmp_path, 200, b"") as (url, _):
        with pytest.raises(RebootLockError, match="CERTIFICATE_VERIFY_FAILED"):
            RebootLock(url, "n1").acquire()  # not the system's CA
