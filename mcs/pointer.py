"""The pointer Ignition config a new machine boots with: merge the pool's config from the server,
trusting the given CA, optionally sending a bearer token (spec 3.5.0, as MCO's PointerConfig).
"""
from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from machineconfig import constants
from machineconfig.errors import MachineConfigError
from machineconfig.ignition.dataurl import encode_base64
from mcs.serve import go_json

log = logging.getLogger(__name__)


class PointerError(MachineConfigError, ValueError):
    """The URL or CA cannot make a usable pointer config."""


def pointer_config(url: str, ca_pem: bytes, token: str | None = None) -> dict[str, Any]:
    """The pointer config as a canonical dict (Go field order)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise PointerError(f"not an http(s) URL: {url!r}")
    if b"-----BEGIN CERTIFICATE-----" not in ca_pem:
        raise PointerError("the CA file holds no PEM certificate")
    merge: dict[str, Any] = {}
    if token:
        if any(c.isspace() for c in token):
            raise PointerError("the token must not contain white space")
        merge["httpHeaders"] = [{"name": "Authorization", "value": f"Bearer {token}"}]
    merge["source"] = url
    return {
        "ignition": {
            "config": {"merge": [merge]},
            "security": {"tls": {"certificateAuthorities": [{"source": encode_base64(ca_pem)}]}},
            "version": constants.INTERNAL_IGNITION_VERSION,
        },
    }


def render_pointer(url: str, ca_pem: bytes, token: str | None = None) -> bytes:
    """Compact JSON as the MCO writes user-data, plus a final newline."""
    return go_json(pointer_config(url, ca_pem, token)) + b"\n"
