"""JWKSCache: discovery, Cache-Control, rotation single flight, serving while the broker is
down; directly, and through a validator whose background thread drives it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from broker_client import JWKSCache, JWKSUnavailable, TokenValidator, UnknownKey
from broker_client.jwks import parse_max_age
from client_support import ISSUER, FakeBroker, FakeClock


@pytest.fixture
def client(broker: FakeBroker) -> Iterator[httpx.Client]:
    with broker.client() as client:
        yield client


@pytest.fixture
def validators() -> Iterator[list[TokenValidator]]:
    made: list[TokenValidator] = []
    yield made
    for validator in made:
        validator.close()


@pytest.fixture
def make_validator(
    client: httpx.Client, clock: FakeClock, validators: list[TokenValidator]
) -> Callable[..., TokenValidator]:
    def make(**options: float) -> TokenValidator:
        jwks = JWKSCache(ISSUER, http_client=client, clock=clock, **options)
        # kid_wait: a refetch these tests wait for must finish on a machine loaded by the
        # suite's parallel workers (the 0.25 s default is for production, tested on its own).
        validators.append(TokenValidator(ISSUER, "dna-api", jwks=jwks, clock=clock, kid_wait=5))
        return validators[-1]

    return make


def key_requests(broker: FakeBroker) -> list[str]:
    """Requests for discovery and the JWKS (the feed is polled beside them)."""
    return [path for path in broker.requests if path != "/revocations"]


def test_discovery_then_jwks_once(
    broker: FakeBroker, make_validator: Callable[..., TokenValidator]
) -> None:
    validator = make_validator()
    for _ in range(5):
        validator.validate(broker.mint())
    assert key_requests(broker) == ["/.well-known/openid-configuration", "/jwks.json"]


def test_discovery_naming_another_issuer_is_refused(clock: FakeClock) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"issuer": "https://evil.test", "jwks_uri": "x"})

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        cache = JWKSCache(ISSUER, http_client=client, clock=clock)
        with pytest.raises(JWKSUnavailable):
            cache.key_set()


def test_an_explicit_jwks_uri_skips_discovery(
    broker: FakeBroker, client: httpx.Client, clock: FakeClock
) -> None:
    cache = JWKSCache(ISSUER, jwks_uri=f"{ISSUER}/jwks.json", http_client=client, clock=clock)
    assert "k1" in cache.key_set()
    assert broker.requests == ["/jwks.json"]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"cache-control": "max-age=120"}, 120),
        ({"cache-control": "public, max-age=120", "age": "20"}, 100),
        ({"cache-control": 'max-age="60"'}, 60),
        ({"cache-control": "no-store"}, 0),
        ({"cache-control": "no-cache, max-age=60"}, 0),
        ({"cache-control": "max-age=soon"}, None),
        ({"cache-control": "max-age=10", "age": "50"}, 0),
    ],
)
def test_parse_max_age(headers: dict[str, str], expected: float | None) -> None:
    assert parse_max_age(httpx.Headers(headers)) == expected


def test_cache_control_max_age_is_honoured(
    broker: FakeBroker, client: httpx.Client, clock: FakeClock
) -> None:
    broker.cache_control = "max-age=120"
    cache = JWKSCache(ISSUER, http_client=client, clock=clock)
    cache.key_set()
    clock.advance(119)
    cache.key_set()
    assert broker.count("/jwks.json") == 1
    clock.advance(2)
    cache.key_set()
    assert broker.count("/jwks.json") == 2


def test_default_max_age_without_cache_control(
    broker: FakeBroker, client: httpx.Client, clock: FakeClock
) -> None:
    broker.cache_control = None
    cache = JWKSCache(ISSUER, http_client=client, clock=clock, default_max_age=300)
    cache.key_set()
    clock.advance(299)
    cache.key_set()
    assert broker.count("/jwks.json") == 1
    clock.advance(2)
    cache.key_set()
    assert broker.count("/jwks.json") == 2


def test_no_store_is_clamped_to_the_minimum(
    broker: FakeBroker, client: httpx.Client, clock: FakeClock
) -> None:
    broker.cache_control = "no-store"
    cache = JWKSCache(ISSUER, http_client=client, clock=clock, min_max_age=5)
    cache.key_set()
    cache.key_set()
    assert broker.count("/jwks.json") == 1
    clock.advance(6)
    cache.key_set()
    assert broker.count("/jwks.json") == 2


def test_rotation_refetches_once_then_rate_limits_unknown_kids(
    broker: FakeBroker, clock: FakeClock, make_validator: Callable[..., TokenValidator]
) -> None:
    validator = make_validator(unknown_kid_interval=30)
    validator.validate(broker.mint())
    broker.add_key("k2")
    assert validator.validate(broker.mint()).sub == "101"  # new kid: one refetch
    assert broker.count("/jwks.json") == 2
    # An unpublished kid within the interval does not refetch...
    stranger = FakeBroker(clock)
    stranger.keys = {"k9": stranger.keys["k1"]}
    stranger.active = "k9"
    for _ in range(10):
        with pytest.raises(UnknownKey):
            validator.validate(stranger.mint())
    assert broker.count("/jwks.json") == 2
    # ...and after it, one more time.
    clock.advance(31)
    with pytest.raises(UnknownKey):
        validator.validate(stranger.mint())
    assert broker.count("/jwks.json") == 3


def test_old_keys_keep_verifying_after_rotation(
    broker: FakeBroker, make_validator: Callable[..., TokenValidator]
) -> None:
    validator = make_validator()
    old = broker.mint()
    broker.add_key("k2")
    validator.validate(broker.mint())
    assert validator.validate(old).sub == "101"


def test_a_token_of_the_key_a_feed_refetch_is_fetching_waits_for_it(
    broker: FakeBroker,
    make_validator: Callable[..., TokenValidator],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At a rotation the feed, signed by the new key, can start the one rate-limited
    refetch just before the first token of that key arrives: the token waits for that
    refetch rather than being refused as signed by an unknown key (a CI run caught it)."""
    validator = make_validator()
    validator.validate(broker.mint())
    assert validator.refresher.ready.wait(5)  # the first cycle (keys, feed) is done
    entered, release = threading.Event(), threading.Event()
    serve_jwks = broker.jwks

    def held_jwks() -> dict[str, object]:
        entered.set()
        assert release.wait(10)
        return serve_jwks()

    monkeypatch.setattr(broker, "jwks", held_jwks)
    broker.add_key("k2")  # the feed is now signed by k2
    feed_read = threading.Thread(target=validator.refresher.refresh)
    feed_read.start()
    assert entered.wait(10)  # the feed's refetch for k2 is under way
    need_kid = validator.refresher.need_kid

    def need_kid_then_release(kid: str) -> object:
        waiter = need_kid(kid)
        release.set()
        return waiter

    monkeypatch.setattr(validator.refresher, "need_kid", need_kid_then_release)
    try:
        assert validator.validate(broker.mint()).sub == "101"
    finally:
        release.set()
        feed_read.join(10)
    assert broker.count("/jwks.json") == 2


