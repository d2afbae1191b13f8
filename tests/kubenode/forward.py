"""A TCP forwarder from host loopback into a test-made network namespace (runs as a script).

    python tests/kubenode/forward.py LOCAL_PORT NETNS_PATH HOST PORT

Binds 127.0.0.1:LOCAL_PORT in the caller's namespace, then enters NETNS_PATH (setns) so every
connection it opens to HOST:PORT starts inside that namespace: the tests reach the control plane
without an address of the namespace ever being routed on the host. Standalone (no repo imports).
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                sock.shutdown(how)
            except OSError:
                pass


def _serve(client: socket.socket, host: str, port: int) -> None:
    try:
        upstream = socket.create_connection((host, port), timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    back.start()
    _pump(client, upstream)
    back.join()
    client.close()
    upstream.close()


def main(argv: list[str]) -> int:
    local, netns, host, port = int(argv[0]), argv[1], argv[2], int(argv[3])
    # die with the test process, whatever kills it
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", local))
    listener.listen(128)
    fd = os.open(netns, os.O_RDONLY)
    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
        print(f"forward: setns {netns}: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
        return 1
    os.close(fd)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_serve, args=(client, host, port), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
