"""The login throttle's bookkeeping on a real SQLite store: which counters an attempt takes,
how each settlement leaves them, and the address each counter is kept for."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from broker.settings import load_settings
from broker.store.sqlite import SQLiteStore
from broker.throttle import (
    LoginThrottle,
    Throttled,
    address_key,
    flight_key,
    ip_key,
    pair_key,
    user_key,
)
from tests.support.clock import MovableClock

LIMIT = 3


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "broker.db")
    yield store
    store.close()


def make(store: SQLiteStore, clock: MovableClock, **overrides: Any) -> LoginThrottle:
    values = {"login_max_failures_per_user_ip": LIMIT, "login_failure_window": 600, **overrides}
    return LoginThrottle(store, load_settings(**values), clock)


def counts(throttle: LoginThrottle, username: str, ip: str) -> tuple[int, int, int]:
    """(pair, user, address) counts."""
    now = throttle.now()

    def count(key: str) -> int:
        window = throttle.store.read_counter(key, now, throttle.window)
        return 0 if window is None else window.count

    return count(pair_key(username, ip)), count(user_key(username)), count(ip_key(ip))


@pytest.mark.parametrize(
    ("ip", "kept_as"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        (None, "-"),
        ("", "-"),
        ("testclient", "testclient"),
    ],
)
def test_address_key(ip: str | None, kept_as: str) -> None:
    assert address_key(ip) == kept_as


def test_each_settlement_leaves_the_counters_as_documented(store: SQLiteStore) -> None:
    throttle = make(store, MovableClock())
    throttle.reserve("alice", "10.0.0.1").failed()
    assert counts(throttle, "alice", "10.0.0.1") == (1, 1, 1)
    throttle.reserve("alice", "10.0.0.1").released()  # e.g. ShotGrid down
    assert counts(throttle, "alice", "10.0.0.1") == (1, 1, 1)
    throttle.reserve("bob", "10.0.0.1").failed()
    assert counts(throttle, "bob", "10.0.0.1") == (1, 1, 2)
    throttle.reserve("alice", "10.0.0.1").succeeded()
    # The pair is cleared, alice's own slot given back; the address keeps both usernames'
    # first failures (the success's attempt opened no new pair window, so took no slot).
    assert counts(throttle, "alice", "10.0.0.1") == (0, 1, 2)
    fresh = throttle.reserve("carol", "10.0.0.2")
    assert counts(throttle, "carol", "10.0.0.2") == (1, 1, 1)
    fresh.succeeded()
    assert counts(throttle, "carol", "10.0.0.2") == (0, 0, 0)


def test_an_attempt_settles_once_and_counts_when_left_unsettled(store: SQLiteStore) -> None:
    throttle = make(store, MovableClock())
    attempt = throttle.reserve("alice", "10.0.0.1")
    attempt.failed()
    attempt.released()  # too late: already settled
    attempt.succeeded()
    assert counts(throttle, "alice", "10.0.0.1") == (1, 1, 1)
    with pytest.raises(RuntimeError), throttle.reserve("alice", "10.0.0.1"):
        raise RuntimeError("an unexpected error between reserve and settle")
    assert counts(throttle, "alice", "10.0.0.1") == (2, 2, 1)


def test_right_passwords_between_wrong_codes_do_not_reset_the_count(
    store: SQLiteStore,
) -> None:
    """The two-factor step: a right password that ShotGrid answers with "code required"
    is released, a wrong code is a failure; alternating them still ends in Throttled."""
    throttle = make(store, MovableClock())
    for _ in range(LIMIT):
        throttle.reserve("dave", "10.0.0.1").released()
        throttle.reserve("dave", "10.0.0.1").failed()
    with pytest.raises(Throttled) as caught:
        throttle.reserve("dave", "10.0.0.1")
    assert caught.value.limit == "user_ip" and caught.value.retry_after == 600
    assert counts(throttle, "dave", "10.0.0.1") == (LIMIT, LIMIT, 1)  # nothing taken


@pytest.mark.parametrize(
    ("overrides", "failures", "attempt", "tripped"),
    [
        (
            {"login_max_failures_per_user": 2},
            [("alice", "10.0.0.1"), ("alice", "10.0.0.2")],
            ("alice", "10.0.0.3"),
            "user",
        ),
        ({"login_max_failures_per_ip": 1}, [("alice", "10.0.0.1")], ("bob", "10.0.0.1"), "ip"),
    ],
)
def test_a_refusal_gives_back_what_it_took(
    store: SQLiteStore,
    overrides: dict[str, int],
    failures: list[tuple[str, str]],
    attempt: tuple[str, str],
    tripped: str,
) -> None:
    clock = MovableClock()
    throttle = make(store, clock, **overrides)
    for username, ip in failures:
        throttle.reserve(username, ip).failed()
    clock.advance(100)
    before = counts(throttle, *attempt)
    with pytest.raises(Throttled) as caught:
        throttle.reserve(*attempt)
    assert caught.value.limit == tripped
    assert caught.value.retry_after == 500  # what is left of the window that refused
    assert counts(throttle, *attempt) == before


def test_zero_turns_the_username_and_address_limits_off(store: SQLiteStore) -> None:
    throttle = make(
        store, MovableClock(), login_max_failures_per_user=0, login_max_failures_per_ip=0
    )
    for n in range(LIMIT):
        throttle.reserve(f"user{n}", "10.0.0.1").failed()
        throttle.reserve("alice", f"10.0.0.{n + 2}").failed()
    assert counts(throttle, "alice", "10.0.0.1") == (0, 0, 0)
    assert counts(throttle, "alice", "10.0.0.2") == (1, 0, 0)
    assert counts(throttle, "user0", "10.0.0.1") == (1, 0, 0)


class SignalledStore(SQLiteStore):
    """The real store, telling the test when an attempt starts waiting: its first read of
    an in-flight counter (the throttle reads one only when a counter refused it)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.waiting = threading.Event()

    def read_counter(self, key: str, now: Any, window: Any) -> Any:
        if key == flight_key(pair_key("alice", "192.0.2.7")):
            self.waiting.set()
        return super().read_counter(key, now, window)


