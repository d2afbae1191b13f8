"""The Debian box's stand-in for kubelet and crio (vagrant/box/files): the served kubelet.service
is Type=notify and runs /usr/bin/kubelet with its real flags, so the stand-in must be ready at
once (READY=1 on $NOTIFY_SOCKET) whatever the flags, and record its start, reload and stop."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

FILES = Path(__file__).resolve().parents[3] / "vagrant/box/files"


def test_the_kubelet_stand_in_is_ready_at_once_and_records_its_life(tmp_path: Path) -> None:
    # /usr/bin/kubelet execs /usr/local/libexec/standin-service: run the latter from the tree
    wrapper = (FILES / "usr/bin/kubelet").read_text()
    assert "exec /usr/local/libexec/standin-service kubelet" in wrapper
    assert os.access(FILES / "usr/bin/kubelet", os.X_OK)
    address = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(30)
        proc = subprocess.Popen(
            [str(FILES / "usr/local/libexec/standin-service"), "kubelet",
             "--config=/etc/kubernetes/kubelet.conf", "--v=2"],
            env={**os.environ, "NOTIFY_SOCKET": address, "STANDIN_EVENTS_DIR": str(tmp_path)})
        try:
            message = sock.recv(4096).decode()
            assert "READY=1" in message.splitlines()
            proc.send_signal(signal.SIGHUP)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
    events = [line.split()[0] for line in (tmp_path / "kubelet.events").read_text().splitlines()]
    assert events[0] == "start" and events[-1] == "stop"
