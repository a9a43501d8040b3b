"""TokenValidator's result cache: one signature check per token, until its exp."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import broker_client.validator as validator_module
from broker_client import BadSignature, ExpiredToken, TokenValidator, ValidationCache
from client_support import ISSUER, FakeBroker, FakeClock


@pytest.fixture
def signature_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    real = validator_module.verify_signature

    def counting(token: Any, keys: Any) -> Any:
        seen.append(token)
        return real(token, keys)

    monkeypatch.setattr(validator_module, "verify_signature", counting)
    return seen


def test_a_repeated_token_is_verified_once(
    broker: FakeBroker, validator: TokenValidator, signature_checks: list[str]
) -> None:
    token = broker.mint()
    first = validator.validate(token)
    for _ in range(100):
        assert validator.validate(token) is first
    assert signature_checks == [token]
    assert validator.cache_hits == 100
    assert validator.signature_checks == 1


def test_a_cached_token_expires_at_exp(
    broker: FakeBroker, validator: TokenValidator, clock: FakeClock, signature_checks: list[str]
) -> None:
    token = broker.mint()  # exp = now + 600, leeway 30
    validator.validate(token)
    clock.advance(629)
    validator.validate(token)
    assert len(signature_checks) == 1
    clock.advance(1)
    with pytest.raises(ExpiredToken):
        validator.validate(token)
    assert len(signature_checks) == 2


def test_failures_are_not_cached(
    broker: FakeBroker, validator: TokenValidator, signature_checks: list[str]
) -> None:
    header, payload, _ = broker.mint().split(".")
    forged = f"{header}.{payload}.AAAA"
    for _ in range(3):
        with pytest.raises(BadSignature):
            validator.validate(forged)
    assert len(signature_checks) == 3
    assert len(validator.cache) == 0


def test_the_cache_is_a_bounded_lru(broker: FakeBroker, clock: FakeClock) -> None:
    with (
        broker.client() as client,
        TokenValidator(ISSUER, http_client=client, clock=clock, cache_size=2) as validator,
    ):
        a, b, c = broker.mint(), broker.mint(), broker.mint()
        validator.validate(a)
        validator.validate(b)
        validator.validate(a)  # a is now the most recent
        validator.validate(c)  # evicts b
        assert len(validator.cache) == 2
        checks = validator.signature_checks
        validator.validate(a)
        assert validator.signature_checks == checks
        validator.validate(b)
        assert validator.signature_checks == checks + 1


def test_cache_size_zero_disables_caching(broker: FakeBroker, clock: FakeClock) -> None:
    with (
        broker.client() as client,
        TokenValidator(ISSUER, http_client=client, clock=clock, cache_size=0) as validator,
    ):
        token = broker.mint()
        validator.validate(token)
        validator.validate(token)
        assert validator.signature_checks == 2


def test_avalidate_shares_the_cache(validator: TokenValidator, broker: FakeBroker) -> None:
    token = broker.mint()
    validator.validate(token)

    async def scenario() -> None:
        for _ in range(10):
            assert (await validator.avalidate(token)).sg_login == "alice"

    asyncio.run(scenario())
    assert validator.signature_checks == 1
    assert validator.cache_hits == 10


def test_validation_cache_rejects_negative_sizes() -> None:
    with pytest.raises(ValueError):
        ValidationCache(-1)
