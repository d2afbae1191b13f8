"""`mcd start` stopped while it is still connecting: a SIGTERM that arrives during the blocking
connect (registration with the node API) is kept, and the daemon exits 0 as soon as the connect
returns, instead of running on until systemd's stop timeout kills it (a `failed` unit).

Seen in CI under load: the kube node harness restarted the node's daemon service and stopped it
again a moment later; the SIGTERM went to the handler that only the connect loop watched, the
daemon's own handler replaced it, and `systemctl stop` waited 90 s for SIGKILL."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.unit.server.test_node_api_security import ROOT, Server, running


class HeldProxy:
    """A loopback TCP forwarder that holds every connection until `release()`: the client's
    request is in flight (its connect blocks) for as long as the test wants."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 443)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connected = threading.Event()
        self.released = threading.Event()
        self.closing = threading.Event()
        self.threads: list[threading.Thread] = []
        self.socks: list[socket.socket] = []
        self._start(self._accept)

    def _start(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self.threads.append(thread)

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connected.set()
            self.released.wait()
            if self.closing.is_set():
                client.close()
                return
            upstream = socket.create_connection(self.target)
            self.socks += [client, upstream]
            self._start(self._pipe, client, upstream)
            self._start(self._pipe, upstream, client)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.closing.set()
        self.released.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() in its thread
        except OSError:
            pass
        self.listener.close()
        for sock in self.socks:
            sock.close()
        for thread in self.threads:
            thread.join(10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with running(tmp_path / "mcs") as srv:
        yield srv


def test_sigterm_while_connecting_stops_the_daemon_once_connected(server: Server,
                                                                  tmp_path: Path) -> None:
    proxy = HeldProxy(server.https)
    root = tmp_path / "root"
    (root / "run/systemd/system").mkdir(parents=True)  # what `--root` asks of a host's root
    credentials = tmp_path / "node-credentials.json"
    credentials.write_text(json.dumps({
        "server": f"https://127.0.0.1:{proxy.port}", "poolToken": server.token("worker"),
        "pool": "worker", "ca": server.ca_file.read_text()}))
    credentials.chmod(0o600)
    log = tmp_path / "mcd.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           # never the host's bus: a daemon that went on past the SIGTERM fails at its D-Bus
           # connection (exit 1) instead of touching the host's systemd
           "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={tmp_path / 'no-bus'}"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mcd.cli", "start", "--root", str(root), "--node", "stopping-0",
             "--credentials", str(credentials), "--metrics-listen", ""],
            stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    try:
        assert proxy.connected.wait(120), "mcd never connected:\n" + log.read_text()
        proc.send_signal(signal.SIGTERM)  # the daemon is inside its blocking connect
        proxy.release()
        try:
            rc = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            raise AssertionError("SIGTERM during the connect was lost: mcd kept running\n"
                                 + log.read_text()[-3000:]) from None
        assert rc == 0, "mcd went on after the SIGTERM:\n" + log.read_text()[-3000:]
        # it did connect (registered), then stopped without starting to follow the node
        assert "registered" in log.read_text(), log.read_text()[-3000:]
        assert "following" not in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proxy.close()
