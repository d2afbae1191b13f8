"""mcd.file_writers on a tmp root: atomic writes, modes, owners, backups, restores, rollback."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from mcd import file_writers
from mcd.file_writers import FileWriter, Journal, WriteError, atomic_write


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    uid, gid = os.getuid(), os.getgid()
    (tmp_path / "etc/passwd").write_text(f"root:x:0:0::/root:/bin/sh\nme:x:{uid}:{gid}::/:/bin/sh\n")
    (tmp_path / "etc/group").write_text(f"root:x:0:\nmine:x:{gid}:\n")
    return tmp_path


def entry(path: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"path": path, "contents": {"source": "data:," + text}, **extra}


def test_atomic_write_sets_mode_owner_and_leaves_no_temp(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    target = tmp_path / "a/b/c.conf"
    atomic_write(tmp_path, "/a/b/c.conf", b"data", 0o640, os.getuid(), os.getgid(), journal)
    assert target.read_bytes() == b"data"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "a/b").stat().st_mode) == 0o755
    assert os.listdir(tmp_path / "a/b") == ["c.conf"]
    assert journal.dirs_to_sync == {"/a/b"}
    journal.sync()


def test_write_file_defaults_and_owner_names(root: Path) -> None:
    writer = FileWriter(root, Journal())
    writer.write_file(entry("/etc/x/default", "d"))
    writer.write_file(entry("/etc/x/named", "n", mode=0o600, user={"name": "me"},
                            group={"name": "mine"}))
    default, named = (root / "etc/x/default").stat(), (root / "etc/x/named").stat()
    assert stat.S_IMODE(default.st_mode) == 0o644
    assert (stat.S_IMODE(named.st_mode), named.st_uid, named.st_gid) == \
        (0o600, os.getuid(), os.getgid())


def test_unknown_owner_and_append_are_errors(root: Path) -> None:
    writer = FileWriter(root, Journal())
    with pytest.raises(WriteError, match="user 'nobody-here' not found"):
        writer.write_file(entry("/etc/y", "y", user={"name": "nobody-here"}))
    with pytest.raises(WriteError, match="Append is not supported"):
        writer.write_file({"path": "/etc/z", "append": [{"source": "data:,z"}]})


def test_backup_once_and_restore_when_the_file_leaves(root: Path) -> None:
    original = root / "etc/motd"
    original.write_text("distro\n")
    original.chmod(0o640)
    writer = FileWriter(root, Journal())
    writer.write_file(entry("/etc/motd", "ours1"))
    writer.write_file(entry("/etc/motd", "ours2"))  # the backup is never overwritten
    backup = root / "etc/machine-config-daemon/orig/etc/motd.mcdorig"
    assert backup.read_text() == "distro\n"
    writer.remove_stale("/etc/motd")
    assert original.read_text() == "distro\n" and stat.S_IMODE(original.stat().st_mode) == 0o640
    assert not backup.exists()


def test_new_file_gets_noorig_stamp_and_is_deleted_when_it_leaves(root: Path) -> None:
    writer = FileWriter(root, Journal())
    writer.write_file(entry("/etc/new.conf", "x"))
    stamp = root / "etc/machine-config-daemon/noorig/etc/new.conf.mcdnoorig"
    assert stamp.exists() and stamp.read_bytes() == b""
    writer.remove_stale("/etc/new.conf")
    assert not (root / "etc/new.conf").exists() and not stamp.exists()


def test_certificate_writer_files_are_never_stale(root: Path) -> None:
    ca = root / "etc/kubernetes/kubelet-ca.crt"
    ca.parent.mkdir(parents=True)
    ca.write_text("ca")
    FileWriter(root, Journal()).remove_stale("/etc/kubernetes/kubelet-ca.crt")
    assert ca.exists()


def test_units_dropins_mask_and_unmask(root: Path) -> None:
    writer = FileWriter(root, Journal())
    assert writer.write_unit({"name": "a.service", "contents": "[Service]\n",
                              "dropins": [{"name": "10.conf", "contents": "[Unit]\n"},
                                          {"name": "20.conf"}]})
    unit_dir = root / "etc/systemd/system"
    assert (unit_dir / "a.service").read_text() == "[Service]\n"
    assert (unit_dir / "a.service.d/10.conf").exists()
    assert not (unit_dir / "a.service.d/20.conf").exists()
    assert writer.write_unit({"name": "b.service", "mask": True})
    assert os.readlink(unit_dir / "b.service") == "/dev/null"
    assert not writer.write_unit({"name": "b.service", "mask": True})  # already masked
    assert writer.write_unit({"name": "b.service", "mask": False})
    assert not (unit_dir / "b.service").is_symlink()


def test_rollback_restores_every_path_and_removes_created_dirs(root: Path) -> None:
    existing = root / "etc/existing"
    existing.write_text("old")
    existing.chmod(0o600)
    link = root / "etc/systemd/system/c.service"
    link.parent.mkdir(parents=True)
    link.symlink_to("/lib/systemd/system/c.service")
    journal = Journal()
    writer = FileWriter(root, journal)
    writer.write_file(entry("/etc/existing", "new"))
    writer.write_file(entry("/etc/fresh/deep/file", "f"))
    writer.write_unit({"name": "c.service", "mask": True})
    writer.remove_stale("/etc/existing")
    journal.rollback()
    assert existing.read_text() == "old" and stat.S_IMODE(existing.stat().st_mode) == 0o600
    assert os.readlink(link) == "/lib/systemd/system/c.service"
    assert not (root / "etc/fresh").exists()
    assert not (root / "etc/machine-config-daemon/orig/etc/existing.mcdorig").exists()
    assert not (root / "etc/machine-config-daemon").exists()


def test_refuses_to_replace_a_directory(root: Path) -> None:
    (root / "etc/adir").mkdir()
    with pytest.raises(WriteError):
        FileWriter(root, Journal()).write_file(entry("/etc/adir", "x"))


class RecordingMasker:
    """Stands in for systemd's MaskUnitFiles: makes the link and records the call."""

    def __init__(self, unit_dir: Path) -> None:
        self.unit_dir = unit_dir
        self.calls: list[tuple[str, str]] = []

    def mask(self, names: list[str]) -> None:
        for name in names:
            self.calls.append(("mask", name))
            (self.unit_dir / name).symlink_to("/dev/null")

    def unmask(self, names: list[str]) -> None:
        for name in names:
            self.calls.append(("unmask", name))
            (self.unit_dir / name).unlink()


