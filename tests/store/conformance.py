"""The Store conformance suite: every backend subclasses `StoreConformance` and overrides
the `store` fixture (Dex's storage/conformance pattern). The suite is one class per store
concern (clients, sessions, refresh families, keys, upstream tokens, leases, codes,
counters, denylist, lifecycle), combined into `StoreConformance`; a backend implementing
only some concerns can subclass only those. Refresh rotation runs through the broker's own
policy (`broker.sessions.rotate_chain`) over each backend's primitives, so every backend
is held to the same rules.

Time is passed explicitly (aware UTC, real clock values moved by timedeltas); nothing
sleeps. The races start their threads behind a barrier so the calls really overlap.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest

from broker.sessions import rotate_chain
from broker.store import AlreadyClaimed, AlreadyExists, Claimed, Store
from broker.store.records import (
    AppSessionRecord,
    AuditRecord,
    AuthCodeRecord,
    ClientRecord,
    CounterWindow,
    DeviceCodeRecord,
    FamilyRecord,
    KeyRecord,
    KeyState,
    LogoutNotice,
    PermissionCheckRecord,
    RefreshTokenRecord,
    RevocationEntry,
    RevocationKind,
    SessionRecord,
    UpstreamTokenRecord,
    ms,
)
from broker.tokens.rotation import RotationResult, RotationStatus

T = TypeVar("T")

H = timedelta(hours=1)
S = timedelta(seconds=1)
MS = timedelta(milliseconds=1)
GRACE = timedelta(seconds=30)


def race(n: int, fn: Callable[[int], T]) -> list[T]:
    """Run fn(0..n-1) in n threads released together; re-raise the first failure.

    The interpreter switches threads every microsecond meanwhile (not every 5 ms), so a
    read-then-write in Python really gets interleaved: a broken CAS fails these tests.
    """
    barrier = threading.Barrier(n)

    def run(i: int) -> T:
        barrier.wait(timeout=10)
        return fn(i)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        with ThreadPoolExecutor(max_workers=n) as pool:
            return list(pool.map(run, range(n)))
    finally:
        sys.setswitchinterval(interval)


def rotate(
    store: Store, jti: str, successor: RefreshTokenRecord, now: datetime, grace: timedelta
) -> RotationResult:
    """A refresh as the grant makes it: read the chain once, then the policy and claim."""
    return rotate_chain(
        store, store.get_refresh_chain(jti), successor, now, grace, feed_until=now + H
    )


def family_starter(
    family_id: str, jti: str
) -> Callable[[AuthCodeRecord], tuple[FamilyRecord, RefreshTokenRecord]]:
    def start(code: AuthCodeRecord) -> tuple[FamilyRecord, RefreshTokenRecord]:
        family = make_family(code.auth_time, family_id, sid=code.sid, code_hash=code.code_hash)
        return family, make_token(code.auth_time, jti, family_id)

    return start


def make_session(now: datetime, sid: str = "sid-1", **kw: Any) -> SessionRecord:
    fields: dict[str, Any] = {
        "sid": sid,
        "user_id": 42,
        "login": "alice",
        "email": "alice@example.com",
        "name": "Alice",
        "auth_time": now,
        "expires_at": now + 8 * H,
        "last_checked_at": now,
    }
    fields.update(kw)
    return SessionRecord(**fields)


def make_family(
    now: datetime, family_id: str = "fam-1", sid: str = "sid-1", **kw: Any
) -> FamilyRecord:
    fields: dict[str, Any] = {
        "family_id": family_id,
        "sid": sid,
        "client_id": "cli",
        "scope": "openid offline_access",
        "audience": "cli",
        "created_at": now,
        "expires_at": now + 8 * H,
    }
    fields.update(kw)
    return FamilyRecord(**fields)


def make_token(now: datetime, jti: str, family_id: str = "fam-1", **kw: Any) -> RefreshTokenRecord:
    fields: dict[str, Any] = {
        "jti": jti,
        "family_id": family_id,
        "issued_at": now,
        "expires_at": now + 2 * H,
    }
    fields.update(kw)
    return RefreshTokenRecord(**fields)


def make_key(now: datetime, kid: str, state: KeyState, **kw: Any) -> KeyRecord:
    fields: dict[str, Any] = {
        "kid": kid,
        "alg": "ES256",
        "state": state,
        "private_jwk": b"\x00ciphertext-" + kid.encode() + b"\xff",
        "created_at": now,
    }
    fields.update(kw)
    return KeyRecord(**fields)


def make_code(now: datetime, code_hash: str = "code-1", **kw: Any) -> AuthCodeRecord:
    fields: dict[str, Any] = {
        "code_hash": code_hash,
        "client_id": "cli",
        "redirect_uri": "https://app.example/cb",
        "scope": "openid",
        "sid": "sid-1",
        "auth_time": now,
        "expires_at": now + 60 * S,
        "nonce": "n-0",
        "code_challenge": "abc",
        "code_challenge_method": "S256",
        "extra": {"claims": "{}"},
    }
    fields.update(kw)
    return AuthCodeRecord(**fields)


def make_upstream(now: datetime, key: str = "session:sid-1", **kw: Any) -> UpstreamTokenRecord:
    fields: dict[str, Any] = {
        "key": key,
        "access_token": b"\x01enc-access",
        "refresh_token": b"\x02enc-refresh",
        "expires_at": now + 10 * 60 * S,
        "refresh_expires_at": now + 24 * H,
    }
    fields.update(kw)
    return UpstreamTokenRecord(**fields)


def make_app_session(now: datetime, handle_hash: str = "h-1", **kw: Any) -> AppSessionRecord:
    fields: dict[str, Any] = {
        "handle_hash": handle_hash,
        "binding": "bind-1",
        "request": b"\x01sealed-request",
        "app_name": "DNA sign-in 4821",
        "created_at": now,
        "expires_at": now + 300 * S,
        "next_poll_at": now,
        "purge_at": now + 900 * S,
    }
    fields.update(kw)
    return AppSessionRecord(**fields)


def make_device_code(now: datetime, device_hash: str = "dc-1", **kw: Any) -> DeviceCodeRecord:
    fields: dict[str, Any] = {
        "device_code_hash": device_hash,
        "user_code_hash": "uc-" + device_hash,
        "client_id": "cli",
        "scope": "openid",
        "created_at": now,
        "expires_at": now + 600 * S,
        "interval": 5,
        "purge_at": now + H,
    }
    fields.update(kw)
    return DeviceCodeRecord(**fields)


def make_notice(now: datetime, notice_id: str, sid: str = "sid-1", **kw: Any) -> LogoutNotice:
    fields: dict[str, Any] = {
        "notice_id": notice_id,
        "sid": sid,
        "client_id": "cli",
        "user_id": 42,
        "created_at": now,
        "due_at": now,
    }
    fields.update(kw)
    return LogoutNotice(**fields)


class ConformanceBase:
    """Subclass and override `store` to yield a fresh, empty store."""

    #: False where the backend (mongomock) is not atomic under threads: races skip.
    concurrent = True

    @pytest.fixture
    def store(self) -> Iterator[Store]:
        raise NotImplementedError
        yield

    @pytest.fixture
    def now(self) -> datetime:
        return ms(datetime.now(UTC))

    def require_concurrency(self) -> None:
        if not self.concurrent:
            pytest.skip(f"{type(self).__name__}: backend is not atomic under threads")


def make_audit(at: datetime, n: int, **kw: Any) -> AuditRecord:
    """The n-th event of a test: ids sort by time, then by n (as the trail writes them)."""
    fields: dict[str, Any] = {
        "id": f"{int(at.timestamp() * 1000):013d}{n:016x}",
        "at": at,
        "event": "login",
        "outcome": "success",
        "expires_at": at + 24 * H,
        "login": "alice",
        "fields": {"client_id": "dna-cli", "ip": "127.0.0.2"},
    }
    fields.update(kw)
    return AuditRecord(**fields)


class SessionAdminConformance(ConformanceBase):
    """`SessionAdminStore`: the admin API's reads of a person's sessions."""

    def test_list_login_sessions_live_only_newest_first(self, store: Store, now: datetime) -> None:
        older = make_session(now - H, sid="s-old", auth_method="device", client_ip="10.0.0.9")
        newer = make_session(now, sid="s-new", user_agent="curl/8.5", client_ip="127.0.0.2")
        store.create_session(older)
        store.create_session(newer)
        store.create_session(make_session(now, sid="s-ended"))
        store.revoke_session("s-ended", now, "logout", feed_until=now + H)
        store.create_session(make_session(now - 9 * H, sid="s-expired"))  # 8 h lifetime
        store.create_session(make_session(now, sid="s-bob", login="bob", user_id=7))
        assert store.list_login_sessions("alice", now) == [newer, older]
        assert store.list_login_sessions("bob", now) == [store.get_session("s-bob")]
        assert store.list_login_sessions("nobody", now) == []
        # Exactly as stored: ShotGrid's own spelling of the login.
        assert store.list_login_sessions("ALICE", now) == []
        assert store.list_login_sessions("alice", now + 9 * H) == []

    def test_session_sign_in_fields_round_trip(self, store: Store, now: datetime) -> None:
        plain = make_session(now, sid="plain")
        store.create_session(plain)
        stored = store.get_session("plain")
        assert stored is not None and stored.auth_method == "password"
        assert stored.client_ip is None and stored.user_agent is None
        full = make_session(
            now, sid="full", auth_method="shotgrid", client_ip="::1", user_agent="Mozilla/5.0 é"
        )
        store.create_session(full)
        assert store.get_session("full") == full

    def test_refresh_activity_is_the_newest_token_per_family(
        self, store: Store, now: datetime
    ) -> None:
        store.create_session(make_session(now))
        store.create_family(make_family(now, "f1"), make_token(now, "t1", "f1"))
        store.create_family(make_family(now, "f2"), make_token(now + S, "t2", "f2"))
        rotate(store, "t1", make_token(now + 5 * S, "t1b", "f1"), now + 5 * S, GRACE)
        rotate(store, "t1b", make_token(now + 9 * S, "t1c", "f1"), now + 9 * S, GRACE)
        assert store.refresh_activity(["f1", "f2", "nope"]) == {"f1": now + 9 * S, "f2": now + S}
        assert store.refresh_activity(["f2", "f2"]) == {"f2": now + S}
        assert store.refresh_activity([]) == {}


class AuditConformance(ConformanceBase):
    """`AuditStore`: the kept audit events, bounded and expiring."""

    def test_add_and_list_newest_first_with_filters(self, store: Store, now: datetime) -> None:
        events = [
            make_audit(now, 1),
            make_audit(now + S, 2, login="bob"),
            make_audit(now + S, 3, event="admin", outcome="success", fields={"admin": "c:x"}),
            make_audit(now + 2 * S, 4, event="logout", login=None, fields={}),
        ]
        store.add_audit_events(events)
        listed = store.list_audit_events(now + 3 * S, limit=10)
        assert listed == list(reversed(events))
        assert store.list_audit_events(now, login="alice", limit=10) == [events[2], events[0]]
        assert store.list_audit_events(now, event="login", limit=10) == [events[1], events[0]]
        assert store.list_audit_events(now, login="bob", event="login", limit=10) == [events[1]]
        assert store.list_audit_events(now, login="carol", limit=10) == []
        assert store.list_audit_events(now, limit=2) == [events[3], events[2]]
        with pytest.raises(ValueError):
            store.list_audit_events(now, limit=0)

    def test_a_retried_batch_writes_nothing_twice(self, store: Store, now: datetime) -> None:
        first = [make_audit(now, 1), make_audit(now, 2)]
        store.add_audit_events(first)
        store.add_audit_events([*first, make_audit(now, 3)])
        assert [e.id for e in store.list_audit_events(now, limit=10)] == [
            make_audit(now, n).id for n in (3, 2, 1)
        ]
        store.add_audit_events([])

    def test_expired_events_are_not_listed_and_pruned(self, store: Store, now: datetime) -> None:
        store.add_audit_events(
            [make_audit(now, 1, expires_at=now + S), make_audit(now, 2, expires_at=now + H)]
        )
        assert [e.id for e in store.list_audit_events(now + S, limit=10)] == [make_audit(now, 2).id]
        assert store.prune_audit_events(now + S, keep=10) == 1
        assert store.prune_audit_events(now + S, keep=10) == 0
        assert [e.id for e in store.list_audit_events(now, limit=10)] == [make_audit(now, 2).id]

    def test_prune_keeps_the_newest(self, store: Store, now: datetime) -> None:
        store.add_audit_events([make_audit(now + n * S, n) for n in range(1, 8)])
        assert store.prune_audit_events(now, keep=3) == 4
        kept = store.list_audit_events(now, limit=10)
        assert [e.id for e in kept] == [make_audit(now + n * S, n).id for n in (7, 6, 5)]
        assert store.prune_audit_events(now, keep=3) == 0
        assert store.prune_audit_events(now, keep=5) == 0
        assert store.prune_audit_events(now, keep=0) == 3
        assert store.list_audit_events(now, limit=10) == []


class CounterConformance(ConformanceBase):
    """`CounterStore`: limited fixed-window counters (login throttling)."""

    def test_reserve_counts_up_to_the_limit(self, store: Store, now: datetime) -> None:
        window = 60 * S
        assert store.read_counter("k", now, window) is None
        granted = [store.reserve("k", now + i * S, window, 3) for i in range(3)]
        assert granted == [CounterWindow(n, now) for n in (1, 2, 3)]
        assert store.reserve("k", now + 10 * S, window, 3) is None  # full: nothing written
        assert store.read_counter("k", now + 10 * S, window) == CounterWindow(3, now)
        assert store.reserve("k", now + 10 * S, window, 4) == CounterWindow(4, now)  # own limit
        assert store.reserve("other", now, window, 3) == CounterWindow(1, now)

    def test_window_restarts_after_it_ends(self, store: Store, now: datetime) -> None:
        window = 60 * S
        for _ in range(2):
            store.reserve("k", now, window, 2)
        assert store.reserve("k", now + window - MS, window, 2) is None
        assert store.read_counter("k", now + window, window) is None
        restarted = now + window
        assert store.reserve("k", restarted, window, 2) == CounterWindow(1, restarted)
        assert store.reserve("k", restarted + S, window, 2) == CounterWindow(2, restarted)
        assert store.reserve("k", restarted + 2 * S, window, 2) is None

    def test_release_gives_a_slot_back_to_its_window_only(
        self, store: Store, now: datetime
    ) -> None:
        window = 60 * S
        first = store.reserve("k", now, window, 2)
        store.reserve("k", now, window, 2)
        assert first is not None and store.reserve("k", now, window, 2) is None
        assert store.release("k", first.started) is True
        assert store.read_counter("k", now, window) == CounterWindow(1, now)
        assert store.reserve("k", now + S, window, 2) == CounterWindow(2, now)
        assert store.release("k", now + S) is False  # no window began then
        assert store.release("unknown", now) is False
        later = store.reserve("k", now + window, window, 2)  # a new window
        assert later == CounterWindow(1, now + window)
        assert store.release("k", first.started) is False  # the old window is gone
        assert store.read_counter("k", now + window, window) == later
        assert store.release("k", later.started) is True
        assert store.release("k", later.started) is False  # never below 0
        assert store.read_counter("k", now + window, window) == CounterWindow(0, now + window)

    def test_reset_counter_and_prefix(self, store: Store, now: datetime) -> None:
        window = 60 * S
        keys = ("u:alice:1", "u:alice:2", "u:alice", "u:alice;", "u:alicd:1", "v:alice:1")
        for key in keys:
            store.reserve(key, now, window, 5)
        assert store.reset_counters("u:alice:") == 2
        assert store.reset_counters("u:alice:") == 0
        for key in ("u:alice:1", "u:alice:2"):
            assert store.read_counter(key, now, window) is None
        for key in keys[2:]:
            assert store.read_counter(key, now, window) == CounterWindow(1, now), key
        store.reset_counter("u:alice")
        assert store.read_counter("u:alice", now, window) is None
        assert store.reserve("u:alice", now + S, window, 1) == CounterWindow(1, now + S)
        with pytest.raises(ValueError):
            store.reset_counters("")
        with pytest.raises(ValueError):
            store.reserve("k", now, window, 0)

    @pytest.mark.parametrize("state", ["absent", "live", "ended"])
    def test_race_reserve_grants_exactly_the_limit(
        self, store: Store, now: datetime, state: str
    ) -> None:
        """40 threads, limit 5: exactly 5 slots, whether the racers create the counter,
        count in a live window or restart an ended one."""
        self.require_concurrency()
        window = 60 * S
        at = now
        if state == "live":
            store.reserve("user:alice", now, window, 5)
        elif state == "ended":
            for _ in range(5):
                store.reserve("user:alice", now, window, 5)
            at = now + window
        held = 1 if state == "live" else 0
        results = race(40, lambda i: store.reserve("user:alice", at, window, 5))
        granted = [r for r in results if r is not None]
        assert sorted(r.count for r in granted) == list(range(held + 1, 6)), results
        assert {r.started for r in granted} == {now if state == "live" else at}
        assert store.read_counter("user:alice", at, window) == CounterWindow(5, granted[0].started)

    def test_race_reserve_and_release_never_exceed_the_limit(
        self, store: Store, now: datetime
    ) -> None:
        """Racers each reserve, give the slot back, and reserve again: no more than the
        limit keep a slot, and the counter is exactly the number kept (no slot lost or
        counted twice)."""
        self.require_concurrency()
        window = 60 * S

        def churn(i: int) -> CounterWindow | None:
            first = store.reserve("k", now, window, 5)
            if first is not None:
                assert store.release("k", first.started)
            return store.reserve("k", now, window, 5)

        kept = [r for r in race(40, churn) if r is not None]
        assert 1 <= len(kept) <= 5, kept
        assert store.read_counter("k", now, window) == CounterWindow(len(kept), now)


class AppSessionConformance(ConformanceBase):
    """App Session Launcher sign-ins: the poll pace and the state are compare-and-swaps."""

    def test_app_session_round_trip(self, store: Store, now: datetime) -> None:
        record = make_app_session(now, session_token=None)
        store.create_app_session(record)
        assert store.get_app_session("h-1") == record
        assert store.get_app_session("nope") is None
        with pytest.raises(AlreadyExists):
            store.create_app_session(make_app_session(now))

    def test_claim_poll_paces(self, store: Store, now: datetime) -> None:
        store.create_app_session(make_app_session(now))
        assert store.claim_app_session_poll("h-1", now, now + 2 * S) is True
        assert store.claim_app_session_poll("h-1", now + S, now + 3 * S) is False
        stored = store.get_app_session("h-1")
        assert stored is not None and stored.next_poll_at == now + 2 * S
        assert store.claim_app_session_poll("h-1", now + 2 * S, now + 4 * S) is True
        assert store.claim_app_session_poll("unknown", now, now + S) is False

    def test_state_swap(self, store: Store, now: datetime) -> None:
        store.create_app_session(make_app_session(now))
        assert store.set_app_session_state("h-1", "approved", "completed", None) is False
        assert store.set_app_session_state("h-1", "pending", "approved", b"\x02tok") is True
        stored = store.get_app_session("h-1")
        assert stored is not None and stored.state == "approved"
        assert stored.session_token == b"\x02tok"
        assert store.set_app_session_state("h-1", "approved", "completed", None) is True
        stored = store.get_app_session("h-1")
        assert stored is not None and stored.state == "completed"
        assert stored.session_token is None
        assert store.set_app_session_state("h-1", "approved", "completed", None) is False

    def test_race_claim_poll_one_winner(self, store: Store, now: datetime) -> None:
        self.require_concurrency()
        store.create_app_session(make_app_session(now))
        wins = race(8, lambda i: store.claim_app_session_poll("h-1", now, now + 2 * S))
        assert wins.count(True) == 1

    def test_race_state_one_winner(self, store: Store, now: datetime) -> None:
        self.require_concurrency()
        store.create_app_session(make_app_session(now, state="approved"))
        wins = race(8, lambda i: store.set_app_session_state("h-1", "approved", "completed", None))
        assert wins.count(True) == 1


class DeviceCodeConformance(ConformanceBase):
    """RFC 8628 device authorizations: decisions, the poll pace and redemption are
    compare-and-swaps; both codes are unique."""

    def test_device_code_round_trip(self, store: Store, now: datetime) -> None:
        record = make_device_code(now)
        store.create_device_code(record)
        assert store.get_device_code("dc-1") == record
        assert store.get_device_code_by_user_code("uc-dc-1") == record
        assert store.get_device_code("nope") is None
        assert store.get_device_code_by_user_code("nope") is None
        with pytest.raises(AlreadyExists):
            store.create_device_code(make_device_code(now))
        with pytest.raises(AlreadyExists):  # a user code collision
            store.create_device_code(make_device_code(now, "dc-2", user_code_hash="uc-dc-1"))

    def test_decide_once(self, store: Store, now: datetime) -> None:
        store.create_device_code(make_device_code(now))
        assert store.decide_device_code("uc-dc-1", "approved", "sid-9", now + S) is True
        assert store.decide_device_code("uc-dc-1", "denied", "sid-8", now + 2 * S) is False
        stored = store.get_device_code("dc-1")
        assert stored is not None
        assert (stored.status, stored.sid, stored.decided_at) == ("approved", "sid-9", now + S)
        assert store.decide_device_code("unknown", "approved", "sid", now) is False

    def test_touch_poll_is_a_swap(self, store: Store, now: datetime) -> None:
        store.create_device_code(make_device_code(now))
        assert store.touch_device_poll("dc-1", now, now + S, 5) is False  # never polled yet
        assert store.touch_device_poll("dc-1", None, now + S, 5) is True
        assert store.touch_device_poll("dc-1", None, now + 2 * S, 10) is False
        assert store.touch_device_poll("dc-1", now + S, now + 2 * S, 10) is True
        stored = store.get_device_code("dc-1")
        assert stored is not None
        assert (stored.last_poll_at, stored.interval) == (now + 2 * S, 10)

    def test_redeem_once_and_only_approved(self, store: Store, now: datetime) -> None:
        store.create_device_code(make_device_code(now))
        assert store.redeem_device_code("dc-1", now) is False  # still pending
        store.decide_device_code("uc-dc-1", "approved", "sid-1", now)
        assert store.redeem_device_code("dc-1", now) is True
        assert store.redeem_device_code("dc-1", now) is False
        stored = store.get_device_code("dc-1")
        assert stored is not None and stored.status == "used"

    def test_race_redeem_one_winner(self, store: Store, now: datetime) -> None:
        self.require_concurrency()
        store.create_device_code(make_device_code(now, status="approved", sid="sid-1"))
        wins = race(8, lambda i: store.redeem_device_code("dc-1", now))
        assert wins.count(True) == 1

    def test_race_touch_one_winner(self, store: Store, now: datetime) -> None:
        self.require_concurrency()
        store.create_device_code(make_device_code(now))
        wins = race(8, lambda i: store.touch_device_poll("dc-1", None, now + S, 5))
        assert wins.count(True) == 1

    def test_race_decide_one_winner(self, store: Store, now: datetime) -> None:
        self.require_concurrency()
        store.create_device_code(make_device_code(now))
        wins = race(
            8,
            lambda i: store.decide_device_code(
                "uc-dc-1", "approved" if i % 2 else "denied", f"sid-{i}", now
            ),
        )
        assert wins.count(True) == 1

    def test_gc_purges_app_sessions_and_device_codes(self, store: Store, now: datetime) -> None:
        store.create_app_session(make_app_session(now, "live-a", purge_at=now + H))
        store.create_app_session(make_app_session(now, "dead-a", purge_at=now + S))
        store.create_device_code(make_device_code(now, "live-d", purge_at=now + H))
        store.create_device_code(make_device_code(now, "dead-d", purge_at=now + S))
        assert store.gc(now + S) == 2
        assert store.get_app_session("live-a") is not None
        assert store.get_app_session("dead-a") is None
        assert store.get_device_code("live-d") is not None
        assert store.get_device_code("dead-d") is None


def make_permission_check(
    now: datetime, sid: str = "sid-1", user_id: int = 106, **kw: Any
) -> PermissionCheckRecord:
    fields: dict[str, Any] = {
        "sid": sid,
        "user_id": user_id,
        "login": "frank",
        "permission_group": "Admin",
        "checked_at": now,
        "expires_at": now + 15 * 60 * S,
    }
    fields.update(kw)
    return PermissionCheckRecord(**fields)


class PermissionCheckConformance(ConformanceBase):
    """`PermissionCheckStore`: the admin page's remembered permission-group answers."""

    def test_round_trip_and_replace(self, store: Store, now: datetime) -> None:
        assert store.get_permission_check("sid-1", now) is None
        first = make_permission_check(now)
        store.put_permission_check(first)
        assert store.get_permission_check("sid-1", now) == first
        later = make_permission_check(now + S, permission_group=None, expires_at=now + H)
        store.put_permission_check(later)
        assert store.get_permission_check("sid-1", now + S) == later
        assert store.get_permission_check("sid-2", now) is None

    def test_an_expired_answer_reads_as_none(self, store: Store, now: datetime) -> None:
        store.put_permission_check(make_permission_check(now, expires_at=now + S))
        assert store.get_permission_check("sid-1", now + S - MS) is not None
        assert store.get_permission_check("sid-1", now + S) is None

    def test_sessions_are_kept_apart(self, store: Store, now: datetime) -> None:
        store.put_permission_check(make_permission_check(now, "sid-1"))
        other = make_permission_check(now, "sid-2", 101, login="alice", permission_group="Artist")
        store.put_permission_check(other)
        assert store.get_permission_check("sid-1", now) == make_permission_check(now, "sid-1")
        assert store.get_permission_check("sid-2", now) == other

    def test_gc_removes_expired_answers(self, store: Store, now: datetime) -> None:
        store.put_permission_check(make_permission_check(now, "live", expires_at=now + H))
        store.put_permission_check(make_permission_check(now, "dead", expires_at=now + S))
        assert store.gc(now + S) == 1
        assert store.get_permission_check("live", now + S) is not None
        assert store.get_permission_check("dead", now) is None


