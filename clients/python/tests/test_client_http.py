"""The validator against the fake broker served over real HTTP by uvicorn."""

from __future__ import annotations

import asyncio

import pytest

from broker_client import JWKSUnavailable, TokenValidator
from client_support import FakeBroker, FakeClock


def test_validator_against_a_real_http_broker(clock: FakeClock) -> None:
    broker = FakeBroker(clock)
    broker.cache_control = "public, max-age=60"
    # kid_wait: a generous bound, so a loaded machine's slow refetch is still awaited (the
    # bound itself is tested in test_client_revocations.py).
    with (
        broker.served() as url,
        TokenValidator(url, "dna-api", clock=clock, cache_size=0, kid_wait=5) as v,
    ):
        assert v.validate(broker.mint()).sub == "101"
        broker.add_key("k2")
        assert v.validate(broker.mint()).sub == "101"  # unknown kid: one refetch
        assert broker.count("/jwks.json") == 2
        clock.advance(61)
        assert v.refresh(force=False)  # stale: the background thread refetches
        assert broker.count("/jwks.json") == 3
        token = broker.mint()
        # The server goes away: the cached keys serve until the staleness bound.
    clock.advance(61)
    assert v.validate(token).sub == "101"
    clock.advance(v.jwks.max_stale + 10)
    with pytest.raises(JWKSUnavailable):
        v.validate(token)


def test_one_validator_serves_event_loops_one_after_another(clock: FakeClock) -> None:
    """A module-level validator used from one event loop after another (FastAPI's
    TestClient, asyncio.run scripts): the background thread wakes each loop's waiters."""
    broker = FakeBroker(clock)
    with (
        broker.served() as url,
        TokenValidator(url, "dna-api", clock=clock, cache_size=0, kid_wait=5) as v,
    ):
        assert asyncio.run(v.avalidate(broker.mint())).sub == "101"
        broker.add_key("k2")  # an unknown kid: awaited in a second loop
        assert asyncio.run(v.avalidate(broker.mint())).sub == "101"
        broker.add_key("k3")  # and in a third
        clock.advance(v.jwks.unknown_kid_interval)
        assert asyncio.run(v.avalidate(broker.mint())).sub == "101"
        assert v.jwks.fetches == 3
