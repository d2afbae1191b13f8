"""The repository's ignition-templates rendered for sample ControllerConfigs: the MachineConfigs,
files and units a Fedora CoreOS node boots with, per role and platform."""
from __future__ import annotations

import base64
import re

import json

import pytest
import yaml

from machineconfig.constants import CONTROLLER_VERSION, GENERATED_BY_CONTROLLER_VERSION_ANNOTATION
from machineconfig.errors import InputError
from mcc.template import render_templates

from tests.support.templatekit import (
    CA_PEM,
    PULL_SECRET,
    TEMPLATES,
    assert_valid_ignition,
    by_name,
    controller_config,
    file_text,
    files,
    units,
)

PLATFORMS = ["None", "BareMetal", "Libvirt", "AWS", "GCP", "Azure", "VSphere", "OpenStack"]
EXPECTED_NAMES = ["00-master", "00-worker", "01-master-container-runtime", "01-master-kubelet",
                  "01-worker-container-runtime", "01-worker-kubelet"]
FIRST_MC_FILES = {
    "/var/lib/kubelet/config.json", "/etc/kubernetes/kubelet-ca.crt", "/etc/kubernetes/ca.crt",
    "/etc/node-sizing-enabled.env", "/usr/local/sbin/dynamic-system-reserved-calc.sh",
    "/etc/sysctl.d/80-kubernetes.conf", "/etc/sysctl.d/90-kubelet.conf",
    "/etc/modules-load.d/kubernetes.conf",
}
FIRST_MC_UNITS = {"machine-config-daemon.service", "machine-config-daemon-firstboot.service",
                  "kubelet-auto-node-size.service", "zincati.service"}
RUNTIME_FILES = {"/etc/crio/crio.conf.d/00-default", "/etc/containers/registries.conf",
                 "/etc/containers/policy.json", "/etc/containers/storage.conf"}


def render(platform: str = "None", **kw: object) -> dict[str, dict]:
    return by_name(render_templates(controller_config(platform, **kw), TEMPLATES,
                                    pull_secret=PULL_SECRET))


@pytest.mark.parametrize("platform", ["None", "AWS"])
def test_three_machine_configs_per_role_with_expected_files_and_units(platform: str) -> None:
    mcs = render(platform)
    assert sorted(mcs) == EXPECTED_NAMES
    for role in ("master", "worker"):
        first = mcs[f"00-{role}"]
        assert FIRST_MC_FILES <= set(files(first))
        assert FIRST_MC_UNITS <= set(units(first))
        runtime = mcs[f"01-{role}-container-runtime"]
        assert set(files(runtime)) == RUNTIME_FILES
        assert set(units(runtime)) == {"crio.service"}
        kubelet = mcs[f"01-{role}-kubelet"]
        assert set(files(kubelet)) == {"/etc/kubernetes/kubelet.conf"}
        assert set(units(kubelet)) == {"kubelet.service"}
        # common/ templates go only into the first MachineConfig of the role
        assert "/var/lib/kubelet/config.json" not in files(runtime) | files(kubelet)
    for mc in mcs.values():
        assert_valid_ignition(mc["spec"]["config"])


@pytest.mark.parametrize("platform", PLATFORMS)
def test_every_platform_renders_valid_ignition(platform: str) -> None:
    mcs = render(platform)
    assert sorted(mcs) == EXPECTED_NAMES
    for mc in mcs.values():
        assert_valid_ignition(mc["spec"]["config"])


def test_generated_machine_configs_carry_annotation_role_label_and_blank_os_image() -> None:
    for name, mc in render("AWS").items():
        assert mc["apiVersion"] == "machineconfiguration.openshift.io/v1"
        assert mc["kind"] == "MachineConfig"
        meta = mc["metadata"]
        assert meta["annotations"] == {GENERATED_BY_CONTROLLER_VERSION_ANNOTATION: CONTROLLER_VERSION}
        assert meta["labels"] == {"machineconfiguration.openshift.io/role": name.split("-")[1]}
        assert meta["ownerReferences"][0]["kind"] == "ControllerConfig"
        assert meta["ownerReferences"][0]["uid"] == "cc-uid"
        assert mc["spec"]["osImageURL"] == ""
        assert mc["spec"]["baseOSExtensionsContainerImage"] == ""


def test_kubelet_conf_uses_cluster_dns_ip_and_tls_profile() -> None:
    mc = render()["01-worker-kubelet"]
    conf = yaml.safe_load(file_text(mc, "/etc/kubernetes/kubelet.conf"))
    assert conf["kind"] == "KubeletConfiguration"
    assert conf["clusterDNS"] == ["172.30.0.10"]
    assert conf["cgroupDriver"] == "systemd"
    assert conf["authentication"]["x509"]["clientCAFile"] == "/etc/kubernetes/kubelet-ca.crt"
    assert conf["tlsMinVersion"] == "VersionTLS12"
    assert files(mc)["/etc/kubernetes/kubelet.conf"]["mode"] == 0o644
    assert files(mc)["/etc/kubernetes/kubelet.conf"]["overwrite"] is True