class RevocationConformance(ConformanceBase):
    """Issue 15's concerns: revocation entries made by the very step that revokes, the
    back-channel logout outbox (written with the session's end, claimed under a lease),
    sessions by user, and watermarks. The same contract whether a backend keeps entries
    in a table of their own (SQLite) or derives them from the revoked documents (MongoDB).
    """

    @staticmethod
    def entries(store: Store, at: datetime) -> set[tuple[str, str, datetime, datetime]]:
        return {
            (e.kind.value, e.value, e.created_at, e.expires_at) for e in store.live_revocations(at)
        }

    def test_session_end_makes_one_sid_entry_and_its_notices(
        self, store: Store, now: datetime
    ) -> None:
        store.create_session(make_session(now))
        store.create_family(make_family(now, "f1"), make_token(now, "t1", "f1"))
        store.create_family(make_family(now, "f2"), make_token(now, "t2", "f2"))
        notices = [make_notice(now, "n1", client_id="a"), make_notice(now, "n2", client_id="b")]
        assert store.live_revocations(now) == []
        assert store.revoke_session("sid-1", now, "logout", feed_until=now + H, notices=notices)
        # Its families went with it, under the session's entry (no fam entries of their own).
        assert self.entries(store, now) == {("sid", "sid-1", now, now + H)}
        assert [n.notice_id for n in store.pending_logout_notices()] == ["n1", "n2"]
        assert store.pending_logout_notices()[0] == notices[0]
        # Revoked again: nothing written, nobody notified twice.
        again = [make_notice(now, "n3")]
        assert not store.revoke_session(
            "sid-1", now + S, "admin", feed_until=now + 2 * H, notices=again
        )
        assert self.entries(store, now) == {("sid", "sid-1", now, now + H)}
        assert [n.notice_id for n in store.pending_logout_notices()] == ["n1", "n2"]
        assert not store.revoke_session("nope", now, "x", feed_until=now + H, notices=again)
        assert len(store.pending_logout_notices()) == 2
        assert store.revoke_family("f1", now, "reuse", feed_until=now + H) is False
        assert self.entries(store, now) == {("sid", "sid-1", now, now + H)}

    def test_family_and_jti_entries(self, store: Store, now: datetime) -> None:
        store.create_session(make_session(now))
        store.create_family(make_family(now, "f1"), make_token(now, "t1", "f1"))
        assert store.revoke_family("f1", now + S, "reuse", feed_until=now + H)
        assert not store.revoke_family("f1", now + 2 * S, "revoked", feed_until=now + 2 * H)
        store.deny_access_token("j1", now + 10 * S, at=now + 3 * S)
        store.deny_access_token("j1", now + 20 * S, at=now + 4 * S)  # later expiry wins
        store.deny_access_token("j1", now + 5 * S, at=now + 5 * S)  # never shortens
        assert store.revoke_session("sid-1", now + 6 * S, "logout", feed_until=now + 2 * H)
        live = store.live_revocations(now + 6 * S)
        assert [(e.kind.value, e.value) for e in live] == [
            ("fam", "f1"),
            ("jti", "j1"),
            ("sid", "sid-1"),
        ]  # by creation
        assert live[0] == RevocationEntry(RevocationKind.FAMILY, "f1", now + S, now + H)
        assert live[1] == RevocationEntry(
            RevocationKind.ACCESS_TOKEN, "j1", now + 3 * S, now + 20 * S
        )

    def test_expired_entries_are_not_live_and_gc_removes_them(
        self, store: Store, now: datetime
    ) -> None:
        # A session revoked just before its own end: its entry outlives it (tokens issued
        # from it are still valid after the session expires), through gc too.
        store.create_session(make_session(now, sid="short", expires_at=now + S))
        store.create_family(
            make_family(now, "fs", sid="short", expires_at=now + S),
            make_token(now, "ts", "fs", expires_at=now + S),
        )
        store.create_session(make_session(now, sid="long"))
        store.create_family(make_family(now, "fl", sid="long"), make_token(now, "tl", "fl"))
        assert store.revoke_family("fs", now, "reuse", feed_until=now + 10 * S)
        assert store.revoke_session("short", now, "logout", feed_until=now + 10 * S)
        assert store.revoke_family("fl", now, "reuse", feed_until=now + 20 * S)
        store.deny_access_token("j", now + 5 * S, at=now)
        store.gc(now + 2 * S)
        assert {(k, v) for k, v, _, _ in self.entries(store, now + 2 * S)} == {
            ("sid", "short"),
            ("fam", "fs"),
            ("fam", "fl"),
            ("jti", "j"),
        }
        assert {(k, v) for k, v, _, _ in self.entries(store, now + 5 * S)} == {
            ("sid", "short"),
            ("fam", "fs"),
            ("fam", "fl"),
        }
        assert {(k, v) for k, v, _, _ in self.entries(store, now + 10 * S)} == {("fam", "fl")}
        store.gc(now + 20 * S)
        assert store.live_revocations(now + 20 * S) == []
        assert store.get_session("short") is None and store.get_family("fs") is None
        assert {(k, v) for k, v, _, _ in self.entries(store, now)} <= {("fam", "fl")}

    def test_outbox_lease_retry_and_finish(self, store: Store, now: datetime) -> None:
        store.create_session(make_session(now))
        notices = [make_notice(now, f"n{i}", due_at=now + i * S) for i in range(3)]
        assert store.revoke_session("sid-1", now, "logout", feed_until=now + H, notices=notices)
        lease = 10 * S
        assert store.claim_logout_notices(now, "A", lease, 10) == [
            dataclasses.replace(notices[0], lease_owner="A", lease_until=now + lease)
        ]  # only what is due
        (n1,) = store.claim_logout_notices(now + 2 * S, "B", lease, 1)  # limit kept
        (n2,) = store.claim_logout_notices(now + 3 * S, "B", lease, 9)  # n0, n1 are leased
        assert (n1.notice_id, n2.notice_id) == ("n1", "n2")
        # A's lease passes: B takes n0 over; A can no longer finish or retry it.
        (taken,) = store.claim_logout_notices(now + 11 * S, "B", lease, 9)
        assert taken.notice_id == "n0" and taken.lease_owner == "B"
        stale = dataclasses.replace(notices[0], lease_owner="A")
        assert store.finish_logout_notice(stale) is False
        assert store.retry_logout_notice(stale, now + H, "late") is False
        # B fails it once: due again later, attempts counted, error kept, lease released.
        assert store.retry_logout_notice(taken, now + 30 * S, "HTTP 503") is True
        assert store.retry_logout_notice(taken, now + 40 * S, "again") is False  # not leased
        assert store.claim_logout_notices(now + 11 * S, "C", lease, 9) == []  # not yet due
        (retried,) = [n for n in store.pending_logout_notices() if n.notice_id == "n0"]
        assert (retried.attempts, retried.due_at, retried.last_error) == (
            1,
            now + 30 * S,
            "HTTP 503",
        )
        assert retried.lease_owner is None and retried.lease_until is None
        assert store.finish_logout_notice(n1) and store.finish_logout_notice(n2)
        (again,) = store.claim_logout_notices(now + 30 * S, "C", lease, 9)
        assert again.notice_id == "n0" and again.attempts == 1
        assert store.finish_logout_notice(again) is True
        assert store.finish_logout_notice(again) is False
        assert store.pending_logout_notices() == []
        assert store.claim_logout_notices(now + H, "D", lease, 9) == []

    def test_race_claim_each_notice_once(self, store: Store, now: datetime) -> None:
        self.require_concurrency()
        store.create_session(make_session(now))
        notices = [make_notice(now, f"n{i:02}") for i in range(20)]
        assert store.revoke_session("sid-1", now, "logout", feed_until=now + H, notices=notices)
        results = race(8, lambda i: store.claim_logout_notices(now, f"owner-{i}", H, 5))
        ids = [n.notice_id for batch in results for n in batch]
        assert sorted(ids) == [n.notice_id for n in notices]  # each exactly once

    def test_list_user_sessions(self, store: Store, now: datetime) -> None:
        store.create_session(make_session(now, sid="a1", user_id=1))
        store.create_session(make_session(now - S, sid="a0", user_id=1))
        store.create_session(make_session(now, sid="b", user_id=2))
        store.revoke_session("a1", now, "logout", feed_until=now + H)
        assert [s.sid for s in store.list_user_sessions(1)] == ["a0", "a1"]
        assert [s.sid for s in store.list_user_sessions(3)] == []

    def test_session_keeps_its_client(self, store: Store, now: datetime) -> None:
        store.create_session(make_session(now, client_id="dna-cli"))
        stored = store.get_session("sid-1")
        assert stored is not None and stored.client_id == "dna-cli"

    def test_client_backchannel_uri_round_trips(self, store: Store) -> None:
        record = ClientRecord(client_id="rp", backchannel_logout_uri="https://rp.example/bc")
        store.put_client(record)
        assert store.get_client("rp") == record

    def test_watermarks(self, store: Store) -> None:
        assert store.get_watermark("w") is None
        assert store.raise_watermark("w", 5) == 5
        assert store.raise_watermark("w", 3) == 5
        assert store.raise_watermark("w", 9) == 9
        assert store.get_watermark("w") == 9 and store.get_watermark("other") is None

    def test_race_watermark_keeps_the_highest(self, store: Store) -> None:
        self.require_concurrency()
        race(10, lambda i: store.raise_watermark("w", i))
        assert store.get_watermark("w") == 9


