"""MCO's bootstrap layout (`mcc render --out DIR`, served by `mcs bootstrap`): its directory names,
written by mcc.layout and read by mcs.sources.bootstrap. Each object is DIR/<directory>/<name>.yaml.
"""
from __future__ import annotations

MACHINE_CONFIGS_DIR = "machine-configs"
MACHINE_POOLS_DIR = "machine-pools"
CONTROLLER_CONFIG_DIR = "controller-config"
