"""mcd.reboot_lock, the daemon's FleetLock client, against `mcs start`'s FleetLock (a real
subprocess over HTTPS on loopback) and against a server that answers garbage."""
from __future__ import annotations

import http.server
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from machineconfig import constants as C
from mcd.reboot_lock import RebootLock, RebootLockError, RebootSlotBusy
from tests.unit.server.test_fleetlock import FleetLockClient
from tests.unit.server.test_node_api_security import running


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


def test_the_daemon_waits_for_a_slot_before_a_reboot_and_gives_it_back_once_done(
        tmp_path: Path) -> None:
    """`mcd start --fleetlock`: a rebooting update waits (nothing drained or written) while a
    Zincati host holds the worker group's only slot, takes it once free, and the daemon that
    comes back after the reboot reports steady state once Done; a rebootless update takes none."""
    from tests.unit.daemon.test_mcd_daemon import (A, B_RELOAD, B_REBOOT, CUR, DES, STATE, ann,
                                            cluster, lay_down)
    from tests.unit.daemon.test_mcd_daemon import FAST, NODE
    from tests.unit.daemon.test_mcd_update import FakeSystemd
    from mcd.daemon import Daemon

    root = tmp_path / "root"
    root.mkdir()
    with running(tmp_path / "mcs") as srv:
        base = srv.https + "/fleetlock"
        lock = RebootLock(base, NODE, ca_pem=srv.ca_file.read_bytes())
        zincati = FleetLockClient(base, srv.ca_file, "fcos-1")
        assert zincati.lock()[0] == 200
        lay_down(root, A)
        api = cluster(A, B_RELOAD, B_REBOOT, current="rendered-worker-a",
                      desired="rendered-worker-a")
        systemd = FakeSystemd()
        d = Daemon(api, NODE, systemd, root=root, timeouts=FAST, reboot_lock=lock)
        d.sync()  # Done in A: steady state reported (nothing held)
        assert ann(api)[STATE] == "Done"
        api.set_annotations(NODE, {DES: "rendered-worker-b"})
        api.rendered["rendered-worker-b"] = B_RELOAD  # rebootless: no slot needed
        d.sync()
        assert ann(api)[CUR] == "rendered-worker-b" and ann(api)[STATE] == "Done"
        assert [h.holder for h in srv.store.list_reboot_locks()] == ["fcos-1"]

        # a rebooting update to C waits for the slot
        reboot = dict(B_REBOOT, metadata={"name": "rendered-worker-c"})
        api.rendered["rendered-worker-c"] = reboot
        api.set_annotations(NODE, {DES: "rendered-worker-c"})
        worker = threading.Thread(target=d.sync)
        worker.start()
        deadline = time.monotonic() + 10
        while "WaitingForRebootSlot" not in api.reasons() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "WaitingForRebootSlot" in api.reasons()
        assert ann(api).get(C.DESIRED_DRAIN_ANNOTATION) != "drain-rendered-worker-c"
        assert not any(call[0] == "Reboot" for call in systemd.calls)
        assert zincati.unlock()[0] == 200
        worker.join(20)
        assert not worker.is_alive()
        assert systemd.calls[-1] == ("Reboot", "Node will reboot into config rendered-worker-c")
        assert [h.holder for h in srv.store.list_reboot_locks()] == [NODE]
        assert zincati.lock()[0] == 409  # the node's slot until it is back
        # the machine comes back: a new daemon process, Done in C, steady state
        resumed = Daemon(api, NODE, systemd, root=root, timeouts=FAST, reboot_lock=lock)
        resumed.sync()
        assert ann(api)[STATE] == "Done" and ann(api)[CUR] == "rendered-worker-c"
        assert srv.store.list_reboot_locks() == []
        assert zincati.lock()[0] == 200


def test_a_daemon_waiting_for_a_slot_stops_on_sigterm(tmp_path: Path) -> None:
    from tests.unit.daemon.test_mcd_daemon import A, B_REBOOT, DES, ann, cluster, lay_down
    from tests.unit.daemon.test_mcd_daemon import FAST, NODE
    from tests.unit.daemon.test_mcd_update import FakeSystemd
    from mcd.daemon import Daemon

    root = tmp_path / "root"
    root.mkdir()
    with running(tmp_path / "mcs") as srv:
        base = srv.https + "/fleetlock"
        assert FleetLockClient(base, srv.ca_file, "fcos-1").lock()[0] == 200
        lay_down(root, A)
        api = cluster(A, B_REBOOT, current="rendered-worker-a", desired="rendered-worker-a")
        systemd = FakeSystemd()
        d = Daemon(api, NODE, systemd, root=root, timeouts=FAST,
                   reboot_lock=RebootLock(base, NODE, ca_pem=srv.ca_file.read_bytes()))
        d.sync()
        api.set_annotations(NODE, {DES: "rendered-worker-b"})
        worker = threading.Thread(target=d.sync)
        worker.start()
        time.sleep(1)
        d.stop_requested.set()  # what SIGTERM does while the daemon is not updating
        worker.join(10)
        assert not worker.is_alive()
        assert ann(api)[C.CURRENT_CONFIG_ANNOTATION] == "rendered-worker-a"
        assert not any(call[0] == "Reboot" for call in systemd.calls)