class StoreConformance(
    CounterConformance,
    SessionAdminConformance,
    AuditConformance,
    AppSessionConformance,
    DeviceCodeConformance,
    PermissionCheckConformance,
    RevocationConformance,
):
    """Every concern: subclass and override `store` to yield a fresh, empty store."""

    def setup_rotation(self, store: Store, now: datetime) -> RefreshTokenRecord:
        store.create_session(make_session(now))
        first = make_token(now, "rt-0")
        store.create_family(make_family(now), first)
        return first

    # --- lifecycle ---------------------------------------------------------------------------
    def test_ping(self, store: Store) -> None:
        store.ping()

    # --- clients -----------------------------------------------------------------------------
    def test_clients_crud_and_order(self, store: Store) -> None:
        full = ClientRecord(
            client_id="b-confidential",
            name="B",
            public=False,
            secret_hash="$hash$",
            grant_types=("authorization_code", "refresh_token"),
            redirect_uris=("https://b.example/cb",),
            post_logout_redirect_uris=("https://b.example/",),
            allowed_origins=("https://b2.example",),
            scopes=("openid",),
            audiences=("svc-a", "svc-b"),
            may_introspect=True,
            may_exchange_shotgrid=True,
            max_exchange_lifetime=600,
        )
        store.put_client(full)
        store.put_client(ClientRecord(client_id="a-public"))
        store.put_client(ClientRecord(client_id="c"))
        assert store.get_client("b-confidential") == full
        assert store.get_client("missing") is None
        assert [c.client_id for c in store.list_clients()] == ["a-public", "b-confidential", "c"]
        replaced = dataclasses.replace(full, name="B2", redirect_uris=())
        store.put_client(replaced)
        assert store.get_client("b-confidential") == replaced
        assert store.delete_client("c") is True
        assert store.delete_client("c") is False
        assert [c.client_id for c in store.list_clients()] == ["a-public", "b-confidential"]

    # --- sessions ----------------------------------------------------------------------------
    def test_sessions(self, store: Store, now: datetime) -> None:
        session = make_session(now, cookie_hash="cookie-h")
        store.create_session(session)
        store.create_session(make_session(now, sid="sid-2"))
        assert store.get_session("sid-1") == session
        assert store.get_session("sid-1").auth_method == "password"  # type: ignore[union-attr]
        device = make_session(
            now,
            sid="sid-3",
            auth_method="device",
            client_ip="10.0.0.9",
            user_agent="token-broker-login/1",
            upstream_sid="sid-1",
        )
        store.create_session(device)
        assert store.get_session("sid-3") == device
        assert store.get_session("nope") is None
        assert store.get_session_by_cookie("cookie-h") == session
        assert store.get_session_by_cookie("other") is None
        with pytest.raises(AlreadyExists):
            store.create_session(make_session(now))

    def test_mark_session_checked_keeps_max(self, store: Store, now: datetime) -> None:
        store.create_session(make_session(now))
        store.mark_session_checked("sid-1", now + 10 * S)
        store.mark_session_checked("sid-1", now + 5 * S)
        session = store.get_session("sid-1")
        assert session is not None and session.last_checked_at == now + 10 * S
        store.mark_session_checked("unknown", now)  # no error

    def test_revoke_session_revokes_all_families(self, store: Store, now: datetime) -> None:
        store.create_session(make_session(now))
        store.create_session(make_session(now, sid="other"))
        store.create_family(make_family(now, "f1"), make_token(now, "t1", "f1"))
        store.create_family(make_family(now, "f2"), make_token(now, "t2", "f2"))
        earlier = now - 5 * S
        store.create_family(make_family(now, "f3"), make_token(now, "t3", "f3"))
        assert store.revoke_family("f3", earlier, "logout", feed_until=earlier + H)
        store.create_family(make_family(now, "g1", sid="other"), make_token(now, "u1", "g1"))

        assert store.revoke_session("sid-1", now, "admin", feed_until=now + H) is True
        assert store.revoke_session("sid-1", now + S, "admin", feed_until=now + S + H) is False
        assert store.revoke_session("unknown", now, "admin", feed_until=now + H) is False
        session = store.get_session("sid-1")
        assert session is not None and session.revoked and session.revoked_at == now
        families = {f.family_id: f for f in store.list_families("sid-1")}
        assert set(families) == {"f1", "f2", "f3"}
        assert families["f1"].revoked_at == now and families["f1"].revoked_reason == "admin"
        assert families["f2"].revoked_at == now
        assert families["f3"].revoked_at == earlier and families["f3"].revoked_reason == "logout"
        other = store.get_family("g1")
        assert other is not None and not other.revoked
        rotated = rotate(store, "t1", make_token(now, "t1b", "f1"), now, GRACE)
        assert rotated.status is RotationStatus.INVALID

    # --- families ----------------------------------------------------------------------------
    def test_create_family_and_first_token(self, store: Store, now: datetime) -> None:
        store.create_session(make_session(now))
        family = make_family(now, code_hash="code-h")
        first = make_token(now, "rt-0")
        store.create_family(family, first)
        assert store.get_family("fam-1") == family
        assert store.get_refresh_token("rt-0") == first
        assert store.get_family("nope") is None
        assert store.get_refresh_token("nope") is None
        assert store.list_families("sid-1") == [family]
        assert store.list_families("nobody") == []
        with pytest.raises(AlreadyExists):
            store.create_family(family, make_token(now, "rt-x"))
        assert store.get_refresh_token("rt-x") is None
        assert store.revoke_family("fam-1", now, "logout", feed_until=now + H) is True
        assert store.revoke_family("fam-1", now, "logout", feed_until=now + H) is False
        assert store.revoke_family("nope", now, "logout", feed_until=now + H) is False
        revoked = store.get_family("fam-1")
        assert revoked is not None and revoked.revoked_reason == "logout"

    def test_refresh_chain_reads_token_family_and_session(
        self, store: Store, now: datetime
    ) -> None:
        session = make_session(now, email="a@example.com", cookie_hash="c-h")
        store.create_session(session)
        family = make_family(now, code_hash="code-h")
        first = make_token(now, "rt-0")
        store.create_family(family, first)
        rotate(store, "rt-0", make_token(now, "rt-1"), now + S, GRACE)
        store.revoke_family("fam-1", now + 2 * S, "logout", feed_until=now + 2 * S + H)
        chain = store.get_refresh_chain("rt-0")
        assert chain is not None
        # As stored, not judged: used and revoked records come back as they are.
        assert chain.token == store.get_refresh_token("rt-0")
        assert chain.token.used_at == now + S and chain.token.successor_jti == "rt-1"
        assert chain.family == store.get_family("fam-1")
        assert chain.family.revoked_reason == "logout"
        assert chain.session == store.get_session("sid-1") == session
        assert store.get_refresh_chain("rt-1") == (
            store.get_refresh_token("rt-1"),
            chain.family,
            session,
        )
        assert store.get_refresh_chain("nope") is None

    def test_refresh_chain_is_none_without_its_session(self, store: Store, now: datetime) -> None:
        # A family whose session is gone (deleted by GC) names no usable chain.
        store.create_family(make_family(now, sid="gone"), make_token(now, "rt-0"))
        assert store.get_refresh_token("rt-0") is not None
        assert store.get_refresh_chain("rt-0") is None

    # --- rotation ----------------------------------------------------------------------------
    def test_rotate_rotated(self, store: Store, now: datetime) -> None:
        self.setup_rotation(store, now)
        successor = make_token(now + S, "rt-1")
        result = rotate(store, "rt-0", successor, now + S, GRACE)
        assert result.status is RotationStatus.ROTATED
        assert result.successor == successor
        assert result.family == store.get_family("fam-1")
        parent = store.get_refresh_token("rt-0")
        assert parent is not None
        assert parent.used_at == now + S and parent.successor_jti == "rt-1"
        assert store.get_refresh_token("rt-1") == successor

    def test_rotate_grace_returns_the_same_successor(self, store: Store, now: datetime) -> None:
        self.setup_rotation(store, now)
        first = rotate(store, "rt-0", make_token(now, "rt-1"), now, GRACE)
        again = rotate(store, "rt-0", make_token(now, "rt-2"), now + GRACE, GRACE)
        assert again.status is RotationStatus.GRACE
        assert again.successor == first.successor
        assert again.family == first.family
        assert store.get_refresh_token("rt-2") is None
        family = store.get_family("fam-1")
        assert family is not None and not family.revoked

    def test_rotate_past_grace_is_reuse(self, store: Store, now: datetime) -> None:
        self.setup_rotation(store, now)
        rotate(store, "rt-0", make_token(now, "rt-1"), now, GRACE)
        later = now + GRACE + timedelta(milliseconds=1)
        result = rotate(store, "rt-0", make_token(later, "rt-2"), later, GRACE)
        assert result.status is RotationStatus.REUSED
        assert result.family is not None
        assert result.family.revoked_at == later and result.family.revoked_reason == "reuse"
        assert store.get_family("fam-1") == result.family
        assert store.get_refresh_token("rt-2") is None
        # The successor dies with its family.
        after = rotate(store, "rt-1", make_token(later, "rt-3"), later, GRACE)
        assert after.status is RotationStatus.INVALID

    def test_rotate_successor_used_is_reuse(self, store: Store, now: datetime) -> None:
        self.setup_rotation(store, now)
        rotate(store, "rt-0", make_token(now, "rt-1"), now, GRACE)
        step = rotate(store, "rt-1", make_token(now, "rt-2"), now + S, GRACE)
        assert step.status is RotationStatus.ROTATED
        result = rotate(store, "rt-0", make_token(now, "rt-x"), now + 2 * S, GRACE)
        assert result.status is RotationStatus.REUSED
        family = store.get_family("fam-1")
        assert family is not None and family.revoked_reason == "reuse"
        tail = rotate(store, "rt-2", make_token(now, "rt-3"), now + 3 * S, GRACE)
        assert tail.status is RotationStatus.INVALID

    @pytest.mark.parametrize(
        "case",
        [
            "unknown",
            "parent_expired",
            "family_revoked",
            "family_expired",
            "session_revoked",
            "session_expired",
        ],
    )
    def test_rotate_invalid(self, store: Store, now: datetime, case: str) -> None:
        store.create_session(make_session(now, expires_at=now + H))
        store.create_family(
            make_family(now, expires_at=now + 2 * H),
            make_token(now, "rt-0", expires_at=now + 3 * H),
        )
        at = now + S
        jti = "rt-0"
        if case == "unknown":
            jti = "nope"
        elif case == "parent_expired":
            store.create_family(
                make_family(now, "fam-2"), make_token(now, "rt-short", "fam-2", expires_at=at)
            )
            jti = "rt-short"
        elif case == "family_revoked":
            store.revoke_family("fam-1", now, "logout", feed_until=now + H)
        elif case == "family_expired":
            store.create_session(make_session(now, sid="long", expires_at=now + 9 * H))
            store.create_family(
                make_family(now, "fam-2", sid="long", expires_at=now + 2 * H),
                make_token(now, "rt-2", "fam-2", expires_at=now + 3 * H),
            )
            jti, at = "rt-2", now + 2 * H
        elif case == "session_revoked":
            store.revoke_session("sid-1", now, "admin", feed_until=now + H)
        elif case == "session_expired":
            at = now + H
        before = store.get_refresh_token(jti)
        family_before = store.get_family("fam-1")
        result = rotate(store, jti, make_token(at, "rt-new"), at, GRACE)
        assert result.status is RotationStatus.INVALID
        assert store.get_refresh_token("rt-new") is None
        assert store.get_refresh_token(jti) == before
        assert store.get_family("fam-1") == family_before

    def test_race_rotation_one_winner(self, store: Store, now: datetime) -> None:
        """20 threads rotate one parent: one ROTATED, 19 GRACE with the same successor.
        Ten rounds down the chain, to give a broken CAS many chances to show."""
        self.require_concurrency()
        self.setup_rotation(store, now)
        parent_jti = "rt-0"
        for rnd in range(10):
            at = now + rnd * S
            results = race(
                20,
                lambda i, p=parent_jti, at=at, rnd=rnd: rotate(
                    store, p, make_token(at, f"s{rnd}-{i}"), at, GRACE
                ),
            )
            statuses = [r.status for r in results]
            assert statuses.count(RotationStatus.ROTATED) == 1, statuses
            assert statuses.count(RotationStatus.GRACE) == 19, statuses
            winner = next(r for r in results if r.status is RotationStatus.ROTATED)
            assert winner.successor is not None
            assert all(r.successor == winner.successor for r in results)
            parent = store.get_refresh_token(parent_jti)
            assert parent is not None and parent.successor_jti == winner.successor.jti
            losers = [f"s{rnd}-{i}" for i in range(20) if f"s{rnd}-{i}" != winner.successor.jti]
            assert all(store.get_refresh_token(j) is None for j in losers)
            parent_jti = winner.successor.jti

    # --- keys ------------------------------------------------------------------------------
    def test_keys_list_promote_retire_drop(self, store: Store, now: datetime) -> None:
        cur = make_key(now, "k-b", KeyState.CURRENT, activated_at=now)
        nxt = make_key(now, "k-a", KeyState.NEXT)
        older = make_key(now - H, "k-z", KeyState.RETIRED, retired_at=now, drop_after=now + H)
        for key in (cur, nxt, older):
            store.add_key(key)
        with pytest.raises(AlreadyExists):
            store.add_key(cur)
        assert [k.kid for k in store.list_keys()] == ["k-z", "k-a", "k-b"]
        assert store.list_keys()[2] == cur

        at = now + H
        new_next = make_key(at, "k-c", KeyState.NEXT)
        assert store.promote_key_if("k-a", current="k-b", new_next=new_next, at=at) is True
        keys = {k.kid: k for k in store.list_keys()}
        assert keys["k-b"].state is KeyState.RETIRED and keys["k-b"].retired_at == at
        assert keys["k-a"].state is KeyState.CURRENT and keys["k-a"].activated_at == at
        assert keys["k-c"] == new_next
        # Stale expectations write nothing.
        assert (
            store.promote_key_if(
                "k-c", current="k-b", new_next=make_key(at, "k-d", KeyState.NEXT), at=at
            )
            is False
        )
        assert (
            store.promote_key_if(
                "k-c", current=None, new_next=make_key(at, "k-d", KeyState.NEXT), at=at
            )
            is False
        )
        assert (
            store.promote_key_if(
                "k-b", current="k-a", new_next=make_key(at, "k-d", KeyState.NEXT), at=at
            )
            is False
        )
        assert "k-d" not in {k.kid for k in store.list_keys()}

        assert store.retire_key("k-a", at, at + H) is True
        assert store.retire_key("nope", at, at + H) is False
        store.set_drop_after("k-b", at + 2 * H)
        keys = {k.kid: k for k in store.list_keys()}
        assert keys["k-a"].state is KeyState.RETIRED and keys["k-a"].drop_after == at + H
        assert keys["k-b"].drop_after == at + 2 * H
        # With no current key left, None is the right expectation.
        assert (
            store.promote_key_if(
                "k-c", current=None, new_next=make_key(at, "k-e", KeyState.NEXT), at=at
            )
            is True
        )
        assert store.gc(at + H) == 2  # k-z and k-a are past drop_after
        assert sorted(k.kid for k in store.list_keys()) == ["k-b", "k-c", "k-e"]

    def test_promote_is_scoped_to_the_key_use(self, store: Store, now: datetime) -> None:
        store.add_key(make_key(now, "rt-cur", KeyState.CURRENT, use="rt", alg="HS256"))
        store.add_key(make_key(now, "sig-next", KeyState.NEXT))
        assert store.promote_key_if(
            "sig-next", current=None, new_next=make_key(now, "sig-n2", KeyState.NEXT), at=now
        )
        assert not store.promote_key_if(
            "sig-n2", current="rt-cur", new_next=make_key(now, "sig-n3", KeyState.NEXT), at=now
        )

    def test_race_promote_one_winner(self, store: Store, now: datetime) -> None:
        self.require_concurrency()
        store.add_key(make_key(now, "cur", KeyState.CURRENT))
        store.add_key(make_key(now, "nxt", KeyState.NEXT))
        current, upcoming = "cur", "nxt"
        for rnd in range(5):
            results = race(
                8,
                lambda i, c=current, n=upcoming, rnd=rnd: store.promote_key_if(
                    n, current=c, new_next=make_key(now, f"n{rnd}-{i}", KeyState.NEXT), at=now
                ),
            )
            assert results.count(True) == 1, results
            winner = f"n{rnd}-{results.index(True)}"
            states = {k.kid: k.state for k in store.list_keys()}
            assert states[current] is KeyState.RETIRED
            assert states[upcoming] is KeyState.CURRENT
            assert states[winner] is KeyState.NEXT
            assert sum(s is KeyState.CURRENT for s in states.values()) == 1
            assert sum(s is KeyState.NEXT for s in states.values()) == 1
            current, upcoming = upcoming, winner

    def test_bootstrap_keys(self, store: Store, now: datetime) -> None:
        first = [
            make_key(now, "s1", KeyState.CURRENT),
            make_key(now, "s2", KeyState.NEXT),
            make_key(now, "r1", KeyState.CURRENT, use="rt", alg="HS256"),
        ]
        assert store.bootstrap_keys(first) == sorted(first, key=lambda k: (k.created_at, k.kid))
        second = [
            make_key(now, "s9", KeyState.CURRENT),
            make_key(now, "r9", KeyState.CURRENT, use="rt"),
        ]
        assert sorted(k.kid for k in store.bootstrap_keys(second)) == ["r1", "s1", "s2"]

    def test_bootstrap_keys_adds_a_missing_use(self, store: Store, now: datetime) -> None:
        store.add_key(make_key(now, "s1", KeyState.CURRENT))
        keys = store.bootstrap_keys(
            [make_key(now, "s9", KeyState.CURRENT), make_key(now, "r1", KeyState.CURRENT, use="rt")]
        )
        assert sorted(k.kid for k in keys) == ["r1", "s1"]

    def test_race_bootstrap_one_key_set(self, store: Store, now: datetime) -> None:
        self.require_concurrency()

        def boot(i: int) -> list[str]:
            keys = [
                make_key(now, f"c-{i}", KeyState.CURRENT),
                make_key(now, f"n-{i}", KeyState.NEXT),
            ]
            return sorted(k.kid for k in store.bootstrap_keys(keys))

        results = race(8, boot)
        assert len(results[0]) == 2
        assert all(r == results[0] for r in results)
        assert sorted(k.kid for k in store.list_keys()) == results[0]

    # --- upstream custody --------------------------------------------------------------------
    def test_upstream_tokens(self, store: Store, now: datetime) -> None:
        record = make_upstream(now)
        assert store.get_upstream_tokens(record.key) is None
        store.put_upstream_tokens(record)
        assert store.get_upstream_tokens(record.key) == record
        swapped = dataclasses.replace(
            record, access_token=b"\x03new", version=2, refresh_token=None
        )
        assert store.swap_upstream_tokens(1, swapped) is True
        assert store.get_upstream_tokens(record.key) == swapped
        stale = dataclasses.replace(record, access_token=b"stale", version=2)
        assert store.swap_upstream_tokens(1, stale) is False
        assert store.get_upstream_tokens(record.key) == swapped
        assert (
            store.swap_upstream_tokens(1, dataclasses.replace(record, key="absent", version=2))
            is False
        )
        with pytest.raises(ValueError):
            store.swap_upstream_tokens(2, dataclasses.replace(record, version=2))
        fresh = make_upstream(now, access_token=b"fresh")
        store.put_upstream_tokens(fresh)
        assert store.get_upstream_tokens(record.key) == fresh
        store.delete_upstream_tokens(record.key)
        assert store.get_upstream_tokens(record.key) is None
        store.delete_upstream_tokens(record.key)

    def test_race_swap_upstream_one_winner(self, store: Store, now: datetime) -> None:
        self.require_concurrency()
        record = make_upstream(now, version=5)
        store.put_upstream_tokens(record)
        for version in range(5, 10):
            results = race(
                10,
                lambda i, v=version: store.swap_upstream_tokens(
                    v, dataclasses.replace(record, access_token=f"{v}-{i}".encode(), version=v + 1)
                ),
            )
            assert results.count(True) == 1, results
            stored = store.get_upstream_tokens(record.key)
            assert stored is not None and stored.version == version + 1
            assert stored.access_token == f"{version}-{results.index(True)}".encode()

    def test_leases(self, store: Store, now: datetime) -> None:
        ttl = 30 * S
        assert store.try_lease("refresh:x", "A", now, ttl) is True
        assert store.try_lease("refresh:x", "B", now + S, ttl) is False
        assert store.try_lease("refresh:x", "A", now + 2 * S, ttl) is True  # re-entrant, extends
        assert store.try_lease("refresh:x", "B", now + ttl + S, ttl) is False
        assert store.try_lease("refresh:x", "B", now + 2 * S + ttl, ttl) is True  # expired
        assert store.try_lease("refresh:x", "A", now + 2 * S + ttl, ttl) is False
        store.release_lease("refresh:x", "A")  # not the owner: no effect
        assert store.try_lease("refresh:x", "A", now + 3 * S + ttl, ttl) is False
        store.release_lease("refresh:x", "B")
        assert store.try_lease("refresh:x", "A", now + 3 * S + ttl, ttl) is True
        assert store.try_lease("other", "B", now, ttl) is True

    def test_race_lease_one_owner(self, store: Store, now: datetime) -> None:
        self.require_concurrency()
        for rnd in range(5):
            name = f"job-{rnd}"
            store.try_lease(name, "old", now - H, 30 * S)  # an expired lease to take over
            results = race(10, lambda i, name=name: store.try_lease(name, f"o-{i}", now, 30 * S))
            assert results.count(True) == 1, results

    def test_codes(self, store: Store, now: datetime) -> None:
        store.create_session(make_session(now))
        code = make_code(now)
        store.create_code(code)
        record, first = store.redeem_code(
            "code-1", now + S, family_starter("fam-9", "rt-9"), feed_until=now + H
        )
        assert first is True
        assert record == dataclasses.replace(code, used_at=now + S, family_id="fam-9")
        # The family and its first token were stored in the same step.
        family = store.get_family("fam-9")
        assert family is not None and family.code_hash == "code-1" and family.sid == "sid-1"
        assert store.get_refresh_token("rt-9") is not None
        replay, again = store.redeem_code(
            "code-1", now + 2 * S, family_starter("fam-x", "rt-x"), feed_until=now + H
        )
        assert again is False and replay is not None
        assert replay.family_id == "fam-9" and replay.used_at == now + S
        assert replay.replayed_at == now + 2 * S
        assert store.get_family("fam-x") is None and store.get_refresh_token("rt-x") is None
        replay, _ = store.redeem_code(
            "code-1", now + 3 * S, family_starter("fam-y", "rt-y"), feed_until=now + H
        )
        assert replay is not None and replay.replayed_at == now + 2 * S  # the first replay's
        assert store.redeem_code("nope", now, family_starter("f", "t"), feed_until=now + H) == (
            None,
            False,
        )
        # Expired: unknown to the caller, used or not.
        assert store.redeem_code(
            "code-1", code.expires_at, family_starter("f", "t"), feed_until=now + H
        ) == (
            None,
            False,
        )
        store.create_code(make_code(now, "code-2", nonce=None, code_challenge=None, extra={}))
        assert store.redeem_code(
            "code-2", now + 60 * S, family_starter("f2", "t2"), feed_until=now + H
        ) == (
            None,
            False,
        )
        assert store.get_family("f2") is None
        fresh, ok = store.redeem_code(
            "code-2", now + 59 * S, family_starter("f2", "t2"), feed_until=now + H
        )
        assert ok and fresh is not None and fresh.nonce is None and fresh.extra == {}

    def test_race_redeem_code_once(self, store: Store, now: datetime) -> None:
        """Ten concurrent redemptions: one first use, and every replay names the family
        that first use stored (so its caller can always revoke it)."""
        self.require_concurrency()
        store.create_session(make_session(now))
        for rnd in range(5):
            store.create_code(make_code(now, f"code-{rnd}"))
            results = race(
                10,
                lambda i, rnd=rnd: store.redeem_code(
                    f"code-{rnd}",
                    now + i * timedelta(milliseconds=1),
                    family_starter(f"f{rnd}-{i}", f"t{rnd}-{i}"),
                    feed_until=now + H,
                ),
            )
            assert [ok for _, ok in results].count(True) == 1, results
            assert all(record is not None for record, _ in results)
            winner = next(record for record, ok in results if ok)
            assert winner is not None and winner.family_id is not None
            assert store.get_family(winner.family_id) is not None
            assert all(r is not None and r.family_id == winner.family_id for r, _ in results)
            losers = {f"f{rnd}-{i}" for i in range(10)} - {winner.family_id}
            assert all(store.get_family(f) is None for f in losers)

    # --- refresh claims (the primitive under rotation) ---------------------------------------
    def test_claim_refresh(self, store: Store, now: datetime) -> None:
        self.setup_rotation(store, now)
        successor = make_token(now, "rt-1")
        assert store.claim_refresh("rt-0", successor, now + S) == Claimed()
        assert store.get_refresh_token("rt-1") == successor
        parent = store.get_refresh_token("rt-0")
        assert parent is not None and parent.used_at == now + S
        again = store.claim_refresh("rt-0", make_token(now, "rt-2"), now + 2 * S)
        assert again == AlreadyClaimed(now + S, successor)
        assert store.get_refresh_token("rt-2") is None
        with pytest.raises(ValueError):
            store.claim_refresh("nope", make_token(now, "rt-3"), now)

    def test_race_claim_one_winner(self, store: Store, now: datetime) -> None:
        self.require_concurrency()
        self.setup_rotation(store, now)
        results = race(
            20, lambda i: store.claim_refresh("rt-0", make_token(now, f"c-{i}"), now + S)
        )
        assert results.count(Claimed()) == 1, results
        winner = f"c-{results.index(Claimed())}"
        stored = store.get_refresh_token(winner)
        assert stored is not None
        assert all(r == AlreadyClaimed(now + S, stored) for r in results if r != Claimed())

    # --- denylist ----------------------------------------------------------------------------
    def test_denylist(self, store: Store, now: datetime) -> None:
        store.deny_access_token("at-1", now + H, at=now)
        assert store.is_access_token_denied("at-1", now) is True
        assert store.is_access_token_denied("at-1", now + H) is False
        assert store.is_access_token_denied("at-2", now) is False
        store.deny_access_token("at-1", now + 2 * H, at=now)
        store.deny_access_token("at-1", now + S, at=now)  # never shortens
        assert store.is_access_token_denied("at-1", now + H) is True

    # --- gc ----------------------------------------------------------------------------------
    def test_gc_removes_only_expired(self, store: Store, now: datetime) -> None:
        later = now + 2 * H
        # Live everything.
        store.put_client(ClientRecord(client_id="cli"))
        store.create_session(make_session(now, sid="live", expires_at=later + H))
        store.create_family(
            make_family(now, "live-f", sid="live", expires_at=later + H),
            make_token(now, "live-t", "live-f", expires_at=later + H),
        )
        store.create_code(make_code(now, "live-c", expires_at=later + S))
        store.reserve("live-n", later, 60 * S, 5)
        store.deny_access_token("live-d", later + S, at=now)
        store.put_upstream_tokens(make_upstream(now, "live-u", refresh_expires_at=later + S))
        store.put_upstream_tokens(
            make_upstream(now, "live-u2", expires_at=now, refresh_expires_at=None)
        )  # refresh token of unknown lifetime: kept
        store.add_key(make_key(now, "live-k", KeyState.CURRENT))
        store.add_key(make_key(now, "live-r", KeyState.RETIRED, drop_after=later + S))
        store.try_lease("live-l", "A", later, 30 * S)
        # Expired.
        store.create_session(make_session(now, sid="dead", expires_at=later))
        store.create_family(  # under the dead session: goes with it
            make_family(now, "dead-f1", sid="dead", expires_at=later + H),
            make_token(now, "dead-t1", "dead-f1", expires_at=later + H),
        )
        store.create_family(
            make_family(now, "dead-f2", sid="live", expires_at=later),
            make_token(now, "dead-t2", "dead-f2", expires_at=later + H),
        )
        store.create_family(  # live family, expired idle token
            make_family(now, "live-f3", sid="live", expires_at=later + H),
            make_token(now, "dead-t3", "live-f3", expires_at=later),
        )
        store.create_code(make_code(now, "dead-c", expires_at=later))
        store.reserve("dead-n", later - 60 * S, 60 * S, 5)
        store.deny_access_token("dead-d", later, at=now)
        store.put_upstream_tokens(make_upstream(now, "dead-u", refresh_expires_at=later))
        store.put_upstream_tokens(
            make_upstream(
                now, "dead-u2", refresh_token=None, refresh_expires_at=None, expires_at=later
            )
        )
        store.add_key(make_key(now, "dead-k", KeyState.RETIRED, drop_after=later))
        store.try_lease("dead-l", "A", later - 30 * S, 30 * S)

        assert store.gc(later) == 13
        assert store.gc(later) == 0
        assert store.get_client("cli") is not None
        assert store.get_session("live") is not None and store.get_session("dead") is None
        assert store.get_family("live-f") is not None and store.get_family("live-f3") is not None
        assert store.get_family("dead-f1") is None and store.get_family("dead-f2") is None
        assert store.get_refresh_token("live-t") is not None
        for jti in ("dead-t1", "dead-t2", "dead-t3"):
            assert store.get_refresh_token(jti) is None
        assert (
            store.redeem_code("live-c", later, family_starter("lf", "lt"), feed_until=now + H)[1]
            is True
        )
        assert store.read_counter("live-n", later, 60 * S) == CounterWindow(1, later)
        assert store.reserve("dead-n", later, 60 * S, 1) == CounterWindow(1, later)
        assert store.is_access_token_denied("live-d", later)
        assert store.get_upstream_tokens("live-u") is not None
        assert store.get_upstream_tokens("live-u2") is not None
        assert store.get_upstream_tokens("dead-u") is None
        assert store.get_upstream_tokens("dead-u2") is None
        assert sorted(k.kid for k in store.list_keys()) == ["live-k", "live-r"]
        assert store.try_lease("live-l", "B", later, 30 * S) is False
        assert store.try_lease("dead-l", "B", later, 30 * S) is True

    # --- datetimes ---------------------------------------------------------------------------
    def test_datetimes_round_trip(self, store: Store) -> None:
        odd = datetime(2031, 5, 6, 9, 8, 7, 654321, tzinfo=timezone(timedelta(hours=2)))
        session = make_session(
            odd, sid="tz", auth_time=odd, expires_at=odd + H, last_checked_at=odd
        )
        store.create_session(session)
        stored = store.get_session("tz")
        assert stored is not None
        assert stored.auth_time == ms(odd) == datetime(2031, 5, 6, 7, 8, 7, 654000, tzinfo=UTC)
        assert stored.auth_time.tzinfo is UTC and stored.auth_time.utcoffset() == timedelta(0)
        assert stored.expires_at == ms(odd + H)
        pre_epoch = datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
        store.create_session(
            make_session(pre_epoch, sid="old", expires_at=datetime(2099, 1, 1, tzinfo=UTC))
        )
        old = store.get_session("old")
        assert old is not None and old.auth_time == pre_epoch

    @pytest.mark.parametrize(
        "call",
        [
            lambda s, naive: s.create_session(make_session(naive, sid="naive")),
            lambda s, naive: s.mark_session_checked("x", naive),
            lambda s, naive: s.reserve("x", naive, S, 1),
            lambda s, naive: s.release("x", naive),
            lambda s, naive: s.is_access_token_denied("x", naive),
            lambda s, naive: s.claim_refresh("x", make_token(naive, "y"), naive),
            lambda s, naive: s.redeem_code(
                "x", naive, family_starter("f", "t"), feed_until=datetime(2030, 1, 1, tzinfo=UTC)
            ),
            lambda s, naive: s.gc(naive),
        ],
    )
    def test_naive_datetimes_rejected(
        self, store: Store, call: Callable[[Store, datetime], Any]
    ) -> None:
        with pytest.raises(ValueError, match="naive"):
            call(store, datetime(2030, 1, 1))
        assert store.get_session("naive") is None
