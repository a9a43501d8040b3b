"""How uvicorn serves the broker, derived from the settings, for `serve`, `demo` and tests.

One place holds the server options that protect the process (SECURITY.md, "Connections
and proxies"): the parser with its request-head bound and head timeout, the idle timeout
(before the first request and between requests), the connection cap, and uvicorn's own
forwarded-header handling switched off, because the broker decides the client address
itself from `BROKER_TRUSTED_PROXIES` (broker/http/proxies.py). uvicorn otherwise trusts
`X-Forwarded-For` from 127.0.0.1, or from whatever `FORWARDED_ALLOW_IPS` says.

Also the process-level preparation of `serve`: metrics shared by several workers (the
store's start-up check is `broker.preflight.check_store`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from broker.http.protocol import BoundedHttpToolsProtocol
from broker.settings import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

log = logging.getLogger("broker.serving")


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config keyword arguments that follow from the settings."""
    return {
        # httptools (C) with the request-head bound uvicorn keeps only on h11 (Python)
        # and the head timeout uvicorn has on neither.
        "http": functools.partial(
            BoundedHttpToolsProtocol, head_timeout=settings.http_head_timeout
        ),
        "proxy_headers": False,
        "forwarded_allow_ips": [],
        "timeout_keep_alive": settings.http_idle_timeout,
        # uvicorn answers 503 once len(connections) >= limit_concurrency, counting the
        # connection asking: +1 so exactly http_max_connections are served.
        "limit_concurrency": settings.http_max_connections + 1,
    }


@contextlib.contextmanager
def multiprocess_metrics(workers: int) -> Iterator[str | None]:
    """With several workers and no PROMETHEUS_MULTIPROC_DIR, a fresh private one for the
    duration (removed afterwards); yields it, or None when there was nothing to do.

    prometheus-client picks its multiprocess mode when it is imported, from this variable:
    without it every worker counts alone and `/metrics` reports whichever worker answers
    the scrape. The workers inherit the variable (uvicorn spawns them inside this block)."""
    if workers <= 1 or os.environ.get(MULTIPROC_ENV):
        yield None
        return
    path = tempfile.mkdtemp(prefix="token-broker-metrics-")
    os.environ[MULTIPROC_ENV] = path
    log.info(
        "%s not set: the %d workers share their metrics through %s (removed at exit)",
        MULTIPROC_ENV,
        workers,
        path,
    )
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)
