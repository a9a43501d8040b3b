"""The validator's revocations and its background thread, against the fake broker served
over real HTTP: refusal within one poll, cursors, full replacement, ETags, the signed feed,
the stale-feed policy both ways, and the never-blocking promise.

Time: the validator runs on the fake broker's `FakeClock`; a test moves it and asks the
background thread for one cycle (`validator.refresh(force=False)` does what is due, and
waits for its completion), so nothing sleeps.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from broker_client import (
    JWKSUnavailable,
    RevocationsUnavailable,
    TokenRevoked,
    TokenValidator,
    UnknownKey,
)
from client_support import FakeBroker, FakeClock, LogRecords, private_key

Make = Callable[..., TokenValidator]

# The never-blocking promise: validating a token whose key is known reads memory only.
# A correctness bound, generous for a loaded CI machine running the suite's parallel workers,
# not a benchmark: a wait would take a network timeout or kid_wait (5 s here), 20 times more.
MEMORY_ONLY_BOUND = 0.25


@pytest.fixture
def served(broker: FakeBroker) -> Iterator[str]:
    with broker.served() as url:
        yield url


@pytest.fixture
def make(served: str, clock: FakeClock) -> Iterator[Make]:
    made: list[TokenValidator] = []

    def make(**options: Any) -> TokenValidator:
        options.setdefault("poll", 5.0)
        # A refetch the test waits for must finish on a loaded machine (parallel workers):
        # the default 0.25 s bound is for production; tests of the bound set their own.
        options.setdefault("kid_wait", 5.0)
        made.append(TokenValidator(served, "dna-api", clock=clock, **options))
        assert made[-1].refresher.ready.wait(5)  # the first cycle (keys, feed) is done
        return made[-1]

    yield make
    for validator in made:
        validator.close()


# --- refusal within one poll -------------------------------------------------------------


@pytest.mark.parametrize("signed", [True, False], ids=["signed feed", "json feed"])
@pytest.mark.parametrize(
    ("kind", "value"), [("sid", "session-1"), ("fam", "family-1"), ("jti", "token-1")]
)
def test_a_token_is_refused_within_one_poll_of_its_entry(
    make: Make, broker: FakeBroker, clock: FakeClock, signed: bool, kind: str, value: str
) -> None:
    validator = make(signed_feed=signed)
    token = broker.mint(jti="token-1")
    other = broker.mint(sid="session-2", fam="family-2")
    assert validator.validate(token).sub == "101"  # now in the validation cache
    broker.revoke(kind, value)
    clock.advance(4.9)
    assert validator.refresh(force=False)  # the poll is not due yet
    assert validator.validate(token).sub == "101"
    clock.advance(0.1)
    assert validator.refresh(force=False)  # due: read, and the entry is in the set
    with pytest.raises(TokenRevoked) as caught:
        validator.validate(token)
    assert caught.value.kind == kind
    assert caught.value.error == "invalid_token"
    assert validator.validate(other).sub == "101"  # another session is untouched
    accept = "application/jwt" if signed else "application/json"
    assert {a for _, a, _ in broker.feed_reads} == {accept}


def test_a_fresh_token_of_a_revoked_session_is_refused_too(make: Make, broker: FakeBroker) -> None:
    validator = make()
    broker.revoke("sid", "session-1")
    assert validator.refresh()
    with pytest.raises(TokenRevoked):
        validator.validate(broker.mint())  # never cached: refused on the cold path


def test_async_validation_checks_revocations(make: Make, broker: FakeBroker) -> None:
    validator = make()
    token = broker.mint()
    broker.revoke("fam", "family-1")
    assert validator.refresh()
    with pytest.raises(TokenRevoked):
        asyncio.run(validator.avalidate(token))


# --- the cursor, full replacement, ETags ------------------------------------------------


def test_reads_are_incremental_with_the_cursor(
    make: Make, broker: FakeBroker, clock: FakeClock
) -> None:
    validator = make()
    assert validator.refresh()
    broker.revoke("jti", "a")
    clock.advance(5)
    assert validator.refresh(force=False)
    first_cursor = validator.feed.cursor if validator.feed else None
    broker.revoke("jti", "b")
    clock.advance(5)
    assert validator.refresh(force=False)
    sinces = [since for since, _, status in broker.feed_reads if status == 200]
    assert sinces[0] is None  # the first read asks for everything
    assert sinces[-1] == first_cursor  # later ones pass the last cursor back
    assert validator.revocations is not None
    assert set(validator.revocations.snapshot()["jti"]) == {"a", "b"}


def test_full_replaces_the_set(make: Make, broker: FakeBroker) -> None:
    validator = make()
    broker.revoke("sid", "session-1")
    assert validator.refresh()
    token = broker.mint()
    with pytest.raises(TokenRevoked):
        validator.validate(token)
    broker.entries.clear()  # the broker no longer has the entry...
    assert validator.feed is not None
    validator.feed.cursor = "not-a-cursor"  # ...and a cursor it cannot serve: full: true
    assert validator.refresh()
    assert validator.validate(token).sub == "101"


def test_an_unchanged_feed_answers_304(make: Make, broker: FakeBroker) -> None:
    validator = make()
    for _ in range(3):
        assert validator.refresh()  # the clock does not move: the same cursor each time
    # The first read (no since) and the second (since=C) differ; then the same URL.
    assert [status for *_, status in broker.feed_reads] == [200, 200, 304, 304]


def test_a_signed_feed_from_an_unknown_key_is_not_believed(
    make: Make, broker: FakeBroker, clock: FakeClock
) -> None:
    broker.feed_signer = ("intruder", private_key("intruder"))
    validator = make(fail_closed=True, startup_wait=5)
    token = broker.mint()
    with pytest.raises(RevocationsUnavailable):
        validator.validate(token)
    assert validator.refresher.feed_failures >= 1
    broker.feed_signer = None
    assert validator.refresh()
    assert validator.validate(token).sub == "101"


# --- the stale-feed policy ------------------------------------------------------------------


def test_fail_open_keeps_validating_and_warns_once_per_outage(
    make: Make, broker: FakeBroker, clock: FakeClock
) -> None:
    validator = make(revocation_stale_after=60)
    with LogRecords("broker_client") as logs:
        broker.feed_down = True
        clock.advance(61)
        assert validator.refresh(force=False)
        for _ in range(20):
            assert validator.validate(broker.mint()).sub == "101"
        stale = [m for m in logs.messages() if "has not been read for" in m]
        assert len(stale) == 1
        broker.feed_down = False
        clock.advance(5)
        assert validator.refresh(force=False)
        assert any("readable again" in m for m in logs.messages(level=20))
        broker.feed_down = True  # a second outage warns again, once
        clock.advance(66)
        assert validator.refresh(force=False)
        validator.validate(broker.mint())
        validator.validate(broker.mint())
    assert len([m for m in logs.messages() if "has not been read for" in m]) == 2


def test_fail_closed_refuses_every_token_until_the_feed_answers(
    make: Make, broker: FakeBroker, clock: FakeClock
) -> None:
    validator = make(fail_closed=True, revocation_stale_after=60)
    token = broker.mint()
    assert validator.validate(token).sub == "101"
    broker.feed_down = True
    clock.advance(59)
    assert validator.refresh(force=False)
    assert validator.validate(token).sub == "101"  # within the bound
    clock.advance(2)
    with pytest.raises(RevocationsUnavailable) as caught:
        validator.validate(token)  # cached, and still refused
    assert isinstance(caught.value, JWKSUnavailable)
    assert not isinstance(caught.value, ValueError)
    assert caught.value.retry_after >= 1
    broker.feed_down = False
    clock.advance(5)
    assert validator.refresh(force=False)
    assert validator.validate(token).sub == "101"


def test_fail_closed_waits_for_the_first_read_at_start_up(make: Make, broker: FakeBroker) -> None:
    broker.feed_down = True
    validator = make(fail_closed=True)
    with pytest.raises(RevocationsUnavailable):
        validator.validate(broker.mint())
    broker.feed_down = False
    assert validator.refresh()
    assert validator.validate(broker.mint()).sub == "101"


def test_no_feed_advertised_is_a_stale_feed(
    make: Make, broker: FakeBroker, clock: FakeClock
) -> None:
    broker.advertise_feed = False
    validator = make(revocation_stale_after=60)
    assert validator.validate(broker.mint()).sub == "101"
    assert validator.refresher.feed_failures >= 1
    assert broker.feed_reads == []
    closed = make(fail_closed=True, startup_wait=5)
    with pytest.raises(RevocationsUnavailable):
        closed.validate(broker.mint())


def test_revocations_off_reads_no_feed(make: Make, broker: FakeBroker) -> None:
    validator = make(revocations=False)
    broker.revoke("sid", "session-1")
    assert validator.refresh()
    assert validator.validate(broker.mint()).sub == "101"
    assert validator.revocations is None
    assert broker.feed_reads == []


# --- never blocking --------------------------------------------------------------------------


def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def timed_refusal(error: type[Exception], call: Callable[..., Any], *args: Any) -> float:
    started = time.perf_counter()
    with pytest.raises(error):
        call(*args)
    return time.perf_counter() - started


def test_a_hanging_broker_does_not_delay_tokens_with_known_keys(
    make: Make, broker: FakeBroker, clock: FakeClock
) -> None:
    validator = make()
    assert validator.validate(broker.mint()).sub == "101"  # keys loaded
    broker.hang = True  # accepts connections, never answers
    clock.advance(301)  # the key set is stale and the feed due: fetches start, and hang
    validator.refresher.wake()
    assert not validator.refresh(timeout=0.2)  # the background thread is stuck
    tokens = [broker.mint() for _ in range(5)]  # new tokens: each a signature check
    for token in tokens:
        assert timed(lambda t=token: validator.validate(t)) < MEMORY_ONLY_BOUND

    async def in_a_loop() -> list[float]:
        return [await _atimed(validator.avalidate(broker.mint())) for _ in range(5)]

    assert max(asyncio.run(in_a_loop())) < MEMORY_ONLY_BOUND


async def _atimed(awaitable: Any) -> float:
    started = time.perf_counter()
    await awaitable
    return time.perf_counter() - started


def test_an_unknown_kid_waits_at_most_kid_wait(
    make: Make, broker: FakeBroker, clock: FakeClock
) -> None:
    validator = make(kid_wait=0.2)
    validator.validate(broker.mint())
    broker.hang = True
    broker.add_key("k2")
    token = broker.mint()
    started = time.perf_counter()
    with pytest.raises(JWKSUnavailable) as caught:
        validator.validate(token)  # the refetch hangs: "retry shortly", a 503
    elapsed = time.perf_counter() - started
    assert 0.19 <= elapsed < 1.0
    assert caught.value.retry_after == 1
    assert not isinstance(caught.value, ValueError)


def test_an_unknown_kid_is_awaited_without_blocking_the_loop(
    make: Make, broker: FakeBroker
) -> None:
    validator = make(kid_wait=0.3)
    validator.validate(broker.mint())
    broker.hang = True
    broker.add_key("k2")
    token = broker.mint()

    async def scenario() -> int:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)  # work on the same loop, measured, not waited on

        task = asyncio.create_task(ticker())
        with pytest.raises(JWKSUnavailable):
            await validator.avalidate(token)
        stop.set()
        await task
        return ticks

    assert asyncio.run(scenario()) >= 5  # the loop kept running during the wait
    broker.hang = False
    assert validator.refresh()
    assert validator.validate(token).sub == "101"  # the refetch brought k2


def test_a_forged_kid_is_refused_without_waiting_once_refetched(
    make: Make, broker: FakeBroker
) -> None:
    validator = make()
    validator.validate(broker.mint())
    stranger = FakeBroker(broker.clock, issuer=broker.issuer)
    stranger.keys = {"k9": private_key("k9")}
    stranger.active = "k9"
    with pytest.raises(UnknownKey):
        validator.validate(stranger.mint())  # one refetch, waited for, kid still unknown
    fetches = validator.jwks.fetches
    token = stranger.mint()
    assert timed_refusal(UnknownKey, validator.validate, token) < MEMORY_ONLY_BOUND
    assert validator.jwks.fetches == fetches  # rate limited: no new fetch, no wait


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A server that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_the_first_key_set_is_waited_for_at_most_startup_wait(
    black_hole: str, clock: FakeClock
) -> None:
    token = FakeBroker(clock, issuer=black_hole).mint()
    with TokenValidator(black_hole, clock=clock, startup_wait=0.2) as validator:
        started = time.perf_counter()
        with pytest.raises(JWKSUnavailable):
            validator.validate(token)
        assert 0.19 <= time.perf_counter() - started < 1.0
        # A second request while the first fetch still hangs: the same bounded wait.
        assert timed_refusal(JWKSUnavailable, validator.validate, token) < 1.0


def test_validate_on_an_event_loop_thread_never_waits(black_hole: str, clock: FakeClock) -> None:
    token = FakeBroker(clock, issuer=black_hole).mint()
    with TokenValidator(black_hole, clock=clock, startup_wait=5) as validator:

        async def sync_call_inside_async_code() -> float:
            return timed_refusal(JWKSUnavailable, validator.validate, token)

        with LogRecords("broker_client.validator") as logs:
            assert asyncio.run(sync_call_inside_async_code()) < MEMORY_ONLY_BOUND
            asyncio.run(sync_call_inside_async_code())
        assert len([m for m in logs.messages() if "use avalidate()" in m]) == 1


def test_close_stops_the_thread(make: Make, broker: FakeBroker) -> None:
    validator = make()
    assert validator.refresher.alive
    validator.close()
    assert not validator.refresher.alive
    with broker.client() as client:
        with TokenValidator(broker.issuer, http_client=client) as scoped:
            thread = scoped.refresher
            assert thread.alive
        assert not thread.alive
