"""The server's TLS context: minimum TLS 1.2, AEAD cipher suites only, HTTP/1.1 only, certificate and
key reloaded without a restart when their files change (new handshakes get the new pair; open
connections keep theirs).
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

from machineconfig.atomicfile import Signature, stat_signature

log = logging.getLogger(__name__)


def _signature(path: Path) -> Signature | None:
    try:
        return stat_signature(path)
    except OSError:
        return None


# TLS 1.2 suites offered: forward-secret key exchange with AEAD ciphers only (no CBC, whose MAC-then-
# encrypt construction is what padding-oracle attacks go after). TLS 1.3 suites are all AEAD and are
# configured apart from this list.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"


def new_server_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


class ReloadingTLS:
    """Owns one SSLContext; `check()` loads a changed cert/key pair into it once the pair is valid."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert = cert
        self.key = key
        self.context = new_server_context()
        self.context.load_cert_chain(str(cert), str(key))
        self._signature = (_signature(cert), _signature(key))
        self._failed: object = None
        self.reloads = 0

    def check(self) -> bool:
        """Reload if either file changed; True when a new pair is now in use."""
        signature = (_signature(self.cert), _signature(self.key))
        if signature == self._signature:
            return False
        try:
            # Validate the pair on a scratch context first: a half-written replacement (new cert,
            # old key) must not break the live one.
            new_server_context().load_cert_chain(str(self.cert), str(self.key))
            # Loading into the live context changes what every new handshake presents.
            self.context.load_cert_chain(str(self.cert), str(self.key))
        except (OSError, ssl.SSLError) as e:
            if self._failed == signature:
                return False  # already reported; wait for the files to change again
            self._failed = signature
            log.warning("TLS certificate/key changed but cannot be loaded yet (%s); keeping the old pair",
                        type(e).__name__)
            return False
        self._signature = signature
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.cert)
        return True

    async def watch(self, interval: float = 1.0) -> None:
        """Poll the two files until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.check()
