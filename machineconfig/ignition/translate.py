"""Translation of canonical config dicts between any two supported spec versions: 2.2, 3.0 ... 3.6 and
3.7.0-experimental. The 3.x steps and the errors (TranslationError, Inexpressible) are `translate3`'s,
the 2.2 <-> 3.x conversions `translate_v2`'s; this module chains them.
"""
from __future__ import annotations

import copy

from machineconfig.ignition import translate_v2
from machineconfig.ignition.schema import JSON, VERSIONS
from machineconfig.ignition.translate3 import Inexpressible, TranslationError, translate3

__all__ = ["translate", "Inexpressible", "TranslationError", "SUPPORTED_VERSIONS"]

SUPPORTED_VERSIONS: tuple[str, ...] = ("2.2.0",) + tuple(VERSIONS[m] for m in sorted(VERSIONS))


def translate(config: JSON, to_version: str) -> JSON:
    """Translate a canonical config dict to `to_version`; raise TranslationError if it cannot be expressed."""
    if to_version not in SUPPORTED_VERSIONS:
        raise TranslationError(f"cannot translate to {to_version}: unsupported target version")
    version = str(config.get("ignition", {}).get("version", ""))
    if version == to_version:
        return copy.deepcopy(config)
    if version == "2.2.0":
        config = translate_v2.v22_to_v30(config)
    if to_version == "2.2.0":
        return translate_v2.v32_to_v22(translate3(config, "3.2.0"))
    return translate3(config, to_version)
