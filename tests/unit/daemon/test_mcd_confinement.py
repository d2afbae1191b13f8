"""The daemon never reads or writes outside its root: symlinks and ".." in a tmp root that point
elsewhere (the update engine, stale-file removal, rollback, on-disk validation, firstboot), unit
names that would leave the unit directory, and the daemon's records created 0600.
"""
from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from machineconfig import constants as C
from mcd import firstboot
from mcd.on_disk_validation import find_mismatches
from mcd.update import apply_update
from tests.unit.daemon.test_mcd_update import FakeSystemd, mc


def snapshot(directory: Path) -> dict[str, tuple[int, str]]:
    """Every entry under `directory`: mode and content digest (or link target)."""
    seen: dict[str, tuple[int, str]] = {}
    for base, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = Path(base, name)
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                what = "-> " + os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                what = "dir"
            seen[str(path.relative_to(directory))] = (st.st_mode, what)
    return seen


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    """A directory beside the root holding things the daemon must never touch."""
    out = tmp_path / "outside"
    (out / "systemd/system").mkdir(parents=True)
    (out / "victim").write_text("outside, keep me\n")
    (out / "motd").write_text("hello")
    (out / "secret").write_text("outside secret\n")
    (out / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (out / "group").write_text("root:x:0:\n")
    before = snapshot(out)
    yield out
    assert snapshot(out) == before, "something outside the root changed"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    node = tmp_path / "root"
    node.mkdir()
    return node


def test_update_through_an_absolute_etc_link_stays_inside_the_root(root: Path,
                                                                 outside: Path) -> None:
    # /etc is a link to a directory outside: resolved as the root's own /<that path>
    (root / "etc").symlink_to(outside)
    old = mc("a", {"/etc/victim": "ours"})
    new = mc("b", {"/etc/motd": "hello", "/etc/new.conf": "new"},
             units=[{"name": "x.service", "contents": "[Service]\n"}])
    outcome = apply_update(old, new, FakeSystemd(), root=root)
    inside = root / str(outside).lstrip("/")
    # written under the root's copy of that path; the stale /etc/victim was "already absent"
    assert (inside / "new.conf").read_text() == "new"
    assert (inside / "systemd/system/x.service").read_text() == "[Service]\n"
    assert outcome.state != "Degraded", outcome.reason


def test_relative_dotdot_links_stop_at_the_root(root: Path, outside: Path) -> None:
    (root / "etc").mkdir()
    depth = len(root.parts)
    (root / "etc/systemd").symlink_to("../" * (depth + 3) + str(outside).lstrip("/") + "/systemd")
    (root / "etc/mct").symlink_to("../../../../../../../..")
    new = mc("b", {"/etc/mct/victim": "x", "/etc/mct/new.conf": "y"},
             units=[{"name": "y.service", "contents": "[Service]\n"}])
    outcome = apply_update(mc("a"), new, FakeSystemd(), root=root)
    assert outcome.state != "Degraded", outcome.reason
    assert (root / "victim").read_text() == "x"  # ".." above the root is the root
    assert (root / str(outside).lstrip("/") / "systemd/system/y.service").exists()


def test_stale_removal_and_rollback_never_reach_outside(root: Path, outside: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc/link").symlink_to(outside)
    (root / "etc/victim").symlink_to(outside / "victim")  # a final link: removed, not followed
    old = mc("a", {"/etc/link/victim": "ours", "/etc/link/motd": "hello", "/etc/victim": "x"})
    new = mc("b", {"/etc/link/motd": "changed"})
    outcome = apply_update(old, new, FakeSystemd(), root=root)
    assert outcome.state != "Degraded", outcome.reason
    assert not (root / "etc/victim").is_symlink()
    # a failing update rolls back under the root only
    systemd = FakeSystemd()
    systemd.fail_on.add("Reload")
    bad = mc("c", {"/etc/link/motd": "again", "/etc/link/other": "o"},
             units=[{"name": "z.service", "contents": "[Service]\n"}])
    assert apply_update(new, bad, systemd, root=root).state == "Degraded"


def test_validation_reads_nothing_outside(root: Path, outside: Path) -> None:
    (root / "etc").symlink_to("/" + str(outside).lstrip("/"))
    (root / str(outside).lstrip("/")).mkdir(parents=True)
    # the outside motd has the expected bytes; inside the root there is none
    problems = find_mismatches(mc("a", {"/etc/motd": "hello"}), root)
    assert problems and "no such file" in problems[0]


def test_unit_names_that_leave_the_unit_directory_are_refused(root: Path, outside: Path
                                                              ) -> None:
    (root / "etc").mkdir()
    escape = "../" * (len(root.parts) + 3) + str(outside).lstrip("/") + "/victim.service"
    for unit in ({"name": escape, "contents": "[Service]\n"},
                 {"name": "ok.service", "dropins": [{"name": "../../../../x.conf",
                                                     "contents": "[Service]\n"}]}):
        outcome = apply_update(mc("a"), mc("b", {"/etc/first": "f"}, units=[unit]),
                               FakeSystemd(), root=root)
        assert outcome.state == "Degraded" and "not a plain file name" in outcome.reason
        assert not (root / "etc/first").exists()  # refused before anything was written


# ---- firstboot -----------------------------------------------------------------------------

def ignition(**sections: Any) -> dict[str, Any]:
    return {"ignition": {"version": "3.4.0"}, **sections}


def data(text: str) -> dict[str, str]:
    from machineconfig.ignition.dataurl import encode_percent
    return {"source": encode_percent(text.encode())}


@pytest.fixture
def node_root(root: Path) -> Path:
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    return root


@pytest.mark.parametrize("config, reason", [
    (ignition(systemd={"units": [{"name": "../../../../../../../../tmp/x.service",
                                  "contents": "[Service]\n"}]}), "not a plain file name"),
    (ignition(systemd={"units": [{"name": "a.service", "enabled": True, "contents":
                                  "[Service]\n[Install]\nWantedBy=../../../../../../x.target\n"}]}),
     "[Install] WantedBy"),
    (ignition(systemd={"units": [{"name": "a.service", "dropins": [
        {"name": "../../../../../../../x.conf", "contents": "[Service]\n"}]}]}),
     "not a plain file name"),
    (ignition(storage={"links": [{"path": "/etc/l", "target": "/"}],
                       "files": [{"path": "/etc/l/x", "contents": data("x")}]}),
     "file path includes link in config"),
    (ignition(storage={"files": [{"path": "/etc/../../x", "contents": data("x")}]}),
     "path is not fully simplified"),
])
def test_firstboot_refuses_an_invalid_config_before_writing(node_root: Path, outside: Path,
                                                            config: dict[str, Any],
                                                            reason: str) -> None:
    config.setdefault("storage", {}).setdefault("files", []).insert(
        0, {"path": "/etc/first", "contents": data("f"), "overwrite": True})
    with pytest.raises(firstboot.FirstbootError, match=reason.replace("[", r"\[")):
        firstboot.apply_config(config, node_root)
    assert not (node_root / "etc/first").exists()


def test_firstboot_links_and_hard_links_stay_inside(node_root: Path, outside: Path) -> None:
    (node_root / "etc/out").symlink_to(outside)  # already on disk: resolved inside the root
    depth = len(node_root.parts)
    config = ignition(storage={
        "files": [{"path": "/etc/out/victim", "contents": data("inside"), "overwrite": True}],
        "directories": [{"path": "/etc/out/dir", "mode": 0o700}],
        "links": [{"path": "/etc/hard", "hard": True,
                   "target": "../" * (depth + 2) + str(outside / "secret").lstrip("/")}]})
    with pytest.raises(firstboot.FirstbootError):
        firstboot.apply_config(config, node_root)  # the hard link's target is not in the root
    secret = (outside / "secret").stat()
    for path in node_root.rglob("*"):
        assert (path.lstat().st_dev, path.lstat().st_ino) != (secret.st_dev, secret.st_ino)
    del config["storage"]["links"]
    firstboot.apply_config(config, node_root)
    inside = node_root / str(outside).lstrip("/")
    assert (inside / "victim").read_text() == "inside"
    assert stat.S_IMODE((inside / "dir").stat().st_mode) == 0o700


def test_firstboot_honours_overwrite_false(node_root: Path) -> None:
    (node_root / "etc/same").write_text("same")
    (node_root / "etc/differs").write_text("theirs")
    (node_root / "etc/kept").write_text("kept")
    config = ignition(storage={"files": [
        {"path": "/etc/same", "contents": data("same"), "mode": 0o600},
        {"path": "/etc/kept", "mode": 0o640},  # no source: contents kept, mode set
        {"path": "/etc/fresh", "contents": data("fresh")},
    ]})
    firstboot.apply_config(config, node_root)
    assert (node_root / "etc/kept").read_text() == "kept"
    assert stat.S_IMODE((node_root / "etc/kept").stat().st_mode) == 0o640
    assert stat.S_IMODE((node_root / "etc/same").stat().st_mode) == 0o600
    assert (node_root / "etc/fresh").read_text() == "fresh"
    config["storage"]["files"].append({"path": "/etc/differs", "contents": data("ours")})
    config["storage"]["files"].append({"path": "/etc/fresh2", "contents": data("x")})
    with pytest.raises(firstboot.FirstbootError,
                       match="/etc/differs: a file exists there already and overwrite is false"):
        firstboot.apply_config(config, node_root)
    assert (node_root / "etc/differs").read_text() == "theirs"
    assert not (node_root / "etc/fresh2").exists()
    config["storage"]["files"][-2]["overwrite"] = True
    firstboot.apply_config(config, node_root)
    assert (node_root / "etc/differs").read_text() == "ours"


# ---- records at rest -----------------------------------------------------------------------

def test_state_currentconfig_and_backups_are_created_0600(root: Path) -> None:
    previous = os.umask(0)  # a permissive umask must not widen anything
    try:
        (root / "etc").mkdir()
        (root / "etc/motd").write_text("distro")
        os.chmod(root / "etc/motd", 0o644)
        outcome = apply_update(mc("a"), mc("b", {"/etc/motd": "ours", "/etc/new": "n"}),
                               FakeSystemd(), root=root)
        assert outcome.state != "Degraded", outcome.reason
    finally:
        os.umask(previous)
    records = [C.DAEMON_STATE_PATH, C.CURRENT_CONFIG_PATH,
               "/etc/machine-config-daemon/orig/etc/motd.mcdorig",
               "/etc/machine-config-daemon/noorig/etc/new.mcdnoorig"]
    for node_path in records:
        path = root / node_path.lstrip("/")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, node_path
    # the original's mode comes back with it
    outcome = apply_update(mc("b", {"/etc/motd": "ours", "/etc/new": "n"}), mc("c"),
                           FakeSystemd(), root=root)
    assert outcome.state != "Degraded", outcome.reason
    assert (root / "etc/motd").read_text() == "distro"
    assert stat.S_IMODE((root / "etc/motd").stat().st_mode) == 0o644


def test_firstboot_records_are_created_0600(node_root: Path) -> None:
    previous = os.umask(0)
    try:
        credentials = {"path": "/etc/machine-config-daemon/node-credentials.json", "mode": 0o600,
                       "overwrite": True, "contents": data('{"server": "https://x"}')}
        firstboot.apply_config(ignition(storage={"files": [credentials]}), node_root)
        firstboot.mark_done(node_root, "rendered-worker-1")
    finally:
        os.umask(previous)
    for node_path in (credentials["path"], firstboot.DONE_STAMP):
        path = node_root / str(node_path).lstrip("/")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, node_path


def test_link_loops_and_a_link_at_the_last_component(root: Path, outside: Path) -> None:
    from mcd.noderoot import NodeRoot

    (root / "a").symlink_to("b")
    (root / "b").symlink_to("/a")
    fs = NodeRoot(root)
    with pytest.raises(OSError, match="too many levels of symbolic links"):
        fs.makedirs("/a/x")
    (root / "d").symlink_to(outside)
    with pytest.raises(OSError):
        fs.set_dir_attrs("/d", 0o777)  # chmod/chown never follow the last component
    (root / "top").write_text("top")
    assert fs.read_bytes("/../../../top") == b"top"  # ".." at the root stays there


def test_lstat_contents_takes_what_the_last_component_holds_inside_the_root(root: Path,
                                                                            outside: Path) -> None:
    # What a change records before it replaces a path (mcd.file_writers.capture): resolved once,
    # through links inside the root, the last component never followed.
    from mcd.noderoot import NodeRoot

    fs = NodeRoot(root)
    (root / "etc").mkdir()
    (root / "etc/conf").write_bytes(b"inside\n")
    (root / "etc/conf").chmod(0o640)
    (root / "etc/to-outside").symlink_to(outside / "secret")
    (root / "etc/dir").mkdir()
    os.mkfifo(root / "etc/fifo")
    (root / "alias").symlink_to("etc")
    (root / "away").symlink_to(outside)  # as a directory: its target taken inside the root
    st, held = fs.lstat_contents("/alias/conf")
    assert held == b"inside\n" and st is not None and stat.S_IMODE(st.st_mode) == 0o640
    st, held = fs.lstat_contents("/etc/to-outside")
    assert held == str(outside / "secret") and st is not None and stat.S_ISLNK(st.st_mode)
    for other in ("/etc/dir", "/etc/fifo"):  # neither read nor opened (a fifo would block)
        st, held = fs.lstat_contents(other)
        assert st is not None and held is None
    assert fs.lstat_contents("/etc/absent") == (None, None)
    assert fs.lstat_contents("/etc/conf/below") == (None, None)  # a file on the way
    assert fs.lstat_contents("/away/secret") == (None, None)  # not there inside the root
