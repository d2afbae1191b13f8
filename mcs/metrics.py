"""Prometheus metrics of the server: config requests by pool, served version and status code, and
request latency; rendered at /metrics from a registry of its own.
"""
from __future__ import annotations

import asyncio
import logging
import os
from bisect import bisect_left
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
        self.not_acceptable = Counter(
            "mcs_config_not_acceptable",
            "Config requests refused 406: the config uses a field the requested spec version cannot express",
            ["pool", "version"], registry=self.registry)

        # Label children looked up once: `labels()` costs more than the increment itself.
        self._requests: dict[tuple[str, int], Any] = {}
        self._latency: dict[str, Any] = {}
        self._config: dict[tuple[str, str, int], Any] = {}
        # (pool, version, code) of a served config -> its (requests, latency, config_requests) children.
        self._served: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}
        # The answers to config reads (the hot path) are tallied in plain numbers per (pool,
        # version, code) - [count, latency sum, count per latency bucket (+Inf last)] - and added
        # to the children above by flush(): before every /metrics rendering, and once a second
        # (FLUSH_INTERVAL) so other workers' scrapes see them too. Every request is counted.
        self._tallies: dict[tuple[str, str, int], list[Any]] = {}

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
        """A config request answered 200 or 304 (`pool` exists): tallied for the route and config
        metrics of (pool, version, code), added to them by the next flush()."""
        tally = self._tallies.get((pool, version, code))
        if tally is None:
            tally = self._tally(pool, version, code)
        add_to_tally(tally, seconds)

    def served_tally(self, pool: str, version: str, code: int) -> list[Any]:
        """The tally observe_served adds to for (pool, version, code): the same list for the life of
        these metrics (flush() resets it in place), so a caller may keep it and add to it exactly as
        observe_served does: add_to_tally (mcs.fastpath's remembered answers keep it)."""
        tally = self._tallies.get((pool, version, code))
        return tally if tally is not None else self._tally(pool, version, code)

    def _tally(self, pool: str, version: str, code: int) -> list[Any]:
        key = (pool, version, code)
        bound = self._served[key] = (
            self.requests.labels("config", str(code)), self.latency.labels("config"),
            self.config_requests.labels(pool, version, str(code)))
        tally = self._tallies[key] = [0, 0.0, [0] * (len(_BUCKETS) + 1)]
        if not _histogram_internals(bound[1]):  # another prometheus-client: no batching
            log.warning("prometheus-client histogram internals changed; latency observed per request")
        return tally

    def flush(self) -> None:
        """Add the tallied config answers to the Prometheus children (and so to the shared files
        of a multi-worker server)."""
        for key, tally in self._tallies.items():
            count = tally[0]
            if not count:
                continue
            requests, latency, config = self._served[key]
            requests.inc(count)
            config.inc(count)
            buckets = tally[2]
            if _histogram_internals(latency):
                latency._sum.inc(tally[1])
                for i, n in enumerate(buckets):
                    if n:
                        latency._buckets[i].inc(n)
            else:
                # Exact bucket counts, the sum approximated by each bucket's bound (fallback only).
                for i, n in enumerate(buckets):
                    for _ in range(n):
                        latency.observe(_BUCKETS[i] if i < len(_BUCKETS) else tally[1] / count)
            tally[0], tally[1], tally[2] = 0, 0.0, [0] * len(buckets)

    def observe_config(self, pool: str, version: str, code: int) -> None:
        """`pool` must be a pool that exists (or UNKNOWN_POOL) so clients cannot grow the label set."""
        counter = self._config.get((pool, version, code))
        if counter is None:
            counter = self._config[(pool, version, code)] = self.config_requests.labels(pool, version, str(code))
        counter.inc()

    def observe_not_acceptable(self, pool: str, version: str) -> None:
        """A 406 answer; `pool` exists (its config was built), so clients cannot grow the label set."""
        self.not_acceptable.labels(pool, version).inc()

    def render(self) -> bytes:
        self.flush()
        if multiprocess_dir():
            # With --workers N every worker writes its values to shared files; sum them all here
            # so a scrape sees the whole server whichever worker answers it.
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


def add_to_tally(tally: list[Any], seconds: float) -> None:
    """One answer of `seconds` added to a tally of ServerMetrics.served_tally."""
    tally[0] += 1
    tally[1] += seconds
    tally[2][bisect_left(_BUCKETS, seconds)] += 1


# How often a worker adds its tallied config answers to the metrics (mcs.server runs flush_every).
FLUSH_INTERVAL = 1.0


async def flush_every(metrics: ServerMetrics, interval: float = FLUSH_INTERVAL) -> None:
    while True:
        await asyncio.sleep(interval)
        metrics.flush()


def _histogram_internals(child: Any) -> bool:
    """prometheus-client's Histogram child keeps a `_sum` value and one value per bucket."""
    buckets = getattr(child, "_buckets", None)
    return hasattr(child, "_sum") and isinstance(buckets, list) and len(buckets) == len(_BUCKETS) + 1


def multiprocess_dir() -> str | None:
    """prometheus-client's multiprocess mode is on when this is set before the library is imported."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
