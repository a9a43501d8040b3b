"""Resilience end to end: the ShotGrid circuit breaker (fault injection, movable clock),
retries of idempotent reads only, the global body bound, and graceful shutdown."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.broker import broker_with_emulator
from tests.support.clock import MovableClock

pytestmark = pytest.mark.timeout(60)


def test_circuit_opens_fails_fast_then_recovers(tmp_path: Path) -> None:
    clock = MovableClock()
    with broker_with_emulator(
        tmp_path,
        clock,
        upstream_circuit_failures=3,
        upstream_circuit_cooldown=30,
        upstream_retries=0,
    ) as (broker, emu, _site):
        emu.faults.set("/api", status=503)
        with broker.client() as http:
            for _ in range(3):
                response = broker.password_grant(http)
                assert response.status_code == 503
                assert response.json()["error"] == "temporarily_unavailable"
            assert emu.calls["token:password"] == 3
            # Open: refused without calling ShotGrid, even once ShotGrid is back.
            emu.faults.clear()
            for _ in range(3):
                response = broker.password_grant(http)
                assert response.status_code == 503
                assert response.json()["error"] == "temporarily_unavailable"
            assert emu.calls["token:password"] == 3
            assert httpx.get(f"{broker.url}/readyz").json()["upstream"]["circuit"] == "open"
            # Cool-down over: one trial call; its failure re-opens at once.
            emu.faults.set("/api", status=503)
            clock.advance(30)
            assert broker.password_grant(http).status_code == 503
            assert broker.password_grant(http).status_code == 503
            assert emu.calls["token:password"] == 4
            # Next cool-down, ShotGrid healthy: the trial succeeds and closes the circuit.
            emu.faults.clear()
            clock.advance(30)
            assert broker.password_grant(http).status_code == 200
            assert broker.password_grant(http).status_code == 200
            assert emu.calls["token:password"] == 6


def test_idempotent_reads_are_retried_logins_never(tmp_path: Path) -> None:
    clock = MovableClock()
    with (
        broker_with_emulator(tmp_path, clock, upstream_retries=2, upstream_retry_backoff=0) as (
            broker,
            emu,
            _site,
        ),
        broker.client() as http,
    ):
        emu.faults.set("/api/v1/entity/human_users", status=503, times=2)
        assert broker.password_grant(http).status_code == 200
        assert emu.calls["rest:human_users"] == 3
        emu.faults.set("/api/v1/auth/access_token", status=503, times=1)
        assert broker.password_grant(http).status_code == 503
        assert emu.calls["token:password"] == 2  # one per login, no retry


@pytest.mark.parametrize("path", ["/token", "/healthz", "/jwks.json", "/openapi.yaml", "/nope"])
def test_body_bound_covers_every_route(tmp_path: Path, path: str) -> None:
    with broker_with_emulator(tmp_path, MovableClock(), max_body_bytes=1024) as (broker, _, _s):
        big = b"a=" + b"x" * 2048
        declared = httpx.post(
            broker.url + path,
            content=big,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert declared.status_code == 413
        assert declared.json()["error"] == "invalid_request"
        assert declared.headers["cache-control"] == "no-store"
        assert declared.headers["x-request-id"]


def test_streamed_body_is_cut_off_at_the_bound(tmp_path: Path) -> None:
    """Without Content-Length the bound applies while a route reads (routes that never read
    the body never buffer it: uvicorn stops reading the socket)."""
    with broker_with_emulator(tmp_path, MovableClock(), max_body_bytes=1024) as (broker, _, _s):

        def chunks() -> Iterator[bytes]:
            for _ in range(8):
                yield b"x" * 512

        streamed = httpx.post(
            broker.url + "/token",
            content=chunks(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert streamed.status_code == 413
        assert streamed.json()["error"] == "invalid_request"


def test_in_flight_request_completes_during_shutdown(tmp_path: Path) -> None:
    clock = MovableClock()
    with broker_with_emulator(tmp_path, clock) as (broker, emu, _site):
        emu.faults.set("/api/v1/auth/access_token", latency=1.0)
        result: dict[str, httpx.Response] = {}

        def login() -> None:
            with broker.client() as http:
                result["response"] = broker.password_grant(http)

        worker = threading.Thread(target=login)
        worker.start()
        while emu.calls["token:password"] == 0:  # the login is now inside ShotGrid
            worker.join(0.01)
        broker.server.stop()  # what SIGTERM does: stop accepting, drain, then lifespan
        worker.join(10)
        response = result["response"]
        assert response.status_code == 200, response.text
        assert response.json()["refresh_token"]
        # Shut down: the port no longer accepts connections.
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", broker.server.port), 1):
            pass
