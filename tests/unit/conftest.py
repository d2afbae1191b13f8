"""Hypothesis settings for the property tests: no per-example deadline, since a timed assertion
is not a test of correctness and CI machines run under load (speed is measured under bench/)."""
from __future__ import annotations

from hypothesis import settings

settings.register_profile("machine-config", deadline=None)
settings.load_profile("machine-config")
