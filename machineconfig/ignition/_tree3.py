"""Old import path of the 3.x field tree, kept only for merge.py; everything here is `schema`'s.

Delete this module once merge.py imports from `machineconfig.ignition.schema` directly.
"""
from __future__ import annotations

from machineconfig.ignition.schema import (
    IGNORE_DUPS, JSON, LIST, NULLABLE, OBJ, PTR, SCALARS, item_key,
)
from machineconfig.ignition.schema import LATEST_MINOR as LATEST
from machineconfig.ignition.schema import MERGED_KEYS as HANDLES
from machineconfig.ignition.schema import MINOR_OF as MINORS
from machineconfig.ignition.schema import shaped_fields as fields

__all__ = ["HANDLES", "IGNORE_DUPS", "JSON", "LATEST", "LIST", "MINORS", "NULLABLE", "OBJ", "PTR", "SCALARS",
           "fields", "item_key"]
