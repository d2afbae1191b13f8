"""The daemon as a FleetLock client (Zincati's reboot-coordination protocol): with `mcd start
--fleetlock URL`, a reboot slot is taken before a disruptive update (drain or reboot) and given
back once the node is Done, so the daemon shares one reboot budget with Zincati hosts and any
FleetLock server (this project's `mcs`, Airlock, ...).

    POST URL/v1/pre-reboot    {"client_params": {"id": ID, "group": GROUP}}   take (recursive)
    POST URL/v1/steady-state  same body                                       give back

with the header `fleet-lock-protocol: true`; any status but 200 is a refusal whose JSON body is
`{kind, value}`. Only https URLs are accepted (the server's CA from `--fleetlock-ca` or the
system's), answers are bounded in size and time.
"""
from __future__ import annotations

import http.client
import json
import logging
import re
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from machineconfig.errors import MachineConfigError

log = logging.getLogger(__name__)

PROTOCOL_HEADER = "fleet-lock-protocol"
MAX_ANSWER = 64 * 1024
TIMEOUT = 30.0
_GROUP = re.compile(r"^[a-zA-Z0-9.-]+$")


class RebootLockError(MachineConfigError):
    """The slot could not be taken or given back; `str()` is one line for a reason."""

    temporary = True  # the slot is asked for again


class RebootSlotBusy(RebootLockError):
    """Every slot of the group is held (the server's `failed_lock_semaphore_full`, or any other
    refusal of pre-reboot): wait and ask again."""


@dataclass(frozen=True)
class RebootLock:
    url: str  # the deployment's base URL, e.g. https://mcs.example.com:22623/fleetlock
    id: str  # this node's client id (default: the node name)
    group: str = "default"
    ca_pem: bytes | None = None  # the server's CA; None: the system's trust store
    timeout: float = TIMEOUT

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"--fleetlock {self.url!r}: an https:// URL is required")
        if not _GROUP.match(self.group):
            raise ValueError(f"--fleetlock-group {self.group!r}: letters, digits, '.' and '-'")
        if not self.id or len(self.id) > 253 or any(not 0x21 <= ord(c) <= 0x7e for c in self.id):
            raise ValueError(f"--fleetlock-id {self.id!r}: 1-253 printable characters")

    def acquire(self) -> None:
        """Take a slot (or keep the one held); RebootSlotBusy when none is free."""
        status, kind, value = self._post("/v1/pre-reboot")
        if status != 200:
            raise RebootSlotBusy(f"FleetLock {self.url} refused a reboot slot of group "
                                 f"{self.group} ({status} {kind}: {value})")
        log.info("FleetLock: reboot slot of group %s taken as %s", self.group, self.id)

    def release(self) -> None:
        """Give the slot back (a server answers 200 whether it was held or not)."""
        status, kind, value = self._post("/v1/steady-state")
        if status != 200:
            raise RebootLockError(f"FleetLock {self.url} refused steady-state ({status} "
                                  f"{kind}: {value})")
        log.info("FleetLock: steady state reported for %s (group %s)", self.id, self.group)

    def _post(self, endpoint: str) -> tuple[int, str, str]:
        parts = urlsplit(self.url)
        context = ssl.create_default_context(
            cadata=self.ca_pem.decode() if self.ca_pem else None)
        conn = http.client.HTTPSConnection(parts.hostname or "", parts.port or 443,
                                           timeout=self.timeout, context=context)
        body = json.dumps({"client_params": {"id": self.id, "group": self.group}}).encode()
        try:
            conn.request("POST", parts.path.rstrip("/") + endpoint, body=body,
                         headers={"Content-Type": "application/json", PROTOCOL_HEADER: "true"})
            answer = conn.getresponse()
            text = answer.read(MAX_ANSWER + 1)
        except (OSError, http.client.HTTPException, ssl.SSLError) as err:
            raise RebootLockError(f"FleetLock {self.url}{endpoint}: {err}") from err
        finally:
            conn.close()
        if answer.status == 200:
            return 200, "", ""
        kind, value = "unknown", text[:200].decode("utf-8", "replace").strip()
        try:
            error = json.loads(text) if len(text) <= MAX_ANSWER else None
        except ValueError:
            error = None
        if isinstance(error, dict):
            kind, value = str(error.get("kind", kind))[:100], str(error.get("value", value))[:500]
        return answer.status, kind, " ".join(value.split())
