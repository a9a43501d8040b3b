"""Prometheus metrics of the broker (filled in by the observability step)."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def exposition() -> tuple[bytes, str]:
    """The text exposition of this process, or of every worker when
    PROMETHEUS_MULTIPROC_DIR is set (prometheus-client's multiprocess mode)."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def observe_event(event: str, outcome: str, fields: dict[str, object]) -> None:
    """Counters fed from `events.audit` (filled in by the metrics step)."""


def observe_request(
    endpoint: str, method: str, status: int, seconds: float, notes: dict[str, str]
) -> None:
    """Request counters and latency (filled in by the metrics step)."""
