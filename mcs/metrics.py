"""Prometheus metrics of the server: config requests by pool, served version and status code, and
request latency; rendered at /metrics from a registry of its own.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

# Latency buckets for a cached answer (sub-millisecond) up to a cold build of a large config.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

UNKNOWN_POOL = "_unknown"


class ServerMetrics:
    """One registry per application, so several servers (and tests) never share counters."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.config_requests = Counter(
            "mcs_config_requests", "Requests for /config/<pool> by pool, served spec version and status code",
            ["pool", "version", "code"], registry=self.registry)
        self.requests = Counter(
            "mcs_http_requests", "HTTP requests by route and status code", ["route", "code"],
            registry=self.registry)
        self.latency = Histogram(
            "mcs_http_request_duration_seconds", "Time to answer a request, by route", ["route"],
            buckets=_BUCKETS, registry=self.registry)
        self.builds = Counter(
            "mcs_config_builds", "Served configs built (cache misses) by pool and spec version",
            ["pool", "version"], registry=self.registry)

        # Label children looked up once: `labels()` costs more than the increment itself.
        self._requests: dict[tuple[str, int], Any] = {}
        self._latency: dict[str, Any] = {}
        self._config: dict[tuple[str, str, int], Any] = {}
        # (pool, version, code) of a served config -> its (requests, latency, config_requests) children.
        self._served: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}

    def observe(self, route: str, code: int, seconds: float) -> None:
        counter = self._requests.get((route, code))
        if counter is None:
            counter = self._requests[(route, code)] = self.requests.labels(route, str(code))
        counter.inc()
        histogram = self._latency.get(route)
        if histogram is None:
            histogram = self._latency[route] = self.latency.labels(route)
        histogram.observe(seconds)

    def observe_served(self, pool: str, version: str, code: int, seconds: float) -> None:
        """A config request answered 200 or 304 (`pool` exists): route and config metrics in one
        lookup of the children bound for (pool, version, code)."""
        bound = self._served.get((pool, version, code))
        if bound is None:
            bound = self._served[(pool, version, code)] = (
                self.requests.labels("config", str(code)), self.latency.labels("config"),
                self.config_requests.labels(pool, version, str(code)))
        requests, latency, config = bound
        requests.inc()
        latency.observe(seconds)
        config.inc()

    def observe_config(self, pool: str, version: str, code: int) -> None:
        """`pool` must be a pool that exists (or UNKNOWN_POOL) so clients cannot grow the label set."""
        counter = self._config.get((pool, version, code))
        if counter is None:
            counter = self._config[(pool, version, code)] = self.config_requests.labels(pool, version, str(code))
        counter.inc()

    def render(self) -> bytes:
        if multiprocess_dir():
            # With --workers N every worker writes its values to shared files; sum them all here
            # so a scrape sees the whole server whichever worker answers it.
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


def multiprocess_dir() -> str | None:
    """prometheus-client's multiprocess mode is on when this is set before the library is imported."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
