"""Kernel arguments on GRUB hosts (mcd/grub.py through the update, the boot check and firstboot).

The node roots here are chroot-able: /bin/sh (dash and its libraries) and an update-grub that is
a real shell script doing what grub-mkconfig does with the arguments: it sources
/etc/default/grub and /etc/default/grub.d/*.cfg and writes GRUB_CMDLINE_LINUX onto the `linux`
line of /boot/grub/grub.cfg. It fails, as a broken update-grub would, when it meets the argument
test.fail-update-grub. The daemon runs it chrooted into the root, as on a DaemonSet's /rootfs.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mcd import grub
from mcd import state as node_state
from machineconfig.constants import ENCAPSULATED_CONFIG_PATH as ENCAPSULATED
from mcd.firstboot import complete_encapsulated
from machineconfig.reconcile import NotReconcilableError
from machineconfig.rendered_config import RenderedConfig
from mcd.update import apply_update, plan_update, resume_after_boot
from tests.unit.daemon.test_mcd_update import FakeSystemd, mc

UPDATE_GRUB = """#!/bin/sh
# what grub-mkconfig does with the kernel arguments, in dash builtins only
set -e
. /etc/default/grub
for cfg in /etc/default/grub.d/*.cfg; do
    if [ -e "$cfg" ]; then . "$cfg"; fi
done
case " $GRUB_CMDLINE_LINUX " in
    *" test.fail-update-grub "*) echo "update-grub: simulated failure" >&2; exit 3 ;;
esac
printf 'menuentry "Debian" {\\n\\tlinux /vmlinuz root=UUID=1234 ro %s\\n}\\n' \\
    "$GRUB_CMDLINE_LINUX" > /boot/grub/grub.cfg
"""
ADMIN_DEFAULT_GRUB = 'GRUB_CMDLINE_LINUX="console=ttyS0 admin.keep=1"\n'


def _copy_into(root: Path, host_file: str) -> None:
    dst = root / host_file.lstrip("/")
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(os.path.realpath(host_file), dst)


@pytest.fixture
def grub_root(tmp_path: Path) -> Path:
    """A chroot-able node root with /etc/default/grub and the script above as update-grub."""
    if os.geteuid() != 0:
        pytest.fail("tests/unit/daemon/test_mcd_grub.py needs root: update-grub runs chrooted")
    root = tmp_path / "node"
    (root / "etc/default/grub.d").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/default/grub").write_text(ADMIN_DEFAULT_GRUB)
    (root / "boot/grub").mkdir(parents=True)
    dash = shutil.which("dash")
    assert dash, "dash is missing (Debian's /bin/sh)"
    (root / "bin").mkdir()
    shutil.copy2(dash, root / "bin/sh")
    libraries = subprocess.run(["ldd", dash], capture_output=True, text=True, check=True).stdout
    for library in re.findall(r"(/\S+) \(0x", libraries):
        _copy_into(root, library)
    script = root / "usr/sbin/update-grub"
    script.parent.mkdir(parents=True)
    script.write_text(UPDATE_GRUB)
    script.chmod(0o755)
    return root


def linux_line(root: Path) -> str:
    return next(line.strip() for line in (root / "boot/grub/grub.cfg").read_text().splitlines()
                if line.strip().startswith("linux"))


def kernel_command_line(root: Path) -> str:
    """What the kernel would show on /proc/cmdline after booting the generated entry."""
    return "BOOT_IMAGE=" + linux_line(root).split(None, 1)[1]


def dropin(root: Path) -> str:
    return (root / grub.DROPIN.lstrip("/")).read_text()


# ---- the drop-in -------------------------------------------------------------------------------

def test_dropin_appends_to_the_admins_arguments_and_sh_reads_it_back(tmp_path: Path) -> None:
    text = grub.dropin_text(["a=1", "isolcpus=1-3,5", "acpi_osi=!Linux"], "rendered-worker-1")
    assert text.decode().splitlines()[-1] == \
        'GRUB_CMDLINE_LINUX="$GRUB_CMDLINE_LINUX a=1 isolcpus=1-3,5 acpi_osi=!Linux"'
    path = tmp_path / "50-machine-config.cfg"
    path.write_bytes(text)
    shown = subprocess.run(["sh", "-c", f'GRUB_CMDLINE_LINUX="quiet x=y"; . {path}; '
                            'printf %s "$GRUB_CMDLINE_LINUX"'],
                           capture_output=True, text=True, check=True).stdout
    assert shown == "quiet x=y a=1 isolcpus=1-3,5 acpi_osi=!Linux"


@pytest.mark.parametrize(("entry", "char"), [
    ('acpi_osi="Windows 2012"', '"'), ("a=$(reboot)", "$"), ("a=`id`", "`"), ("a;reboot", ";"),
    ("a\\b", "\\"), ("a|b", "|"), ("a&b", "&"), ("a{b}", "{"), ("#a", "#"), ("a>b", ">"),
    ("a*", "*"), ("a'b", "'"),
])
def test_an_argument_unsafe_in_sh_or_grub_is_refused_naming_the_character(entry: str,
                                                                           char: str) -> None:
    with pytest.raises(grub.GrubError) as err:
        grub.checked_arguments(RenderedConfig(mc("b", kernelArguments=[entry])))
    assert f"holds {char!r}: refused for the GRUB drop-in" in str(err.value)


def test_an_entry_with_a_newline_is_refused() -> None:
    with pytest.raises(grub.GrubError, match=r"kernel argument 'a=1\\nb=2' holds a newline"):
        grub.checked_arguments(RenderedConfig(mc("b", kernelArguments=["a=1\nb=2"])))


def test_an_unsafe_argument_makes_the_update_unreconcilable_before_anything_is_written(
        grub_root: Path) -> None:
    systemd = FakeSystemd()
    outcome = apply_update(mc("a"), mc("b", {"/etc/x": "x"}, kernelArguments=["a=$(reboot)"]),
                           systemd, root=grub_root)
    assert outcome.state == "Unreconcilable"
    assert outcome.reason == ("can't reconcile config a with b: kernel argument 'a=$(reboot)' "
                              "holds '$': refused for the GRUB drop-in (only letters, digits "
                              "and ._,:=/+@%~^![]- are allowed there)")
    assert not (grub_root / "etc/x").exists()
    assert not (grub_root / grub.DROPIN.lstrip("/")).exists()
    assert not systemd.calls


# ---- which hosts ---------------------------------------------------------------------------------

def test_hosts_without_update_grub_or_its_defaults_stay_unreconcilable(grub_root: Path) -> None:
    (grub_root / "usr/sbin/update-grub").unlink()
    with pytest.raises(NotReconcilableError) as err:
        plan_update(mc("a"), mc("b", kernelArguments=["a=1"]), root=grub_root)
    assert str(err.value) == (
        "can't reconcile config a with b: changes to kernelArguments need rpm-ostree or GRUB, "
        "and this node has neither (/run/ostree-booted is absent; no update-grub or "
        "grub-mkconfig in /usr/sbin or /sbin)")
    (grub_root / "usr/sbin/grub-mkconfig").write_text("#!/bin/sh\n")
    shutil.rmtree(grub_root / "etc/default")
    with pytest.raises(NotReconcilableError, match=r"neither \(/run/ostree-booted is absent; "
                                                   r"no /etc/default/grub and no "
                                                   r"/etc/default/grub.d\)$"):
        plan_update(mc("a"), mc("b", kernelArguments=["a=1"]), root=grub_root)
    (grub_root / "etc/default").mkdir()
    (grub_root / "etc/default/grub").write_text(ADMIN_DEFAULT_GRUB)
    assert plan_update(mc("a"), mc("b", kernelArguments=["a=1"]), root=grub_root).reboot


def test_other_os_changes_still_need_rpm_ostree_on_a_grub_host(grub_root: Path) -> None:
    with pytest.raises(NotReconcilableError, match=r"changes to osImageURL need rpm-ostree, "
                                                   r"and this node is not rpm-ostree based"):
        plan_update(mc("a"), mc("b", osImageURL="quay.io/os@sha256:1",
                                kernelArguments=["a=1"]), root=grub_root)


# ---- the update ----------------------------------------------------------------------------------

def test_kernel_arguments_follow_mco_semantics_and_keep_the_admins(grub_root: Path) -> None:
    systemd = FakeSystemd()
    first = apply_update(mc("a"), mc("b", kernelArguments=["a=1", "b"]), systemd,
                         root=grub_root)
    assert first.rebooting and systemd.calls[-1][0] == "Reboot"
    assert linux_line(grub_root) == "linux /vmlinuz root=UUID=1234 ro console=ttyS0 " \
                                    "admin.keep=1 a=1 b"
    assert not (grub_root / grub.PREVIOUS.lstrip("/")).exists()  # there was none before
    # the old config's arguments go, the new ones come, the admin's stay
    second = apply_update(mc("b", kernelArguments=["a=1", "b"]),
                          mc("c", kernelArguments=["b c=2"]), systemd, root=grub_root)
    assert second.rebooting
    assert linux_line(grub_root) == "linux /vmlinuz root=UUID=1234 ro console=ttyS0 " \
                                    "admin.keep=1 b c=2"
    assert "kernelArguments of c." in dropin(grub_root)
    assert (grub_root / grub.PREVIOUS.lstrip("/")).read_text().endswith(
        '"$GRUB_CMDLINE_LINUX a=1 b"\n')
    st = os.stat(grub_root / grub.DROPIN.lstrip("/"))
    assert (oct(st.st_mode & 0o777), st.st_uid) == ("0o644", 0)
    # no arguments any more: no drop-in, the admin's line alone
    apply_update(mc("c", kernelArguments=["b c=2"]), mc("d"), systemd, root=grub_root)
    assert not (grub_root / grub.DROPIN.lstrip("/")).exists()
    assert linux_line(grub_root) == "linux /vmlinuz root=UUID=1234 ro console=ttyS0 admin.keep=1"


def test_failing_update_grub_restores_the_previous_dropin_and_degrades(grub_root: Path) -> None:
    systemd = FakeSystemd()
    old = mc("b", {"/etc/motd": "old"}, kernelArguments=["a=1"])
    apply_update(mc("a"), old, systemd, root=grub_root)
    before = dropin(grub_root)
    new = mc("c", {"/etc/motd": "new", "/etc/extra": "x"},
             kernelArguments=["a=2", "test.fail-update-grub"])
    outcome = apply_update(old, new, systemd, root=grub_root)
    assert outcome.state == "Degraded" and not outcome.rebooting
    assert outcome.reason == (
        f"failed to apply c, rolled back to b: kernel arguments not applied: chroot {grub_root} "
        "/usr/sbin/update-grub exited 3: update-grub: simulated failure")
    assert dropin(grub_root) == before
    assert linux_line(grub_root).endswith("admin.keep=1 a=1")  # regenerated from the old one
    assert (grub_root / "etc/motd").read_text() == "old"  # the files rolled back as ever
    assert not (grub_root / "etc/extra").exists()
    assert node_state.read_state(grub_root)["state"] == "Degraded"
    assert ("Reboot", "Node will reboot into config c") not in systemd.calls


def test_a_later_failure_puts_the_dropin_and_grub_cfg_back(grub_root: Path) -> None:
    systemd = FakeSystemd()
    old = mc("b", kernelArguments=["a=1"])
    apply_update(mc("a"), old, systemd, root=grub_root)
    systemd.fail_on.add("Reload")  # the systemd Reload after the writes fails
    new = mc("c", units=[{"name": "x.service", "enabled": True, "contents": "[Service]\n"}],
             kernelArguments=["a=2"])
    outcome = apply_update(old, new, systemd, root=grub_root)
    assert outcome.state == "Degraded"
    assert dropin(grub_root).endswith('"$GRUB_CMDLINE_LINUX a=1"\n')
    assert linux_line(grub_root).endswith("admin.keep=1 a=1")


# ---- after the boot ------------------------------------------------------------------------------

def test_boot_is_done_only_when_every_argument_is_on_the_command_line(grub_root: Path) -> None:
    systemd = FakeSystemd()
    apply_update(mc("a"), mc("b", kernelArguments=["a=1", "b"]), systemd, root=grub_root)
    booted = kernel_command_line(grub_root)
    assert resume_after_boot(systemd, grub_root, cmdline=lambda _: booted).state == "Done"
    # booted from another grub.cfg than the one update-grub wrote
    outcome = resume_after_boot(systemd, grub_root,
                                cmdline=lambda _: "BOOT_IMAGE=/vmlinuz ro a=1 bb")
    assert (outcome.state, outcome.reason) == (
        "Degraded", "unexpected on-disk state validating against b: missing expected kernel "
                    "arguments: [b]")
    assert node_state.read_state(grub_root)["state"] == "Degraded"


def test_the_running_kernels_command_line_is_read_only_for_the_running_root(
        tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root: it bind-mounts /proc into a node root")
    running = Path("/proc/cmdline").read_text()
    assert grub.booted_cmdline(Path("/")) == running
    (tmp_path / "rootfs").symlink_to("/")  # "/" by another name
    assert grub.booted_cmdline(tmp_path / "rootfs") == running
    # a tree with a plain proc/cmdline file booted no kernel: nothing to check against
    tree = tmp_path / "tree"
    (tree / "proc").mkdir(parents=True)
    (tree / "proc/cmdline").write_text("BOOT_IMAGE=/vmlinuz a=1\n")
    assert grub.booted_cmdline(tree) is None
    # the host's procfs mounted in the root (the DaemonSet's /rootfs/proc)
    (tree / "proc/cmdline").unlink()
    subprocess.run(["mount", "--bind", "/proc", str(tree / "proc")], check=True, timeout=30)
    try:
        assert grub.booted_cmdline(tree) == running
    finally:
        subprocess.run(["umount", str(tree / "proc")], check=True, timeout=30)


# ---- first boot ----------------------------------------------------------------------------------

def test_first_boot_applies_the_first_configs_arguments_and_asks_for_the_reboot(
        grub_root: Path) -> None:
    first: dict[str, Any] = mc("rendered-worker-1", kernelArguments=["hugepages=4"])
    (grub_root / ENCAPSULATED.lstrip("/")).write_text(json.dumps(first))
    assert complete_encapsulated(grub_root) is True
    assert linux_line(grub_root).endswith("admin.keep=1 hugepages=4")
    assert "kernelArguments of rendered-worker-1." in dropin(grub_root)
    assert not (grub_root / ENCAPSULATED.lstrip("/")).exists()


def test_first_boot_without_grub_leaves_the_arguments_and_needs_no_reboot(
        grub_root: Path) -> None:
    (grub_root / "usr/sbin/update-grub").unlink()
    first: dict[str, Any] = mc("rendered-worker-1", kernelArguments=["hugepages=4"])
    (grub_root / ENCAPSULATED.lstrip("/")).write_text(json.dumps(first))
    assert complete_encapsulated(grub_root) is False
    assert not (grub_root / grub.DROPIN.lstrip("/")).exists()


def test_the_daemon_stays_degraded_while_an_argument_is_missing_after_the_boot(
        grub_root: Path) -> None:
    from tests.unit.daemon.test_mcd_daemon import CUR, DES, REASON, STATE, ann, cluster, lay_down
    from mcd.daemon import Daemon, Timeouts

    config = mc("rendered-worker-k", {"/etc/motd": "hello"}, kernelArguments=["a=1", "b=2"])
    lay_down(grub_root, config)
    api = cluster(config, current="rendered-worker-k", desired="rendered-worker-k")
    booted = ["BOOT_IMAGE=/vmlinuz ro a=1"]  # the old grub.cfg booted: b=2 is missing
    d = Daemon(api, "node-1", FakeSystemd(), root=grub_root, cmdline=lambda _: booted[0],
               timeouts=Timeouts(watch=0.05, backoff_min=0.01, backoff_max=0.05,
                                 drift_poll=0.01, drift_full=0.05))
    for _ in range(10):  # the drift monitor's full checks find the files fine meanwhile
        d.run(max_iterations=1)
        assert ann(api)[STATE] == "Degraded"
    assert ann(api)[REASON] == ("unexpected on-disk state validating against rendered-worker-k: "
                                "missing expected kernel arguments: [b=2]")
    booted[0] += " b=2"  # booted into the right entry
    for _ in range(40):
        d.run(max_iterations=1)
        if ann(api)[STATE] == "Done":
            break
    assert (ann(api)[STATE], ann(api)[CUR], ann(api)[DES]) == \
        ("Done", "rendered-worker-k", "rendered-worker-k")


def test_first_boot_fails_in_one_line_when_update_grub_fails_and_can_run_again(
        grub_root: Path) -> None:
    from mcd.firstboot import FirstbootError

    first: dict[str, Any] = mc("rendered-worker-1",
                               kernelArguments=["hugepages=4", "test.fail-update-grub"])
    (grub_root / ENCAPSULATED.lstrip("/")).write_text(json.dumps(first))
    with pytest.raises(FirstbootError) as err:
        complete_encapsulated(grub_root)
    assert str(err.value) == (f"kernel arguments not applied: chroot {grub_root} "
                              "/usr/sbin/update-grub exited 3: update-grub: simulated failure")
    assert not (grub_root / grub.DROPIN.lstrip("/")).exists()  # there was none before
    assert linux_line(grub_root).endswith("admin.keep=1")  # regenerated without them
    assert (grub_root / ENCAPSULATED.lstrip("/")).exists()  # the unit's retry starts over


def test_between_the_update_and_its_reboot_the_drift_monitor_flags_nothing(
        grub_root: Path) -> None:
    from mcd.drift_monitor import DriftMonitor

    systemd = FakeSystemd()
    new = mc("b", {"/etc/motd": "hello"}, kernelArguments=["a=1"])
    assert apply_update(mc("a"), new, systemd, root=grub_root).rebooting
    # the running kernel has not got a=1 yet (no reboot here); the files and the drop-in are
    # the config's, and the monitor watches files and units only
    flagged: list[str] = []
    monitor = DriftMonitor(new, grub_root, systemd, flagged.append, use_inotify=False)
    try:
        assert monitor.check(force=True) is None and not flagged
        (grub_root / "etc/motd").write_text("changed")  # while a real drift still is one
        assert "content mismatch" in (monitor.check(force=True) or "") and flagged
    finally:
        monitor.stop()


def test_links_out_of_the_root_never_take_the_dropin_outside(grub_root: Path,
                                                             tmp_path: Path) -> None:
    """/etc/default/grub.d as a link to a directory outside the root, and the drop-in itself
    as a link to a file outside: the daemon resolves both inside the root (as every write of
    it), so nothing outside changes."""
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.cfg"
    victim.write_text("untouched\n")
    shutil.rmtree(grub_root / "etc/default/grub.d")
    (grub_root / "etc/default/grub.d").symlink_to(outside)
    systemd = FakeSystemd()
    outcome = apply_update(mc("a"), mc("b", kernelArguments=["a=1"]), systemd, root=grub_root)
    assert sorted(p.name for p in outside.iterdir()) == ["victim.cfg"], outcome
    # the link's target, taken inside the root, is where the drop-in went
    inside = grub_root / str(outside).lstrip("/") / Path(grub.DROPIN).name
    assert outcome.rebooting and '"$GRUB_CMDLINE_LINUX a=1"' in inside.read_text()
    assert victim.read_text() == "untouched\n"
    # a real directory again, the drop-in a link to the victim
    (grub_root / "etc/default/grub.d").unlink()
    (grub_root / "etc/default/grub.d").mkdir()
    (grub_root / grub.DROPIN.lstrip("/")).symlink_to(victim)
    outcome = apply_update(mc("b"), mc("c", kernelArguments=["c=3"]), systemd, root=grub_root)
    assert victim.read_text() == "untouched\n", outcome
    written = grub_root / grub.DROPIN.lstrip("/")
    assert outcome.rebooting and not written.is_symlink()  # the link itself was replaced
    assert '"$GRUB_CMDLINE_LINUX c=3"' in written.read_text()
    assert sorted(p.name for p in outside.iterdir()) == ["victim.cfg"]