def test_masks_go_through_systemd_and_roll_back(root: Path) -> None:
    unit_dir = root / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    (unit_dir / "r.service").write_text("[Service]\n")  # a regular unit file is replaced
    masker = RecordingMasker(unit_dir)
    journal = Journal()
    writer = FileWriter(root, journal, masker=masker)
    assert writer.write_unit({"name": "r.service", "mask": True})
    assert os.readlink(unit_dir / "r.service") == "/dev/null"
    assert masker.calls == [("mask", "r.service")]
    journal.rollback()
    assert (unit_dir / "r.service").read_text() == "[Service]\n"
    (unit_dir / "r.service").unlink()
    (unit_dir / "r.service").symlink_to("/dev/null")
    assert FileWriter(root, Journal(), masker=masker).write_unit({"name": "r.service",
                                                                  "mask": False})
    assert masker.calls[-1] == ("unmask", "r.service")


def test_batch_rename_failure_is_raised_and_rolled_back_with_no_temp(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal()
    writer = FileWriter(root, journal)
    writer.write_files([entry(f"/etc/batch/f{i}.conf", f"old{i}") for i in range(20)])
    journal.sync()
    real_rename = os.rename

    def rename(src: str, dst: Any, **dir_fds: int) -> None:
        if str(dst) == "f12.conf":
            raise OSError(5, "Input/output error")
        real_rename(src, dst, **dir_fds)

    monkeypatch.setattr(file_writers.os, "rename", rename)
    journal = Journal()
    writer = FileWriter(root, journal)
    with pytest.raises(WriteError, match="/etc/batch/f12.conf"):
        writer.write_files([entry(f"/etc/batch/f{i}.conf", f"new{i}") for i in range(20)])
    monkeypatch.undo()
    # the other files of the batch all finished: each entirely new, f12 untouched; no temp left
    for i in range(20):
        expected = f"new{i}" if i != 12 else f"old{i}"
        assert (root / f"etc/batch/f{i}.conf").read_text() == expected
    assert not [n for n in os.listdir(root / "etc/batch") if ".mcdtmp" in n]
    journal.rollback()
    for i in range(20):
        assert (root / f"etc/batch/f{i}.conf").read_text() == f"old{i}"


def test_batch_refuses_a_directory_before_touching_anything(root: Path) -> None:
    journal = Journal()
    FileWriter(root, journal).write_files([entry("/etc/batch/a.conf", "old")])
    (root / "etc/batch/d.conf").mkdir()
    with pytest.raises(WriteError, match="/etc/batch/d.conf"):
        FileWriter(root, Journal()).write_files([entry("/etc/batch/a.conf", "new"),
                                                 entry("/etc/batch/d.conf", "x")])
    assert (root / "etc/batch/a.conf").read_text() == "old"


def test_batch_decode_failure_touches_nothing(root: Path) -> None:
    journal = Journal()
    writer = FileWriter(root, journal)
    bad = {"path": "/etc/batch/bad.conf", "contents": {"source": "data:;base64,@@@"}}
    with pytest.raises(WriteError, match="/etc/batch/bad.conf"):
        writer.write_files([entry("/etc/batch/a.conf", "a"), bad, entry("/etc/batch/b.conf", "b")])
    assert not (root / "etc/batch/a.conf").exists()
    journal.rollback()
    assert not (root / "etc/batch").exists()


def test_batch_sweeps_temp_files_a_killed_run_left(root: Path) -> None:
    journal = Journal()
    writer = FileWriter(root, journal)
    (root / "etc/batch").mkdir()
    stale = root / "etc/batch/.a.conf.mcdtmpabc123"
    stale.write_text("half")
    (root / "etc/batch/.keep").write_text("not ours")
    writer.write_files([entry("/etc/batch/a.conf", "a"), entry("/etc/batch/b.conf", "b")])
    assert sorted(os.listdir(root / "etc/batch")) == [".keep", "a.conf", "b.conf"]


def test_batch_owner_lookup_sees_a_passwd_written_earlier_in_the_batch(root: Path) -> None:
    journal = Journal()
    writer = FileWriter(root, journal)
    uid, gid = os.getuid(), os.getgid()
    passwd = (root / "etc/passwd").read_text() + f"late:x:{uid}:{gid}::/:/bin/sh\n"
    writer.write_files([entry("/etc/passwd", passwd.replace("\n", "%0A").replace(":", "%3A")),
                        entry("/etc/batch/owned.conf", "x", user={"name": "late"})])
    assert (root / "etc/batch/owned.conf").stat().st_uid == uid


def test_batched_unit_writes_land_together_and_a_failure_inside_writes_nothing(root: Path) -> None:
    writer = FileWriter(root, Journal())
    units = [{"name": f"u{i}.service", "contents": f"[Service]\nExecStart=/bin/true {i}\n",
              "dropins": [{"name": "10-x.conf", "contents": f"[Service]\nNice={i}\n"}]}
             for i in range(3)]
    with writer.batched():
        for unit in units:
            assert writer.write_unit(unit)
        assert not (root / "etc/systemd/system/u0.service").exists()  # not yet
    for i in range(3):
        assert (root / f"etc/systemd/system/u{i}.service").read_text().endswith(f"{i}\n")
        assert (root / f"etc/systemd/system/u{i}.service.d/10-x.conf").read_text() == \
            f"[Service]\nNice={i}\n"
    with pytest.raises(RuntimeError), writer.batched():
        writer.write_unit({"name": "late.service", "contents": "[Service]\n"})
        raise RuntimeError("boom")
    assert not (root / "etc/systemd/system/late.service").exists()
    assert not [n for n in os.listdir(root / "etc/systemd/system") if ".mcdtmp" in n]


def test_journal_sync_of_many_directories_skips_the_ones_gone(tmp_path: Path) -> None:
    """Many directories are fsynced at once; one removed again (by a rollback) or replaced by
    a file is skipped, as when they were fsynced one by one."""
    journal = Journal(tmp_path)
    for i in range(40):
        (tmp_path / f"d{i}/s").mkdir(parents=True)
        journal.dirs_to_sync.add(f"/d{i}/s")
    for i in range(0, 40, 4):
        (tmp_path / f"d{i}/s").rmdir()
    (tmp_path / "d1/s").rmdir()
    (tmp_path / "d1/s").write_text("now a file")
    journal.sync()
    assert journal.dirs_to_sync == set()
