"""mcd.passwd on a tmp root: core's SSH key fragment and password hashes in /etc/shadow."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from mcd.file_writers import FileWriter, Journal
from mcd.passwd import apply_passwd


def make_root(tmp_path: Path, with_core: bool = True) -> Path:
    (tmp_path / "etc").mkdir()
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
