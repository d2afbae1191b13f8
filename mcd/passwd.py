"""SSH keys and password hashes of user `core`, the only user MCO manages on a running node.

Keys go to /home/core/.ssh/authorized_keys.d/ignition (0600, core:core); hashes into /etc/shadow.

Stock OpenSSH reads only ~/.ssh/authorized_keys{,2}; Fedora CoreOS and RHCOS let sshd read the
fragments in ~/.ssh/authorized_keys.d/ through ssh-key-dir. On a host whose sshd does not read
them (Debian), writing the keys also installs SSHD_DROPIN, an AuthorizedKeysFile drop-in naming
the fragment, once; sshd reads it after a reload (`write_ssh_keys` returns True then).
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
SSHD_CONFIG = "/etc/ssh/sshd_config"
SSHD_DROPIN_DIR = "/etc/ssh/sshd_config.d"
SSHD_DROPIN = f"{SSHD_DROPIN_DIR}/40-machine-config-ssh-keys.conf"
SSHD_DROPIN_TEXT = (
    "# Written by machine-config's daemon: sshd also reads the SSH keys that MachineConfigs\n"
    "# give user core (the fragment in ~/.ssh/authorized_keys.d/, as ssh-key-dir on CoreOS).\n"
    "AuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys.d/ignition\n")
# an sshd setting that already decides where keys come from (the first value sshd reads wins)
_KEY_SETTINGS = ("authorizedkeysfile", "authorizedkeyscommand")
SSH_SERVICES = ("ssh.service", "sshd.service")  # Debian's name, Fedora's


def _passwd_entry(writer: FileWriter, name: str) -> list[str] | None:
    for line in writer.fs.read_text("/etc/passwd").splitlines():
        fields = line.split(":")
        if fields[0] == name and len(fields) >= 7:
            return fields
    return None


def _sets_key_source(text: str) -> bool:
    return any(line.split(maxsplit=1)[0].lower() in _KEY_SETTINGS
               for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def ensure_sshd_reads_keys(writer: FileWriter) -> bool:
    """Install SSHD_DROPIN when this host's sshd would ignore the `ignition` fragment; True when
    it was written now (sshd must reload). Nothing is written when there is no sshd, when its
    config does not include sshd_config.d, or when a drop-in read before ours (or the main
    config) already says where keys come from: that is the host's choice, logged."""
    try:
        main = writer.fs.read_text(SSHD_CONFIG)
    except (FileNotFoundError, NotADirectoryError):
        return False
    if not any(line.split()[:2] == ["Include", f"{SSHD_DROPIN_DIR}/*.conf"]
               for line in main.splitlines()):
        log.warning("%s does not include %s/*.conf: sshd may not read core's SSH keys",
                    SSHD_CONFIG, SSHD_DROPIN_DIR)
        return False
    ours = SSHD_DROPIN.rsplit("/", 1)[1]
    try:
        names = sorted(writer.fs.listdir(SSHD_DROPIN_DIR))
    except (FileNotFoundError, NotADirectoryError):
        names = []
        writer.fs.makedirs(SSHD_DROPIN_DIR, writer.journal.created_dirs)
    for name in names:
        if name == ours:
            if writer.fs.read_text(SSHD_DROPIN, follow=False) == SSHD_DROPIN_TEXT:
                return False
            continue
        # sshd reads the drop-ins in name order and keeps the first value of a setting; a key
        # command anywhere (ssh-key-dir's 40-ssh-key-dir.conf on CoreOS) reads the fragments
        if name.endswith(".conf") and _sets_key_source(
                writer.fs.read_text(f"{SSHD_DROPIN_DIR}/{name}")) and (
                name < ours or "authorizedkeyscommand" in writer.fs.read_text(
                    f"{SSHD_DROPIN_DIR}/{name}").lower()):
            log.info("%s/%s decides where sshd reads keys: %s not installed", SSHD_DROPIN_DIR,
                     name, SSHD_DROPIN)
            return False
    writer.write_text(SSHD_DROPIN, SSHD_DROPIN_TEXT.encode(), 0o644)
    log.info("installed %s: sshd reads core's SSH keys from authorized_keys.d", SSHD_DROPIN)
    return True


def write_ssh_keys(writer: FileWriter, users: list[Mapping[str, Any]]) -> bool:
    """Every key of every user, one per line, as the single `ignition` fragment of core; True
    when sshd must reload to read it (see `ensure_sshd_reads_keys`)."""
    entry = _passwd_entry(writer, CORE_USER)
    if entry is None:
        log.warning("user core does not exist: SSH key change ignored")
        return False
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
    return ensure_sshd_reads_keys(writer)


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


def apply_passwd(writer: FileWriter, old_ign: Mapping[str, Any], new_ign: Mapping[str, Any]) -> bool:
    """Keys and hashes of the new config; True when sshd must reload to read the keys."""
    old_users = list((old_ign.get("passwd") or {}).get("users") or [])
    new_users = list((new_ign.get("passwd") or {}).get("users") or [])
    if not new_users:
        # an empty list does not delete anything (MCO issue #2592 keeps the keys in place)
        log.info("no users in the new config: SSH keys left in place")
        return False
    reload_sshd = write_ssh_keys(writer, new_users)
    if any("passwordHash" in u for u in old_users + new_users):
        write_password_hashes(writer, old_users, new_users)
    return reload_sshd
