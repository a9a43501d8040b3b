"""Resilience and instrumentation of upstream calls, as an httpx transport.

`ShotGridClient` takes an httpx transport; wrapping the real one here adds, without
touching the client's mapping logic:

- a circuit breaker: after `failures` consecutive failed calls (transport error, timeout,
  5xx) the circuit opens and every call fails at once for `cooldown` seconds instead of
  piling requests onto a ShotGrid that is down; then one trial call is let through
  (half-open) and its result closes or re-opens the circuit;
- retries with jitter for idempotent calls only (GET: the HumanUser reads). POSTs (the
  password grant, token refresh and script tokens) are never retried: a retried refresh
  could burn ShotGrid's rotated refresh token, a retried password grant doubles a failed
  login. Only connection failures and 502/503/504 are retried; a read timeout already cost
  the full timeout and is not;
- metrics: every call's operation, outcome and latency (`broker.metrics`).

A call refused by the open circuit raises `httpx.ConnectError`, which the client already
maps to `UpstreamUnavailable` (503 `temporarily_unavailable` to the broker's caller).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import datetime

import httpx

from broker import metrics

RETRYABLE_STATUS = frozenset({502, 503, 504})


class CircuitOpenError(httpx.ConnectError):
    """Refused without calling: the circuit is open."""


class CircuitBreaker:
    """Consecutive-failure breaker. Thread-safe; time from the broker's clock, so tests move
    it rather than sleep."""

    def __init__(
        self, failures: int, cooldown: float, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.threshold = failures
        self.cooldown = cooldown
        self._clock = clock
        self._lock = threading.Lock()
        self._consecutive = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    def _now(self) -> float:
        return self._clock().timestamp() if self._clock else time.monotonic()

    @property
    def enabled(self) -> bool:
        return self.threshold > 0

    @property
    def state(self) -> str:
        with self._lock:
            return self._state_locked()

    def _state_locked(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._now() - self._opened_at >= self.cooldown:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May a call go out now? In half-open state exactly one trial call may."""
        if not self.enabled:
            return True
        with self._lock:
            state = self._state_locked()
            if state == "closed":
                return True
            if state == "half_open" and not self._trial_in_flight:
                self._trial_in_flight = True
                return True
            return False

    def record(self, ok: bool) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._trial_in_flight = False
            if ok:
                self._consecutive = 0
                if self._opened_at is not None:
                    self._opened_at = None
                    metrics.circuit_state(False)
                return
            self._consecutive += 1
            half_open = self._opened_at is not None
            if half_open or self._consecutive >= self.threshold:
                self._opened_at = self._now()
                metrics.circuit_state(True)


def operation_of(request: httpx.Request) -> str:
    """A bounded label for a ShotGrid call."""
    path = request.url.path
    if path.endswith("/auth/access_token"):
        return "auth_token"
    if "/entity/human_users" in path:
        return "human_user_read"
    if "/entity/event_log_entries" in path:
        return "event_log_read"
    if path.rstrip("/").endswith("/api/v1"):
        return "site_info"
    if path.endswith("/api3/json"):
        return "api3"
    if "/internal_api/app_session_request" in path:
        return "app_session"
    return "other"


class ResilientTransport(httpx.BaseTransport):
    def __init__(
        self,
        inner: httpx.BaseTransport,
        *,
        breaker: CircuitBreaker,
        retries: int = 2,
        backoff: float = 0.1,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._inner = inner
        self.breaker = breaker
        self._retries = retries
        self._backoff = backoff
        self._sleep = sleep

    def close(self) -> None:
        self._inner.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        idempotent = request.method in ("GET", "HEAD")
        attempts = 1 + (self._retries if idempotent else 0)
        operation = operation_of(request)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            if not self.breaker.allow():
                metrics.upstream_call(operation, "circuit_open", 0.0)
                raise CircuitOpenError("ShotGrid circuit open", request=request)
            started = time.perf_counter()
            try:
                response = self._inner.handle_request(request)
            except httpx.TimeoutException:
                self._done(operation, "timeout", started, ok=False)
                raise
            except httpx.TransportError:
                self._done(operation, "transport_error", started, ok=False)
                if last:
                    raise
                self._pause(attempt)
                continue
            status = response.status_code
            failed = status >= 500
            outcome = "server_error" if failed else "client_error" if status >= 400 else "success"
            self._done(operation, outcome, started, ok=not failed)
            if status in RETRYABLE_STATUS and not last:
                response.close()
                self._pause(attempt)
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _done(self, operation: str, outcome: str, started: float, *, ok: bool) -> None:
        metrics.upstream_call(operation, outcome, time.perf_counter() - started)
        self.breaker.record(ok)

    def _pause(self, attempt: int) -> None:
        if self._backoff > 0:
            # Full jitter (AWS architecture blog): spread retries of many workers apart.
            self._sleep(random.uniform(0, self._backoff * 2**attempt))  # noqa: S311
