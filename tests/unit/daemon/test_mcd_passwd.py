"""mcd.passwd on a tmp root: core's SSH key fragment and password hashes in /etc/shadow."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from mcd.file_writers import FileWriter, Journal
from mcd.passwd import apply_passwd


def make_root(tmp_path: Path, with_core: bool = True) -> Path:
    (tmp_path / "etc").mkdir(parents=True)
    uid, gid = os.getuid(), os.getgid()
    core = f"core:x:{uid}:{gid}::/home/core:/bin/sh\n" if with_core else ""
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n" + core)
    (tmp_path / "etc/shadow").write_text("root:*:19000:0:99999:7:::\ncore:!:19000:0:99999:7:::\n")
    (tmp_path / "home/core").mkdir(parents=True)
    return tmp_path


def users(*keys: str, password: str | None = None) -> dict[str, object]:
    user: dict[str, object] = {"name": "core", "sshAuthorizedKeys": list(keys)}
    if password is not None:
        user["passwordHash"] = password
    return {"passwd": {"users": [user]}}


def test_keys_written_0600_in_0700_dirs(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    apply_passwd(FileWriter(root, Journal()), {}, users("ssh-ed25519 A a", "ssh-ed25519 B b"))
    keys = root / "home/core/.ssh/authorized_keys.d/ignition"
    assert keys.read_text() == "ssh-ed25519 A a\nssh-ed25519 B b\n"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "home/core/.ssh").stat().st_mode) == 0o700


def test_password_hash_set_and_cleared_and_rolled_back(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    journal = Journal()
    apply_passwd(FileWriter(root, journal), {}, users("k", password="$6$abc"))
    assert "core:$6$abc:" in (root / "etc/shadow").read_text()
    journal.rollback()
    assert "core:!:" in (root / "etc/shadow").read_text()
    assert not (root / "home/core/.ssh").exists()
    apply_passwd(FileWriter(root, Journal()), users("k", password="$6$abc"), users("k"))
    assert "core:*:" in (root / "etc/shadow").read_text()


def test_no_core_user_or_empty_users_change_nothing(tmp_path: Path) -> None:
    root = make_root(tmp_path, with_core=False)
    apply_passwd(FileWriter(root, Journal()), {}, users("k"))
    assert not (root / "home/core/.ssh").exists()
    apply_passwd(FileWriter(root, Journal()), users("k"), {"passwd": {"users": []}})
    assert not (root / "home/core/.ssh").exists()


DEBIAN_SSHD = "Include /etc/ssh/sshd_config.d/*.conf\n#AuthorizedKeysFile .ssh/authorized_keys\n"
DROPIN = "etc/ssh/sshd_config.d/40-machine-config-ssh-keys.conf"


def with_sshd(root: Path, main: str = DEBIAN_SSHD, **dropins: str) -> Path:
    (root / "etc/ssh/sshd_config.d").mkdir(parents=True)
    (root / "etc/ssh/sshd_config").write_text(main)
    for name, text in dropins.items():
        (root / "etc/ssh/sshd_config.d" / name).write_text(text)
    return root


def test_sshd_dropin_installed_once_where_sshd_ignores_the_fragment(tmp_path: Path) -> None:
    root = with_sshd(make_root(tmp_path))
    assert apply_passwd(FileWriter(root, Journal()), {}, users("ssh-ed25519 A a")) is True
    dropin = root / DROPIN
    assert dropin.read_text().splitlines()[-1] == \
        "AuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys.d/ignition"
    assert stat.S_IMODE(dropin.stat().st_mode) == 0o644
    # a key rotation finds it in place: sshd need not reload again
    assert apply_passwd(FileWriter(root, Journal()), {}, users("ssh-ed25519 B b")) is False


def test_sshd_dropin_rolled_back_with_the_keys(tmp_path: Path) -> None:
    root = with_sshd(make_root(tmp_path))
    journal = Journal()
    apply_passwd(FileWriter(root, journal), {}, users("ssh-ed25519 A a"))
    journal.rollback()
    assert not (root / DROPIN).exists()


def test_sshd_dropin_not_installed_where_the_host_decides(tmp_path: Path) -> None:
    # no sshd at all
    root = make_root(tmp_path / "none")
    assert apply_passwd(FileWriter(root, Journal()), {}, users("ssh-ed25519 A a")) is False
    # CoreOS: ssh-key-dir's key command reads the fragments (its drop-in sorts after ours)
    root = with_sshd(make_root(tmp_path / "coreos"), **{
        "40-ssh-key-dir.conf": "AuthorizedKeysCommand /usr/libexec/ssh-key-dir\n"
                               "AuthorizedKeysCommandUser root\n"})
    assert apply_passwd(FileWriter(root, Journal()), {}, users("ssh-ed25519 A a")) is False
    # an admin's earlier drop-in already sets the key files (sshd keeps the first value)
    root = with_sshd(make_root(tmp_path / "admin"), **{
        "10-keys.conf": "  authorizedkeysfile /etc/ssh/keys/%u\n"})
    assert apply_passwd(FileWriter(root, Journal()), {}, users("ssh-ed25519 A a")) is False
    # an sshd_config without the drop-in directory: nothing to put a drop-in in
    root = with_sshd(make_root(tmp_path / "old"), main="Port 22\n")
    assert apply_passwd(FileWriter(root, Journal()), {}, users("ssh-ed25519 A a")) is False
    for name in ("none", "coreos", "admin", "old"):
        assert not (tmp_path / name / DROPIN).exists()
