"""A MachineConfig the pool's nodes cannot apply in place is refused at render time.

Expected texts are MCO's: pkg/controller/render/render_controller.go
(generateAndValidateRenderedMachineConfig: "reconciliation failed between current config %q and
base config %q: %s", wrapped by syncGeneratedMachineConfig's "could not generate rendered
MachineConfig: %w" and syncFailingStatus' "Failed to render configuration for pool %s: %v") and
the reasons of pkg/controller/common/reconcile.go (isConfigReconcilable).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from machineconfig.status import find_condition
from machineconfig.rendered_config import RenderedConfig
from mcc.render import RenderError
from mcc.render_controller import RenderController
from mcc.render_reconcile import check_against_current
from tests.support.clusterkit import make_store, write

MC = """\
apiVersion: machineconfiguration.openshift.io/v1
kind: MachineConfig
metadata:
  name: {name}
  labels:
    machineconfiguration.openshift.io/role: worker
spec:
  config:
    ignition:
      version: 3.2.0
{body}"""

USER = """\
    passwd:
      users:
      - name: {user}
        sshAuthorizedKeys: [ssh-ed25519 AAAA {user}]
"""

FILESYSTEM = """\
    storage:
      filesystems:
      - device: /dev/vdb
        format: xfs
        path: /var/data
"""


def degraded(store: object, pool: str = "worker") -> str | None:
    obj = store.get_object("MachineConfigPool", pool)  # type: ignore[attr-defined]
    cond = find_condition(obj["status"], "RenderDegraded")
    return str(cond["message"]) if cond is not None and cond["status"] == "True" else None


def configuration(store: object) -> str:
    obj = store.get_object("MachineConfigPool", "worker")  # type: ignore[attr-defined]
    return str(obj["spec"]["configuration"]["name"])


@pytest.mark.parametrize("body,reason", [
    (USER.format(user="alice"), "invalid passwd change(s): ignition passwd user section contains "
                                "unsupported changes: non-core user"),
    (FILESYSTEM, "ignition filesystems section contains changes"),
])
def test_an_unreconcilable_machine_config_is_refused_and_the_pool_keeps_its_config(
        tmp_path: Path, body: str, reason: str) -> None:
    """Before: the pool moved to the new config and every node went Unreconcilable."""
    store, inputs = make_store(tmp_path)
    controller = RenderController(store)
    controller.sync()
    good = configuration(store)
    write(inputs / "50-worker-change.yaml", MC.format(name="50-worker-change", body=body))
    store.revision()
    result = controller.sync()
    assert result is not None and "worker" not in result.rendered
    assert degraded(store) == (
        "Failed to render configuration for pool worker: could not generate rendered "
        f'MachineConfig: reconciliation failed between current config "{good}" and base config '
        f'"50-worker-change": {reason}')
    assert configuration(store) == good
    # taking the change back clears the condition
    (inputs / "50-worker-change.yaml").unlink()
    store.revision()
    controller.sync()
    assert degraded(store) is None and configuration(store) == good


def test_core_ssh_keys_are_a_reconcilable_change(tmp_path: Path) -> None:
    store, inputs = make_store(tmp_path)
    controller = RenderController(store)
    controller.sync()
    good = configuration(store)
    write(inputs / "99-worker-ssh.yaml", MC.format(name="99-worker-ssh", body=USER.format(user="core")))
    store.revision()
    controller.sync()
    assert degraded(store) is None and configuration(store) != good


def test_a_pool_without_a_config_yet_is_not_checked(tmp_path: Path) -> None:
    store, inputs = make_store(tmp_path)
    write(inputs / "50-worker-fs.yaml", MC.format(name="50-worker-fs", body=FILESYSTEM))
    store.revision()
    RenderController(store).sync()
    assert degraded(store) is None  # first boot provisions filesystems: nothing to reconcile


def mc(name: str, config: dict[str, object], fips: bool = False) -> dict[str, object]:
    return {"metadata": {"name": name}, "spec": {"config": {"ignition": {"version": "3.5.0"},
                                                           **config}, "fips": fips}}


def test_without_a_single_culprit_both_errors_are_reported() -> None:
    """MCO's fallback text when no one component's reason is the whole render's reason: here the
    render turns FIPS on, and no component alone does (each says fips: false)."""
    current = mc("rendered-worker-old", {})
    generated = mc("rendered-worker-new", {}, fips=True)
    with pytest.raises(RenderError) as err:
        check_against_current(RenderedConfig(current), RenderedConfig(generated),
                              [mc("00-worker", {})])
    assert str(err.value) == (
        'could not generate rendered MachineConfig: render reconciliation error: new '
        'machineconfig "rendered-worker-old" is not reconcilable against "rendered-worker-new": '
        'detected change to FIPS flag; refusing to modify FIPS on a running cluster; component '
        'errors: <nil>')
