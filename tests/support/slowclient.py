"""A client that sends its request one byte at a time (slowloris), for the server's timeout tests."""
from __future__ import annotations

import socket


def trickle_until_closed(sock: socket.socket, data: bytes) -> bool:
    """Send `data` a byte at a time, reading between bytes; True once the server hangs up."""
    for i in range(len(data)):
        try:
            sock.sendall(data[i:i + 1])
            sock.settimeout(0.2)
            if sock.recv(1024) == b"":
                return True
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return True
    return False
