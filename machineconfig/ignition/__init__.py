"""Ignition configs, spec 2.2 and 3.0-3.7-experimental: parse, validate, translate, merge, data URLs.

Pure functions on bytes and plain JSON-like dicts; no I/O of any kind.
"""
