"""systemd's readiness protocol (sd_notify) with the standard library: one datagram to
$NOTIFY_SOCKET; a no-op when the program does not run under a Type=notify unit.

Shared by the three programs: mcc (READY after its first pass), mcs (READY once it listens) and
mcd (READY, STOPPING).
"""
from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(message: str) -> bool:
    """Send e.g. "READY=1" or "STATUS=..."; True when a socket took it."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(5.0)
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as err:
        log.warning("sd_notify %s failed: %s", message.split("=", 1)[0], err)
        return False
    return True