def test_pull_secret_is_compact_json_mode_0600_and_cas_are_decoded() -> None:
    mc = render()["00-worker"]
    secret = files(mc)["/var/lib/kubelet/config.json"]
    assert secret["mode"] == 0o600
    assert file_text(mc, "/var/lib/kubelet/config.json") == json.dumps(
        json.loads(PULL_SECRET), separators=(",", ":"))
    assert file_text(mc, "/etc/kubernetes/kubelet-ca.crt") == CA_PEM
    assert file_text(mc, "/etc/kubernetes/ca.crt") == CA_PEM
    # inline contents use MCO's percent-encoded data URLs
    assert secret["contents"]["source"].startswith("data:,%7B%22auths%22")


def test_kubelet_service_per_role_and_platform() -> None:
    none, aws = render("None"), render("AWS")
    worker = units(none["01-worker-kubelet"])["kubelet.service"]
    assert worker["enabled"] is True
    assert "ExecStart=/usr/bin/kubelet" in worker["contents"]
    assert "--node-labels=node-role.kubernetes.io/worker," in worker["contents"]
    assert "--cloud-provider= " in worker["contents"]
    assert "credential-provider" not in worker["contents"]
    master = units(aws["01-master-kubelet"])["kubelet.service"]["contents"]
    assert "node-role.kubernetes.io/master=:NoSchedule" in master
    assert "--cloud-provider=external" in master
    assert "ecr-credential-provider.yaml" in master
    assert "/etc/kubernetes/credential-providers/ecr-credential-provider.yaml" in files(aws["00-master"])


def test_daemon_units_run_mcd() -> None:
    u = units(render()["00-worker"])
    assert "ExecStart=/usr/local/bin/mcd start" in u["machine-config-daemon.service"]["contents"]
    firstboot = u["machine-config-daemon-firstboot.service"]["contents"]
    assert "ExecStart=/usr/local/bin/mcd firstboot" in firstboot
    assert "ConditionPathExists=/etc/ignition-machine-config-encapsulated.json" in firstboot
    assert u["zincati.service"] == {"name": "zincati.service", "mask": True}


def test_crio_defaults_and_dropins() -> None:
    mc = render()["01-worker-container-runtime"]
    crio = file_text(mc, "/etc/crio/crio.conf.d/00-default")
    assert 'default_runtime = "crun"' in crio
    assert 'pause_image = "quay.io/openshift-release-dev/ocp-v4.0-art-dev@sha256:' in crio
    assert 'global_auth_file = "/var/lib/kubelet/config.json"' in crio
    dropins = [d["name"] for d in units(mc)["crio.service"]["dropins"]]
    assert dropins == ["10-mco-default-madv.conf", "10-mco-after-firstboot.conf"]
    assert json.loads(file_text(mc, "/etc/containers/policy.json"))["default"] == [
        {"type": "insecureAcceptAnything"}]


def test_proxy_adds_dropins_merged_into_the_same_units() -> None:
    proxy = {"httpProxy": "http://proxy:3128", "httpsProxy": "http://proxy:3128", "noProxy": ".cluster.local"}
    mcs = render(proxy=proxy)
    crio = units(mcs["01-worker-container-runtime"])["crio.service"]
    assert crio["enabled"] is True
    # crio.service-proxy.yaml sorts before crio.service.yaml ('-' < '.'), as file names do in MCO
    assert [d["name"] for d in crio["dropins"]] == [
        "10-mco-proxy.conf", "10-mco-default-madv.conf", "10-mco-after-firstboot.conf"]
    kubelet = units(mcs["01-worker-kubelet"])["kubelet.service"]
    assert "contents" in kubelet and kubelet["dropins"][0]["name"] == "10-mco-proxy.conf"
    assert file_text(mcs["00-worker"], "/etc/mco/proxy.env") == (
        "HTTP_PROXY=http://proxy:3128\nHTTPS_PROXY=http://proxy:3128\nNO_PROXY=.cluster.local\n")
    assert "/etc/mco/proxy.env" not in files(render()["00-worker"])


def test_optional_templates_render_only_when_their_data_is_set() -> None:
    bundle = "-----BEGIN CERTIFICATE-----\nUSERCA\n-----END CERTIFICATE-----"
    mcs = render(additionalTrustBundle=bundle)
    path = "/etc/pki/ca-trust/source/anchors/openshift-config-user-ca-bundle.crt"
    assert file_text(mcs["00-worker"], path) == bundle + "\n"
    assert path not in files(render()["00-worker"])
    # on a cluster the bundle is a []byte field: base64, as kube-apiserver stores and serves it
    encoded = base64.b64encode(bundle.encode()).decode()
    assert file_text(render(additionalTrustBundle=encoded)["00-worker"], path) == bundle + "\n"


