"""A broker whose MongoDB store is unreachable starts, reports not ready, and answers 503
`temporarily_unavailable` within the store's timeout instead of hanging."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from broker.app import create_app
from broker.demo import demo_clients
from tests.support.broker import broker_settings
from tests.support.clock import MovableClock
from tests.support.servers import reserve_port, serve

pytestmark = pytest.mark.timeout(60)

UNREACHABLE = (
    "mongodb://127.0.0.1:1/broker?serverSelectionTimeoutMS=300&connectTimeoutMS=300"
    "&socketTimeoutMS=300"
)


def test_unreachable_mongodb_gives_503_quickly(tmp_path: Path) -> None:
    port = reserve_port()
    settings = broker_settings(tmp_path, "http://127.0.0.1:9", port, store_url=UNREACHABLE)
    app = create_app(
        settings, clock=MovableClock(), seed_clients=demo_clients(), housekeeping=False
    )
    with serve(app, port=port) as server, httpx.Client(base_url=server.url) as http:
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["store"] == "unavailable"
        started = time.monotonic()
        response = http.post(
            "/token",
            data={
                "grant_type": "password",
                "client_id": "dna-cli",
                "username": "alice",
                "password": "alice-pw",
            },
        )
        elapsed = time.monotonic() - started
        assert response.status_code == 503
        assert response.json()["error"] == "temporarily_unavailable"
        assert response.headers["cache-control"] == "no-store"
        assert elapsed < 5  # bounded by the store timeout (0.3 s), not hanging
        assert http.get("/jwks.json").status_code == 503
        assert http.get("/healthz").status_code == 200
