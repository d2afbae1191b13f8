"""SSH keys and password hashes of user `core`, the only user MCO manages on a running node.

Keys go to /home/core/.ssh/authorized_keys.d/ignition (0600, core:core); hashes into /etc/shadow.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from mcd.file_writers import FileWriter, WriteError

log = logging.getLogger(__name__)

CORE_USER = "core"
SSH_DIR = "/home/core/.ssh"
AUTHORIZED_KEYS_DIR = f"{SSH_DIR}/authorized_keys.d"
AUTHORIZED_KEYS = f"{AUTHORIZED_KEYS_DIR}/ignition"
SHADOW = "/etc/shadow"
LOCKED_HASH = "*"


def _passwd_entry(writer: FileWriter, name: str) -> list[str] | None:
    for line in writer.fs.read_text("/etc/passwd").splitlines():
        fields = line.split(":")
        if fields[0] == name and len(fields) >= 7:
            return fields
    return None


def write_ssh_keys(writer: FileWriter, users: list[Mapping[str, Any]]) -> None:
    """Every key of every user, one per line, as the single `ignition` fragment of core."""
    entry = _passwd_entry(writer, CORE_USER)
    if entry is None:
        log.warning("user core does not exist: SSH key change ignored")
        return
    uid, gid = int(entry[2]), int(entry[3])
    keys = "".join(f"{key}\n" for user in users for key in user.get("sshAuthorizedKeys") or [])
    try:
        for node_dir in (SSH_DIR, AUTHORIZED_KEYS_DIR):
            # resolved inside the root; a link at the last component is refused, never followed
            writer.fs.makedirs(node_dir, writer.journal.created_dirs)
            # sshd's StrictModes refuses keys in a directory others may write or core does not own
            writer.fs.set_dir_attrs(node_dir, 0o700, uid, gid)
    except OSError as err:
        raise WriteError(f"failed to write file {AUTHORIZED_KEYS}: {err.strerror}") from err
    writer.write_text(AUTHORIZED_KEYS, keys.encode(), 0o600, uid, gid)
    log.info("wrote %d SSH keys for core", keys.count("\n"))


def write_password_hashes(writer: FileWriter, old_users: list[Mapping[str, Any]],
                          new_users: list[Mapping[str, Any]]) -> None:
    """Set each new user's hash; users only in the old config get theirs locked."""
    wanted = {str(u["name"]): str(u.get("passwordHash") or LOCKED_HASH) for u in new_users}
    for user in old_users:
        wanted.setdefault(str(user["name"]), LOCKED_HASH)
    lines = writer.fs.read_text(SHADOW, follow=False).splitlines()
    changed = False
    for index, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] in wanted and fields[1] != wanted[fields[0]]:
            fields[1] = wanted[fields[0]]
            lines[index] = ":".join(fields)
            changed = True
            log.info("password hash of %s updated", fields[0])
    st = writer.fs.lstat(SHADOW)
    if changed and st is not None:
        # rewritten whole and atomically so the journal can restore the previous shadow file
        writer.write_text(SHADOW, ("\n".join(lines) + "\n").encode(), st.st_mode & 0o7777,
                          st.st_uid, st.st_gid)


def apply_passwd(writer: FileWriter, old_ign: Mapping[str, Any], new_ign: Mapping[str, Any]) -> None:
    old_users = list((old_ign.get("passwd") or {}).get("users") or [])
    new_users = list((new_ign.get("passwd") or {}).get("users") or [])
    if not new_users:
        # an empty list does not delete anything (MCO issue #2592 keeps the keys in place)
        log.info("no users in the new config: SSH keys left in place")
        return
    write_ssh_keys(writer, new_users)
    if any("passwordHash" in u for u in old_users + new_users):
        write_password_hashes(writer, old_users, new_users)
