"""Template, kubelet and container-runtime MachineConfigs go through the render controller's core
(validation, merge, hashed name) as a pool's inputs would."""
from __future__ import annotations

import json

from machineconfig.api import ControllerConfig, MachineConfig, MachineConfigPool
from machineconfig.ignition.dataurl import decode
from mcc.container_runtime_config import generate_container_runtime_machine_configs
from mcc.kubelet_config import generate_kubelet_machine_configs
from mcc.render import render_pool
from mcc.template import DEFAULT_TEMPLATES_DIR, render_templates

from tests.support.templatekit import PULL_SECRET, assert_valid_ignition, controller_config, pool, selector


def pool_object(name: str) -> dict:
    p = pool(name)
    p["spec"] = {"machineConfigSelector": {"matchLabels": {"machineconfiguration.openshift.io/role": name}}}
    return p


def test_generated_machine_configs_render_into_a_pool() -> None:
    cc = controller_config("AWS")
    pools = [pool_object("master"), pool_object("worker")]
    templates = render_templates(cc, DEFAULT_TEMPLATES_DIR, pull_secret=PULL_SECRET)
    kc = {"kind": "KubeletConfig", "metadata": {"name": "pods"},
          "spec": {"machineConfigPoolSelector": selector("worker"), "kubeletConfig": {"maxPods": 300}}}
    cr = {"kind": "ContainerRuntimeConfig", "metadata": {"name": "pids"},
          "spec": {"machineConfigPoolSelector": selector("worker"), "containerRuntimeConfig": {"pidsLimit": 4096}}}
    kubelet, _ = generate_kubelet_machine_configs([kc], pools, templates)
    runtime, _ = generate_container_runtime_machine_configs([cr], pools, templates)
    configs = [MachineConfig.model_validate(mc) for mc in templates + kubelet + runtime]
    worker = render_pool(MachineConfigPool.model_validate(pools[1]), configs, ControllerConfig.model_validate(cc))
    assert worker.name.startswith("rendered-worker-")
    assert worker.sources == ["00-worker", "01-worker-container-runtime", "01-worker-kubelet",
                              "99-worker-generated-containerruntime", "99-worker-generated-kubelet"]
    assert_valid_ignition(worker.spec["config"])
    merged = {f["path"]: f for f in worker.spec["config"]["storage"]["files"]}
    # the generated kubelet MC sorts after 01-worker-kubelet, so its kubelet.conf wins
    assert json.loads(decode(merged["/etc/kubernetes/kubelet.conf"]["contents"]["source"]))["maxPods"] == 300
    assert "/etc/crio/crio.conf.d/01-ctrcfg-pidsLimit" in merged
    assert merged["/var/lib/kubelet/config.json"]["mode"] == 0o600
    master = render_pool(MachineConfigPool.model_validate(pools[0]), configs, ControllerConfig.model_validate(cc))
    assert master.sources == ["00-master", "01-master-container-runtime", "01-master-kubelet"]
