"""Post-config actions from Node Disruption Policies: what a change costs the node.

The logic lives in machineconfig.disruption (shared with `mcc plan`); these names stay importable.
"""
from __future__ import annotations

from machineconfig.disruption import (DAEMON_RELOAD, DEFAULT_POLICY, DIGEST_ONLY, NONE, REBOOT,
                                      REGISTRIES_CONF, Action, ActionType, NodeDisruptionPolicy,
                                      PolicyError, describe, drain_required,
                                      is_safe_registries_change, load_policy, match_file_policy,
                                      merge_policies, parse_policy, post_config_actions, reload,
                                      restart)

__all__ = ["DAEMON_RELOAD", "DEFAULT_POLICY", "DIGEST_ONLY", "NONE", "REBOOT", "REGISTRIES_CONF",
           "Action", "ActionType", "NodeDisruptionPolicy", "PolicyError", "describe",
           "drain_required", "is_safe_registries_change", "load_policy", "match_file_policy",
           "merge_policies", "parse_policy", "post_config_actions", "reload", "restart"]
