"""The audit trail (`broker.audit_trail`) over a real SQLite store: which events are kept,
the bounded queue, flushing in order, a store outage and what it keeps, pruning; and the
sink binding of `broker.events` that feeds it."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from broker.audit_trail import AuditTrail
from broker.events import audit, bind_audit_sink
from broker.store import StoreUnavailable
from tests.support.clock import MovableClock
from tests.support.flaky_store import FlakyStore

DAY = timedelta(days=1)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FlakyStore]:
    flaky = FlakyStore(f"sqlite:///{tmp_path / 'broker.db'}")
    yield flaky
    flaky.inner.close()


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


def trail_of(store: FlakyStore, clock: MovableClock, **kw: int) -> AuditTrail:
    return AuditTrail(store, clock, retention=DAY, max_events=kw.pop("max_events", 100), **kw)  # type: ignore[arg-type]


def kept(store: FlakyStore, clock: MovableClock) -> list[tuple[str, str, str | None]]:
    events = store.inner.list_audit_events(clock(), limit=1000)
    return [(e.event, e.outcome, e.login) for e in reversed(events)]


def dropped() -> float:
    return REGISTRY.get_sample_value("broker_audit_events_dropped_total") or 0.0


def test_keeps_what_matters_in_order(store: FlakyStore, clock: MovableClock) -> None:
    trail = trail_of(store, clock)
    trail.record("login", "failure", {"login": " Alice ", "ip": "127.0.0.2", "reason": None})
    trail.record("refresh", "rotated", {"family_id": "f"})  # the hot path: a log line only
    trail.record("client_credentials", "success", {"client_id": "dna-backend"})
    trail.record("logout", "success", {"sid": "s1"})
    trail.record("admin", "success", {"action": "user_unlock", "login": "alice", "x": "y" * 999})
    assert trail.pending() == 3
    assert trail.flush() == 3 and trail.pending() == 0
    assert kept(store, clock) == [
        ("login", "failure", "alice"),
        ("logout", "success", None),
        ("admin", "success", "alice"),
    ]
    first, _, last = reversed(store.inner.list_audit_events(clock(), limit=10))
    assert first.fields == {"ip": "127.0.0.2"}  # None dropped, login in its own column
    assert len(last.fields["x"]) == 256
    assert first.expires_at == first.at + DAY


def test_store_outage_keeps_the_queue_and_writes_once(
    store: FlakyStore, clock: MovableClock
) -> None:
    trail = trail_of(store, clock)
    for n in range(3):
        trail.record("login", "success", {"login": f"user{n}"})
    store.down = True
    with pytest.raises(StoreUnavailable):
        trail.flush()
    assert trail.pending() == 3
    trail.record("logout", "success", {})
    store.down = False
    assert trail.flush() == 4
    assert [login for _, _, login in kept(store, clock)] == ["user0", "user1", "user2", None]
    assert trail.flush() == 0


def test_a_full_queue_drops_the_oldest_and_counts(store: FlakyStore, clock: MovableClock) -> None:
    trail = trail_of(store, clock, max_queued=3)
    before = dropped()
    for n in range(5):
        trail.record("login", "success", {"login": f"user{n}"})
    assert dropped() == before + 2
    trail.flush()
    assert [login for _, _, login in kept(store, clock)] == ["user2", "user3", "user4"]


def test_off_when_nothing_is_to_be_kept(store: FlakyStore, clock: MovableClock) -> None:
    trail = trail_of(store, clock, max_events=0)
    trail.record("login", "success", {"login": "alice"})
    assert trail.pending() == 0


def test_prune_bounds_the_collection(store: FlakyStore, clock: MovableClock) -> None:
    trail = trail_of(store, clock, max_events=2)
    for n in range(4):
        trail.record("login", "success", {"login": f"user{n}"})
        clock.advance(1)
    trail.flush()
    assert trail.prune() == 2
    assert [login for _, _, login in kept(store, clock)] == ["user2", "user3"]
    clock.advance(DAY.total_seconds())
    assert trail.prune() == 2 and kept(store, clock) == []


def test_audit_reaches_the_sink_bound_to_its_context(
    store: FlakyStore, clock: MovableClock
) -> None:
    trail = trail_of(store, clock)
    other = trail_of(store, clock)

    def in_context(sink: AuditTrail) -> None:
        bind_audit_sink(sink.record)
        audit("logout", sid="s1", password="never kept")

    contextvars.copy_context().run(in_context, trail)
    contextvars.copy_context().run(in_context, other)
    audit("logout", sid="unbound")  # no sink here: a log line only
    assert trail.pending() == other.pending() == 1
    trail.flush()
    (event,) = store.inner.list_audit_events(clock(), limit=10)
    assert event.fields == {"sid": "s1"}
