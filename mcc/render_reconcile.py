"""The render controller's reconcilability check: a new rendered config the pool's nodes could not
apply in place (a non-core user, disks, filesystems, RAID, directories, links, kernel arguments in
Ignition, append, FIPS) is refused at render time with MCO's text, naming the MachineConfig that
brought the change, so the pool keeps its current config instead of each node going
Unreconcilable."""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from machineconfig.api import object_name
from machineconfig.reconcile import NotReconcilableError, check_reconcilable
from machineconfig.rendered_config import RenderedConfig
from mcc.render import RenderError

log = logging.getLogger(__name__)


def _failure(current: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    try:
        check_reconcilable(current, new)
    except NotReconcilableError as e:
        return str(e)
    return None


def check_against_current(current: RenderedConfig, generated: RenderedConfig,
                          components: Sequence[Mapping[str, Any]]) -> None:
    """Raise RenderError when `generated` cannot replace `current` in place.

    As MCO's generateAndValidateRenderedMachineConfig: each component is checked alone against
    the current config and the first whose reason appears in the whole render's error is named;
    otherwise the whole error and the components' first error are reported together.
    """
    full = _failure(current.object, generated.object)
    if full is None:
        return
    current_name = current.name
    for mc in components:
        single = _failure(current.object, mc)
        if single is None:
            continue
        parts = single.split(": ", 1)
        if len(parts) == 2 and parts[1] in full:
            name = object_name(mc)
            log.info("render refused: %s brings an unreconcilable change (%s)", name, parts[1])
            raise RenderError("could not generate rendered MachineConfig: reconciliation failed "
                              f'between current config "{current_name}" and base config '
                              f'"{name}": {parts[1]}', machine_config=name)
    component_error = None
    for mc in components:
        component_error = _failure(current.object, mc)
        if component_error is not None:
            break
    raise RenderError("could not generate rendered MachineConfig: render reconciliation error: "
                      f"{full}; component errors: {component_error or '<nil>'}")
