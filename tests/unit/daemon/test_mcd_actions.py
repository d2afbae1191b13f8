"""machineconfig.disruption's post-config actions: the default policy table, user policies, longest-path match, drain, registries."""
from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from machineconfig.disruption import (DEFAULT_POLICY, NONE, REBOOT, Action, ActionType,
                                      MachineConfigDiff, PolicyError, describe, drain_required,
                                      is_safe_registries_change, load_policy, match_file_policy,
                                      parse_policy, post_config_actions, reload, restart)

CRIO = "crio.service"


def files(*paths: str) -> MachineConfigDiff:
    return MachineConfigDiff(files_changed=tuple(paths))


@pytest.mark.parametrize(("path", "expected"), [
    ("/var/lib/kubelet/config.json", [NONE]),
    ("/etc/containers/policy.json", [reload(CRIO)]),
    ("/etc/containers/registries.conf", [Action(ActionType.SPECIAL)]),
    ("/etc/containers/registries.d/a/b.yaml", [reload(CRIO)]),
    ("/etc/crio/policies/x.json", [reload(CRIO)]),
    ("/etc/machine-config-daemon/no-reboot/containers-gpg.pub", [reload(CRIO)]),
    ("/etc/nmstate/openshift/eth0.yml", [NONE]),
    ("/etc/pki/ca-trust/source/anchors/openshift-config-user-ca-bundle.crt",
     [restart("coreos-update-ca-trust.service"), restart(CRIO)]),
    ("/etc/kubernetes/credential-providers/ecr.yaml", [restart("kubelet.service")]),
    ("/etc/systemd/system/kubelet.service.d/40-kubelet-crio-image-credential-provider.conf",
     [Action(ActionType.DAEMON_RELOAD), restart("kubelet.service")]),
    ("/etc/kubernetes/kubelet-ca.crt", [REBOOT]),
    ("/etc/kubernetes/kubelet.conf", [REBOOT]),
    ("/etc/containers/registries.d.bak", [REBOOT]),  # a prefix of a name is not a parent dir
])
def test_default_policy_table(path: str, expected: list[Action]) -> None:
    assert post_config_actions(files(path)) == expected


def test_any_unmatched_file_reboots_the_whole_update() -> None:
    assert post_config_actions(files("/etc/containers/policy.json", "/etc/foo")) == [REBOOT]


def test_units_reboot_unless_a_policy_names_them() -> None:
    assert post_config_actions(MachineConfigDiff(units_added=("a.service",))) == [REBOOT]
    assert post_config_actions(MachineConfigDiff(units_changed=("iri-registry.service",))) == \
        [Action(ActionType.DAEMON_RELOAD), restart("iri-registry.service")]


def test_os_level_fips_and_force_reboot() -> None:
    for diff in (MachineConfigDiff(kargs=True), MachineConfigDiff(os_update=True),
                 MachineConfigDiff(kernel_type=True), MachineConfigDiff(extensions=True),
                 MachineConfigDiff(fips=True)):
        assert post_config_actions(diff) == [REBOOT]
    assert post_config_actions(MachineConfigDiff(), force=True) == [REBOOT]


def test_no_change_and_ssh_only_are_none() -> None:
    assert post_config_actions(MachineConfigDiff()) == [NONE]
    assert post_config_actions(MachineConfigDiff(passwd=True)) == [NONE]


def test_none_dropped_and_duplicates_merged() -> None:
    diff = files("/var/lib/kubelet/config.json", "/etc/containers/policy.json",
                 "/etc/crio/policies/a")
    assert post_config_actions(diff) == [reload(CRIO)]


USER_POLICY = """apiVersion: operator.openshift.io/v1
kind: MachineConfiguration
metadata: {name: cluster}
spec:
  nodeDisruptionPolicy:
    files:
    - path: /etc/foo
      actions: [{type: Restart, restart: {serviceName: foo.service}}]
    - path: /etc/foo/bar
      actions: [{type: Reload, reload: {serviceName: bar.service}}]
    - path: /etc/containers/policy.json
      actions: [{type: None}]
    units:
    - name: foo.service
      actions: [{type: DaemonReload}, {type: Drain}]
    sshkey:
      actions: [{type: Restart, restart: {serviceName: sshd.service}}]
"""


