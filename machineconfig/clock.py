"""Timestamps as Kubernetes writes them: RFC 3339 in UTC, whole seconds (`2026-01-02T03:04:05Z`)."""
from __future__ import annotations

from datetime import datetime, timezone

RFC3339 = "%Y-%m-%dT%H:%M:%SZ"


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(RFC3339)


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime(RFC3339)


def parse_rfc3339(text: str) -> datetime:
    return datetime.strptime(text, RFC3339).replace(tzinfo=timezone.utc)