def test_a_burst_of_new_kid_tokens_from_threads_makes_one_request(
    broker: FakeBroker, make_validator: Callable[..., TokenValidator]
) -> None:
    validator = make_validator()
    validator.validate(broker.mint())
    broker.add_key("k2")
    broker.delay = 0.05  # the fetch takes a while, so the burst piles up behind it
    tokens = [broker.mint() for _ in range(50)]
    start = threading.Barrier(50)

    def one(token: str) -> str:
        start.wait()
        return validator.validate(token).sub

    with ThreadPoolExecutor(50) as pool:
        assert list(pool.map(one, tokens)) == ["101"] * 50
    assert broker.count("/jwks.json") == 2


def test_a_burst_of_new_kid_tokens_from_tasks_makes_one_request(
    broker: FakeBroker, make_validator: Callable[..., TokenValidator]
) -> None:
    validator = make_validator()

    async def scenario() -> list[str]:
        await validator.avalidate(broker.mint())
        broker.add_key("k2")
        broker.delay = 0.05
        tokens = [broker.mint() for _ in range(50)]
        results = await asyncio.gather(*(validator.avalidate(t) for t in tokens))
        return [c.sub for c in results]

    assert asyncio.run(scenario()) == ["101"] * 50
    assert broker.count("/jwks.json") == 2


def test_broker_down_serves_cached_keys_until_the_bound(
    broker: FakeBroker, clock: FakeClock, make_validator: Callable[..., TokenValidator]
) -> None:
    broker.cache_control = "max-age=60"
    validator = make_validator(max_stale=600, retry_interval=10)
    validator.validate(broker.mint())
    broker.down = True
    clock.advance(61)  # stale now, broker unreachable
    assert validator.refresh(force=False)  # the background thread tries, and fails
    for _ in range(5):
        assert validator.validate(broker.mint()).sub == "101"  # no request of its own
    assert key_requests(broker) == [
        "/.well-known/openid-configuration",
        "/jwks.json",
        "/jwks.json",  # the one try, refused
    ]
    assert validator.refresh(force=False)  # within the retry interval: no new try
    assert len(key_requests(broker)) == 3
    clock.advance(11)
    assert validator.refresh(force=False)
    assert len(key_requests(broker)) == 4
    clock.advance(600)  # past fresh_until + max_stale
    with pytest.raises(JWKSUnavailable):
        validator.validate(broker.mint())
    broker.down = False  # back: recovers at the next try
    clock.advance(11)
    assert validator.refresh(force=False)
    assert validator.validate(broker.mint()).sub == "101"


def test_never_reached_broker_is_jwks_unavailable_not_invalid_token(
    broker: FakeBroker, make_validator: Callable[..., TokenValidator]
) -> None:
    broker.down = True
    validator = make_validator()
    with pytest.raises(JWKSUnavailable) as caught:
        validator.validate(broker.mint())
    assert not isinstance(caught.value, ValueError)


def test_server_errors_count_as_unreachable(clock: FakeClock) -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(503))
    with httpx.Client(transport=transport) as client, pytest.raises(JWKSUnavailable):
        JWKSCache(ISSUER, http_client=client, clock=clock).key_set()


def test_async_broker_down_serves_cached_keys(broker: FakeBroker, clock: FakeClock) -> None:
    async def scenario() -> None:
        async with broker.async_client() as client:
            cache = JWKSCache(ISSUER, async_http_client=client, clock=clock, max_stale=100)
            assert "k1" in await cache.akey_set()
            broker.down = True
            clock.advance(301)
            assert "k1" in await cache.akey_set()
            clock.advance(100)
            with pytest.raises(JWKSUnavailable):
                await cache.akey_set()

    asyncio.run(scenario())
