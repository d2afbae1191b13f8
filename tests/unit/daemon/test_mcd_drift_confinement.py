"""The drift monitor's inotify watches stay inside the daemon's root: a directory on the way
that is a symlink out of the root (`etc -> /outside`) is resolved as the daemon's writes resolve
it (mcd.noderoot), so no watch is ever placed on a directory outside. What the kernel watches is
read back from /proc/self/fdinfo of the inotify fd (one `ino:` per watch)."""
from __future__ import annotations

import os
import select
from pathlib import Path

from mcd.drift_monitor import DirectoryWatches, DriftMonitor
from tests.unit.daemon.test_mcd_update import mc

HOUR = 3600.0


def watched_inodes(fd: int) -> set[int]:
    text = Path(f"/proc/self/fdinfo/{fd}").read_text()
    return {int(word[4:], 16) for line in text.splitlines() if line.startswith("inotify")
            for word in line.split() if word.startswith("ino:")}


def outside_tree(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (outside / "systemd" / "system" / "multi-user.target.wants").mkdir(parents=True)
    (outside / "motd").write_text("outside")
    root.mkdir()
    (root / "etc").symlink_to(outside)  # an absolute link out of the root
    return root, outside


def outside_inodes(outside: Path) -> set[int]:
    return {os.stat(p).st_ino for p in [outside, *outside.rglob("*")] if p.is_dir()}


def test_no_watch_follows_a_link_out_of_the_root(tmp_path: Path) -> None:
    root, outside = outside_tree(tmp_path)
    watches = DirectoryWatches(root, ["/etc/motd", "/etc/systemd/system/x.service"],
                               units=["x.service"])
    try:
        inodes = watched_inodes(watches.fileno())
        assert inodes and not inodes & outside_inodes(outside)
        assert os.stat(root).st_ino in inodes  # the nearest directory inside: the root itself
        (outside / "motd").write_text("changed outside")
        assert not select.select([watches.fileno()], [], [], 0.2)[0]
    finally:
        watches.close()


def test_the_monitor_with_root_ignores_the_outside_and_sees_the_inside(tmp_path: Path) -> None:
    root, outside = outside_tree(tmp_path)
    config = mc("rendered-worker-a", {"/etc/motd": "hello"})
    m = DriftMonitor(config, root, None, poll_interval=HOUR, full_interval=HOUR, settle=0.0)
    try:
        fd = m.fileno()
        assert fd is not None
        assert not watched_inodes(fd) & outside_inodes(outside)
        (outside / "motd").write_text("hello")
        assert not select.select([fd], [], [], 0.2)[0]
        # the daemon resolves /etc as <root>/<outside path>: that is where a change counts
        inside = root / str(outside).lstrip("/")
        inside.mkdir(parents=True)
        assert select.select([fd], [], [], 5)[0]
    finally:
        m.stop()


def test_a_link_inside_the_root_is_watched_where_it_leads(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real-etc").mkdir(parents=True)
    (root / "etc").symlink_to("/real-etc")  # absolute, taken relative to the root
    watches = DirectoryWatches(root, ["/etc/motd"])
    try:
        assert watched_inodes(watches.fileno()) == {os.stat(root / "real-etc").st_ino}
        (root / "real-etc" / "motd").write_text("x")
        assert select.select([watches.fileno()], [], [], 5)[0]
        assert set(watches.relevant(watches.inotify.read())) == {"/etc/motd"}
    finally:
        watches.close()
