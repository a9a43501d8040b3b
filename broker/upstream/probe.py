"""ShotGrid reachability as `/readyz` reports it: one short-timeout `GET /api/v1` (the site
info, no credentials), cached for a few seconds so frequent probes never hammer ShotGrid.

Reported only: readiness never depends on it, because a broker whose ShotGrid is down
still refreshes (within `upstream_recheck_max_stale`), serves the JWKS and validates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from broker.upstream.resilience import CircuitBreaker


class UpstreamProbe:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        cache_seconds: float,
        clock: Callable[[], datetime],
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._url = base_url.rstrip("/") + "/api/v1"
        self._timeout = timeout
        self._cache_seconds = cache_seconds
        self._clock = clock
        self.breaker = breaker
        self._http: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()
        self._last: dict[str, Any] | None = None
        self._last_at: datetime | None = None
        self.probes = 0
        """How many probes actually went out (tests check the cache)."""

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()

    async def report(self) -> dict[str, Any]:
        async with self._lock:  # concurrent readiness probes share one upstream call
            now = self._clock()
            fresh = (
                self._last is not None
                and self._last_at is not None
                and (now - self._last_at).total_seconds() < self._cache_seconds
            )
            if not fresh:
                self._last = await self._probe()
                self._last_at = now
            assert self._last is not None
            result = dict(self._last)
        if self.breaker is not None and self.breaker.enabled:
            result["circuit"] = self.breaker.state
        return result

    async def _probe(self) -> dict[str, Any]:
        self.probes += 1
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        started = time.perf_counter()
        status = "ok"
        try:
            response = await self._http.get(self._url)
            if response.status_code >= 500:
                status = "unavailable"
        except httpx.HTTPError:
            status = "unavailable"
        return {
            "status": status,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            "checked_at": self._clock().isoformat(),
        }
