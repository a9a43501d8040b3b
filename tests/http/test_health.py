"""/healthz and /readyz: liveness, readiness on store and signing key, ShotGrid reported
(short timeout, cached) but never a reason to be unready; no 500 when the store is down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shotgrid_emulator import ShotGridEmulator
from tests.support.clock import MovableClock
from tests.support.flaky_store import FlakyStore, broker_on_flaky_store

pytestmark = pytest.mark.timeout(60)


class Env:
    def __init__(self, url: str, app: Any, store: FlakyStore, emu: ShotGridEmulator) -> None:
        self.url, self.app, self.store, self.emu = url, app, store, emu

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10)


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def env(tmp_path: Path, clock: MovableClock) -> Iterator[Env]:
    with broker_on_flaky_store(tmp_path, clock, readyz_upstream_cache=5.0) as b:
        yield Env(b.url, b.app, b.store, b.emulator)


def test_healthz_is_alive(env: Env) -> None:
    response = env.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["cache-control"] == "no-store"


def test_ready_with_upstream_reported(env: Env) -> None:
    response = env.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"] == {"store": "ok", "signing_key": "ok"}
    assert body["upstream"]["status"] == "ok"
    assert body["upstream"]["circuit"] == "closed"


def test_upstream_down_is_reported_but_still_ready(env: Env, clock: MovableClock) -> None:
    env.emu.faults.set("/api", status=503)
    body = env.get("/readyz").json()
    assert body["status"] == "ready"
    assert body["upstream"]["status"] == "unavailable"


def test_upstream_probe_is_cached(env: Env, clock: MovableClock) -> None:
    probe = env.app.state.upstream_probe
    env.get("/readyz")
    first = probe.probes
    for _ in range(5):
        env.get("/readyz")
    assert probe.probes == first
    env.emu.faults.set("/api", status=503)
    assert env.get("/readyz").json()["upstream"]["status"] == "ok"  # still the cached answer
    clock.advance(6)
    assert env.get("/readyz").json()["upstream"]["status"] == "unavailable"
    assert probe.probes == first + 1


def test_store_down_means_unready_not_500(env: Env) -> None:
    assert env.get("/jwks.json").status_code == 200
    env.store.down = True
    response = env.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["checks"]["store"] == "unavailable"
    assert env.get("/healthz").status_code == 200


def test_jwks_survives_store_outage(env: Env, clock: MovableClock) -> None:
    keys = env.get("/jwks.json").json()
    env.store.down = True
    clock.advance(3600)  # past the reload interval: the key manager would go to the store
    response = env.get("/jwks.json")
    assert response.status_code == 200
    assert response.json() == keys


def _jwks_store_errors(env: Env) -> float:
    for line in env.get("/metrics").text.splitlines():
        if line.startswith('broker_store_errors_total{where="jwks"}'):
            return float(line.split()[-1])
    return 0.0


def test_jwks_reads_the_store_only_when_the_reload_interval_passed(
    env: Env, clock: MovableClock
) -> None:
    """The JWKS is answered from the key set loaded last, without a store read, until the
    reload interval (60 s by default) has passed; then the next request reloads it, so a
    rotation made by another process shows up."""
    from broker.components import key_manager, sealer_for

    settings = env.app.state.components.settings
    before = env.get("/jwks.json").json()
    elsewhere = key_manager(settings, env.store.inner, sealer_for(settings), clock)
    _, new_next = elsewhere.rotate("RS256")
    errors = _jwks_store_errors(env)
    env.store.down = True
    assert env.get("/jwks.json").json() == before  # no store read: no store error
    assert _jwks_store_errors(env) == errors
    clock.advance(61)
    assert env.get("/jwks.json").json() == before  # the reload failed: the last set
    assert _jwks_store_errors(env) == errors + 1
    env.store.down = False
    clock.advance(61)
    assert new_next in {key["kid"] for key in env.get("/jwks.json").json()["keys"]}


def test_token_endpoint_maps_store_outage_to_503(env: Env) -> None:
    env.store.down = True
    response = httpx.post(
        env.url + "/token",
        data={"grant_type": "password", "client_id": "dna-cli", "username": "a", "password": "b"},
    )
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