@pytest.mark.parametrize(("value", "why"), [
    ("not base64!", "Only base64 data is allowed"),
    ("//8=", "can't decode byte 0xff"),  # base64, but of bytes that are no text
])
def test_a_ca_bundle_that_is_neither_pem_nor_base64_names_its_field(value: str, why: str) -> None:
    with pytest.raises(InputError, match=r"spec\.additionalTrustBundle: neither PEM nor base64 "
                       rf"of text \(.*{re.escape(why)}"):
        render(additionalTrustBundle=value)


def test_cloud_config_is_removed_on_platforms_without_a_cloud() -> None:
    # common/<none|baremetal|libvirt>/files/cloud-config.yaml are zero bytes: they remove _base's.
    for platform, expected in (("AWS", True), ("None", False), ("BareMetal", False), ("Libvirt", False)):
        mcs = render(platform, cloudProviderConfig="[Global]\nzone = a\n")
        assert ("/etc/kubernetes/cloud.conf" in files(mcs["00-worker"])) is expected, platform


def test_on_prem_platforms_choose_the_node_ip_from_the_api_vip() -> None:
    cc = controller_config("BareMetal")
    cc["spec"]["infra"]["status"]["platformStatus"]["baremetal"] = {"apiServerInternalIPs": ["192.0.2.5"]}
    mcs = by_name(render_templates(cc, TEMPLATES))
    assert "nodeip-configuration.service" in units(mcs["00-worker"])
    assert "target=192.0.2.5" in file_text(mcs["00-worker"], "/usr/local/sbin/nodeip-configuration.sh")
    assert "nodeip-configuration.service" not in units(render("AWS")["00-worker"])


def test_single_node_topology_clears_the_control_plane_taint() -> None:
    mcs = render(topology="SingleReplica")
    kubelet = units(mcs["01-master-kubelet"])["kubelet.service"]
    assert kubelet["dropins"] == [{"name": "10-sno-schedulable.conf",
                                   "contents": '[Service]\nEnvironment="KUBELET_REGISTER_TAINTS="\n'}]
    assert "dropins" not in units(render()["01-master-kubelet"])["kubelet.service"]


def test_arbiter_role_only_for_highly_available_arbiter() -> None:
    mcs = render(topology="HighlyAvailableArbiter")
    assert {"00-arbiter", "01-arbiter-container-runtime", "01-arbiter-kubelet"} <= set(mcs)
    service = units(mcs["01-arbiter-kubelet"])["kubelet.service"]["contents"]
    assert "node-role.kubernetes.io/arbiter=:NoSchedule" in service
    for mc in mcs.values():
        assert_valid_ignition(mc["spec"]["config"])
    assert not any("arbiter" in name for name in render())


def test_ipv6_clusters_bind_the_kubelet_to_ipv6() -> None:
    service = units(render(ipFamilies="IPv6")["01-worker-kubelet"])["kubelet.service"]["contents"]
    assert 'Environment="KUBELET_NODE_IP=::"' in service


def test_rendering_is_deterministic() -> None:
    assert render_templates(controller_config("AWS"), TEMPLATES) == render_templates(
        controller_config("AWS"), TEMPLATES)


def test_values_reach_the_shipped_templates() -> None:
    default = render()["01-worker-container-runtime"]
    assert file_text(default, "/etc/containers/registries.conf").startswith(
        'unqualified-search-registries = ["registry.access.redhat.com", "docker.io"]\n')
    mcs = by_name(render_templates(controller_config("None"), TEMPLATES,
                                   {"unqualifiedSearchRegistries": ["quay.io"]}))
    assert file_text(mcs["01-master-container-runtime"], "/etc/containers/registries.conf") == (
        'unqualified-search-registries = ["quay.io"]\nshort-name-mode = ""\n')


def test_daemon_unit_is_left_out_for_a_daemonset_cluster() -> None:
    # the systemd-service daemon by default; `daemonUnit: false` (manifests/ run the DaemonSet)
    # leaves it out, so a node never runs two daemons
    default = by_name(render_templates(controller_config("None"), TEMPLATES,
                                       pull_secret=PULL_SECRET))
    assert "machine-config-daemon.service" in units(default["00-worker"])
    daemonset = by_name(render_templates(controller_config("None"), TEMPLATES,
                                         {"daemonUnit": False}, pull_secret=PULL_SECRET))
    assert "machine-config-daemon.service" not in units(daemonset["00-worker"])
    assert "machine-config-daemon-firstboot.service" in units(daemonset["00-worker"])