@pytest.fixture
def signalled(tmp_path: Path) -> Iterator[SignalledStore]:
    store = SignalledStore(tmp_path / "signalled.db")
    yield store
    store.close()


def _reserve_in_thread(throttle: LoginThrottle) -> Future[Any]:
    def attempt() -> Any:
        return throttle.reserve("alice", "192.0.2.7")

    pool = ThreadPoolExecutor(1)
    future = pool.submit(attempt)
    pool.shutdown(wait=False)
    return future


def test_a_full_limit_of_attempts_in_flight_makes_the_next_wait_not_fail(
    signalled: SignalledStore,
) -> None:
    """Limit 1: a second sign-in of the same person while the first is with ShotGrid waits
    for it and goes through when it succeeds (it was refused at once before the wait)."""
    throttle = make(signalled, MovableClock(), login_max_failures_per_user_ip=1)
    first = throttle.reserve("alice", "192.0.2.7")
    second = _reserve_in_thread(throttle)
    assert signalled.waiting.wait(10), "the second attempt never waited"
    assert not second.done()
    first.succeeded()
    attempt = second.result(timeout=10)
    assert counts(throttle, "alice", "192.0.2.7")[0] == 1  # its own slot, after the reset
    attempt.succeeded()
    assert counts(throttle, "alice", "192.0.2.7") == (0, 0, 0)


class SettlingStore(SQLiteStore):
    """The real store, running `before_flight_look` once, just before an attempt's first
    look at the in-flight marks: an interleaving that otherwise needs luck to happen."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.before_flight_look: Callable[[], None] | None = None

    def read_counter(self, key: str, now: Any, window: Any) -> Any:
        hook = self.before_flight_look
        if hook is not None and key == flight_key(pair_key("alice", "192.0.2.7")):
            self.before_flight_look = None
            hook()
        return super().read_counter(key, now, window)


def test_an_attempt_that_settles_between_a_refusal_and_the_look_at_flight_lets_the_next_in(
    tmp_path: Path,
) -> None:
    """The second attempt is refused while the first is in flight; the first succeeds
    before the second looks at the in-flight marks, so it finds none. The counters it was
    refused by have changed meanwhile: it tries again rather than refusing a free slot (a
    parallel CI run caught this)."""
    store = SettlingStore(tmp_path / "settling.db")
    try:
        throttle = make(store, MovableClock(), login_max_failures_per_user_ip=1)
        first = throttle.reserve("alice", "192.0.2.7")
        store.before_flight_look = first.succeeded
        second = throttle.reserve("alice", "192.0.2.7")
        assert store.before_flight_look is None  # the interleaving did happen
        assert counts(throttle, "alice", "192.0.2.7")[0] == 1
        second.succeeded()
        # With the first one failed instead, the second is still refused.
        third = throttle.reserve("alice", "192.0.2.7")
        store.before_flight_look = third.failed
        with pytest.raises(Throttled):
            throttle.reserve("alice", "192.0.2.7")
    finally:
        store.close()


def test_a_waiter_is_refused_when_the_attempt_in_flight_fails(
    signalled: SignalledStore,
) -> None:
    throttle = make(signalled, MovableClock(), login_max_failures_per_user_ip=1)
    first = throttle.reserve("alice", "192.0.2.7")
    second = _reserve_in_thread(throttle)
    assert signalled.waiting.wait(10), "the second attempt never waited"
    first.failed()
    with pytest.raises(Throttled) as refused:
        second.result(timeout=10)
    assert refused.value.limit == "user_ip"
    assert counts(throttle, "alice", "192.0.2.7")[0] == 1  # the failure only


def test_a_waiter_gives_up_after_the_upstream_read_timeout(signalled: SignalledStore) -> None:
    """An attempt that never settles (its process died) holds waiters only for the longest a
    ShotGrid call may take, then they are refused."""
    throttle = make(
        signalled, MovableClock(), login_max_failures_per_user_ip=1, upstream_read_timeout=0.3
    )
    throttle.reserve("alice", "192.0.2.7")  # never settled
    with pytest.raises(Throttled):
        throttle.reserve("alice", "192.0.2.7")
    assert signalled.waiting.is_set()


def test_in_flight_marks_are_given_back_by_every_settlement(store: SQLiteStore) -> None:
    throttle = make(
        store, MovableClock(), login_max_failures_per_ip=10, login_max_failures_per_user=10
    )
    keys = [pair_key("alice", "192.0.2.7"), user_key("alice"), ip_key("192.0.2.7")]

    def flying() -> list[int]:
        now = throttle.now()
        windows = [store.read_counter(flight_key(key), now, throttle.window) for key in keys]
        return [0 if window is None else window.count for window in windows]

    for settle in ("failed", "succeeded", "released"):
        attempt = throttle.reserve("alice", "192.0.2.7")
        assert flying()[:2] == [1, 1]
        getattr(attempt, settle)()
        assert flying() == [0, 0, 0], settle
    attempt = throttle.reserve("alice", "192.0.2.7")
    assert throttle.unlock("alice") >= 1
    assert flying()[:2] == [1, 1]  # unlock leaves the attempt in flight its marks
    attempt.released()
    assert flying() == [0, 0, 0]
