"""What differs between two MachineConfigs: the daemon's view of an update.

The logic lives in machineconfig.disruption (shared with `mcc plan`); these names stay importable.
"""
from __future__ import annotations

from machineconfig.disruption import (MachineConfigDiff, canonical_kernel_type, compute_diff,
                                      decoded_contents, files_by_path, units_by_name)

__all__ = ["MachineConfigDiff", "canonical_kernel_type", "compute_diff", "decoded_contents",
           "files_by_path", "units_by_name"]
