"""tests/vagrant/progress.py: boot stages from a serial console, and waits that give a slow VM
time while its console advances but name the stage of a hung one."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.vagrant.progress import STAGES, BootWatch, StageTimeout


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_watch(tmp_path: Path, clock: Clock, stall: float = 120) -> BootWatch:
    (tmp_path / "console").mkdir()
    return BootWatch(tmp_path / "console", ("worker-1",), tmp_path / "up.log",
                     (tmp_path / "mcc.log",), stall=stall, clock=clock)


def say(path: Path, text: str) -> None:
    with open(path, "a") as out:
        out.write(text)


FIRST_BOOT = [
    (5, "up", "==> worker-1: Starting domain.\n"),
    (20, "console", "Booting `Debian (machine-config box)'\r\n"),
    (30, "console", "[    0.000000] Linux version 6.1.0-41-amd64 (debian-kernel@lists.debian.org)\n"),
    (70, "console", "\x1b[0;1;39mWelcome to \x1b[0mDebian GNU/Linux 12 (bookworm)\x1b[0m!\n"),
    (100, "console", "\nDebian GNU/Linux 12 machine-config-box ttyS0\n\nmachine-config-box login: "),
    (150, "console", "         Starting \x1b[0;1;39mmachine-config-da…n: join from a pointer "
                     "config...\n"),
    (151, "console", "machine-config: the join starts (mcd firstboot --pointer)\n"),
    (199, "console", "[  OK  ] Stopped machine-config-dae…-795646a5ec71dc64642b318c4d32f76d.\n"),
    (200, "console", "[  OK  ] Stopped target network-online.target - Network is Online.\n"),
    (215, "console", "[  215.1] reboot: Restarting system\n"),
    (240, "console", "[    0.000000] Linux version 6.1.0-41-amd64\n"),
    (280, "console", "Welcome to Debian GNU/Linux 12 (bookworm)!\n"),
    (330, "console", "         Starting ssh.service - OpenBSD Secure Shell server...\n"),
    # systemd's status output often ends before "Started ssh.service": the prompt says it
    (345, "console", "\nDebian GNU/Linux 12 worker-1 ttyS0\n\nworker-1 login: "),
]


def play(watch: BootWatch, clock: Clock, tmp_path: Path, script: list[tuple[int, str, str]]
         ) -> None:
    for at, where, text in script:
        clock.now = 1000 + at
        say(tmp_path / "up.log" if where == "up" else tmp_path / "console/worker-1.log", text)
        watch.poll()


def test_a_join_and_reboot_split_into_timed_stages(tmp_path: Path) -> None:
    clock = Clock()
    watch = make_watch(tmp_path, clock)
    play(watch, clock, tmp_path, FIRST_BOOT)
    clock.now = 1400
    stages = [(key, round(seconds)) for key, seconds in watch.timelines["worker-1"].durations(
        clock.now)]
    assert stages == [("domain", 25), ("kernel", 40), ("systemd", 80), ("join", 50),
                      ("shutdown", 15), ("reset", 25), ("kernel", 40), ("systemd", 50),
                      ("sshd", 15), ("up", 55)]
    table = watch.table()
    assert "boot 1: firmware + GRUB" in table and "boot 2: kernel + initramfs" in table
    assert "over budget" not in table


def test_a_slow_stage_goes_on_while_the_console_advances(tmp_path: Path) -> None:
    clock = Clock()
    watch = make_watch(tmp_path, clock, stall=60)
    play(watch, clock, tmp_path, FIRST_BOOT[:4])  # systemd starts at +70
    budget = STAGES["systemd"][1]
    # a line every 30 s keeps a stage past its budget alive ...
    for at in range(100, int(70 + budget * 2), 30):
        clock.now = 1000 + at
        say(tmp_path / "console/worker-1.log",
            "[ ***  ] A start job is running for Kubernetes Kubelet (3min 2s / 5min)\n")
        watch.poll()
        watch.check("vagrant up", 10_000, 1000)
    say(tmp_path / "console/worker-1.log", "\x1b[0;31m*     \x1b[0m] Job ssh.service/start "
                                           "running (5min 51s / 7min 17s)\r\r\n")
    watch.poll()
    assert "Kubernetes Kubelet (3min 2s / 5min)" in watch.table()
    assert "start job seen: ssh.service (5min 51s / 7min 17s)" in watch.table()
    # ... until it is quiet for longer than `stall`
    clock.now += 61
    with pytest.raises(StageTimeout, match=r"worker-1: systemd up to the join or sshd: \d+s, "
                                           r"over its budget of 420s, and no console"):
        watch.check("vagrant up", 10_000, 1000)


def test_a_chatty_stage_ends_at_its_cap(tmp_path: Path) -> None:
    clock = Clock()
    watch = make_watch(tmp_path, clock)
    play(watch, clock, tmp_path, FIRST_BOOT[:3])  # the kernel starts at +30
    clock.now = 1030 + STAGES["kernel"][1] * 3 + 1
    say(tmp_path / "console/worker-1.log", "[  900.0] still printing\n")
    watch.poll()
    with pytest.raises(StageTimeout, match=r"worker-1: kernel \+ initramfs: .*over 3x"):
        watch.check("vagrant up", 10_000, 1000)


def test_the_wait_itself_has_a_budget_and_logs_count_as_progress(tmp_path: Path) -> None:
    clock = Clock()
    watch = make_watch(tmp_path, clock, stall=30)
    play(watch, clock, tmp_path, FIRST_BOOT)  # up at +350: no stage budget any more
    clock.now = 1000 + 350 + 200
    say(tmp_path / "mcc.log", "rendered worker\n")
    watch.poll()
    watch.check("both VMs Done", 100, 1350)  # past its budget, but the controller logs
    clock.now += 31
    with pytest.raises(StageTimeout, match="both VMs Done: 231s, over its budget of 100s"):
        watch.check("both VMs Done", 100, 1350)


def test_vagrant_steps_before_the_console_exists(tmp_path: Path) -> None:
    clock = Clock()
    watch = make_watch(tmp_path, clock, stall=30)
    clock.now = 1010
    say(tmp_path / "up.log", "==> worker-1: Uploading base box image as volume into Libvirt "
                             "storage...\n")
    watch.poll()
    clock.now = 1010 + 600 + 31
    with pytest.raises(StageTimeout, match="worker-1: vagrant: box upload: 631s, over its budget of 600s"):
        watch.check("vagrant up", 10_000, 1000)
