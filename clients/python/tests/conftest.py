from __future__ import annotations

from collections.abc import Iterator

import pytest

from broker_client import JWKSCache, TokenValidator
from client_support import ISSUER, FakeBroker, FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def broker(clock: FakeClock) -> FakeBroker:
    return FakeBroker(clock)


@pytest.fixture
def validator(broker: FakeBroker, clock: FakeClock) -> Iterator[TokenValidator]:
    client = broker.client()
    jwks = JWKSCache(ISSUER, http_client=client, clock=clock)
    with TokenValidator(ISSUER, "dna-api", jwks=jwks, clock=clock) as validator:
        yield validator
    client.close()