def test_user_policy_longest_path_replace_and_append(tmp_path: Path) -> None:
    path = tmp_path / "mc.yaml"
    path.write_text(USER_POLICY)
    policy = load_policy(path)
    assert match_file_policy(policy, "/etc/foo/bar/baz") == (reload("bar.service"),)
    assert match_file_policy(policy, "/etc/foo/other") == (restart("foo.service"),)
    assert match_file_policy(policy, "/etc/containers/policy.json") == (NONE,)  # replaced
    assert match_file_policy(policy, "/etc/crio/policies/a") == (reload(CRIO),)  # default kept
    diff = MachineConfigDiff(units_changed=("foo.service",), passwd=True)
    actions = post_config_actions(diff, policy)
    assert actions == [Action(ActionType.DAEMON_RELOAD), Action(ActionType.DRAIN),
                       restart("sshd.service")]
    assert drain_required(actions, {}, {})


def test_bare_node_disruption_policy_document() -> None:
    policy = parse_policy({"files": [{"path": "/etc/x", "actions": [{"type": "None"}]}]})
    assert policy.files == {"/etc/x": (NONE,)} and policy.sshkey == ()


@pytest.mark.parametrize("document", [
    {"files": [{"path": "/x", "actions": []}]},
    {"files": [{"path": "/x", "actions": [{"type": "Explode"}]}]},
    {"files": [{"path": "/x", "actions": [{"type": "Reload"}]}]},
])
def test_bad_user_policies_are_refused(document: dict[str, Any]) -> None:
    with pytest.raises(PolicyError):
        parse_policy(document)


def registries_ign(text: str) -> dict[str, Any]:
    return {"storage": {"files": [{"path": "/etc/containers/registries.conf",
                                   "contents": {"source": "data:," + quote(text)}}]}}


BASE = """unqualified-search-registries = ["a.io"]
[[registry]]
location = "quay.io/x"
[[registry.mirror]]
location = "m1.io/x"
"""


@pytest.mark.parametrize(("new", "safe"), [
    (BASE, True),
    (BASE.replace('["a.io"]', '["a.io", "b.io"]'), True),
    (BASE.replace('["a.io"]', '["b.io", "a.io"]'), False),
    (BASE.replace('["a.io"]', "[]"), False),
    (BASE + '[[registry.mirror]]\nlocation = "m2.io/x"\npull-from-mirror = "digest-only"\n', True),
    (BASE + '[[registry.mirror]]\nlocation = "m2.io/x"\n', False),
    (BASE.replace('location = "m1.io/x"', 'location = "m1.io/x"\npull-from-mirror = "digest-only"'),
     True),
    (BASE.replace('location = "m1.io/x"', 'location = "m1.io/x"\npull-from-mirror = "tag-only"'),
     False),
    (BASE.replace('location = "quay.io/x"', 'location = "quay.io/x"\nblocked = true'), False),
    (BASE.replace('location = "quay.io/x"', 'location = "quay.io/x"\ninsecure = true'), False),
    ('unqualified-search-registries = ["a.io"]\n', False),  # registry removed
    (BASE + '[[registry]]\nlocation = "new.io"\nmirror-by-digest-only = true\n', True),
    (BASE + '[[registry]]\nlocation = "new.io"\n', False),
    (BASE + '[[registry]]\nlocation = "n.io"\n[[registry.mirror]]\nlocation = "m.io"\n'
     'pull-from-mirror = "digest-only"\n', True),
    ("this is [not toml", False),
])
def test_registries_safe_change_rule(new: str, safe: bool) -> None:
    assert is_safe_registries_change(BASE.encode(), new.encode()) is safe
    special = [Action(ActionType.SPECIAL)]
    assert drain_required(special, registries_ign(BASE), registries_ign(new)) is (not safe)


def test_drain_rule_and_description() -> None:
    assert drain_required([REBOOT], {}, {}) and not drain_required([reload(CRIO)], {}, {})
    assert describe([REBOOT], True) == "drain, reboot"
    assert describe([reload(CRIO), restart("kubelet.service")], False) == \
        "reload crio.service, restart kubelet.service"
    assert describe([NONE], False) == "none"
    assert DEFAULT_POLICY.sshkey == (NONE,)
