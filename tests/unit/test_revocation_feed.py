"""The revocation feed's rules (`broker.tokens.revocation_feed`), alone and over a real
store: a validator that follows the cursors never misses an entry committed before one of
its reads, even one committed late (its `created_at` taken before a read whose cursor
passed it), and never sees an expired one."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mongomock
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.store import RevocationEntry, RevocationKind, Store
from broker.store.mongo import MongoStore
from broker.store.records import FamilyRecord, RefreshTokenRecord, SessionRecord
from broker.store.sqlite import SQLiteStore
from broker.tokens import revocation_feed as rules

T0 = datetime(2030, 1, 1, tzinfo=UTC)
LIFETIME = timedelta(seconds=660)
MS = timedelta(milliseconds=1)
MAX_COMMIT_DELAY = 20_000  # ms, below rules.OVERLAP (30 s)


def at(ms: int) -> datetime:
    return T0 + ms * MS


def entry(value: str, created: int, lifetime: int, kind: str = "jti") -> RevocationEntry:
    return RevocationEntry(RevocationKind(kind), value, at(created), at(created + lifetime))


# --- the rules one by one -------------------------------------------------------------------


def test_full_when_no_usable_cursor() -> None:
    live = [entry("a", 0, 1000), entry("b", 500, 1000)]
    now = at(600)
    for since in (None, rules.millis(now) + 31_000, rules.millis(now) - 661_000):
        page = rules.select(live, since, now, lifetime=LIFETIME)
        assert page.full and [e.value for e in page.entries] == ["a", "b"]
        assert page.cursor == rules.millis(at(500)) + 1
    empty = rules.select([], None, now, lifetime=LIFETIME)
    assert empty.full and empty.cursor == rules.millis(now)


def test_incremental_looks_back_by_the_overlap_and_keeps_a_stable_cursor() -> None:
    live = [entry("old", 0, 900_000), entry("recent", 40_000, 900_000)]
    now = at(50_000)
    since = rules.millis(at(60_000))  # a cursor slightly ahead (another replica's clock)
    page = rules.select(live, since, now, lifetime=LIFETIME)
    assert not page.full and [e.value for e in page.entries] == ["recent"]
    assert page.cursor == since  # nothing newer than the cursor: it stays


def test_expired_entries_never_appear() -> None:
    live = [entry("gone", 0, 100), entry("kept", 0, 101)]
    page = rules.select(live, None, at(100), lifetime=LIFETIME)
    assert [e.value for e in page.entries] == ["kept"]


@pytest.mark.parametrize(
    ("since", "parsed"),
    [(None, None), ("", None), ("12", 12), ("x1", None), ("-1", None), ("9" * 16, None)],
)
def test_parse_cursor(since: str | None, parsed: int | None) -> None:
    assert rules.parse_cursor(since) == parsed


def test_exp_rounds_up_to_whole_seconds() -> None:
    assert rules.exp_seconds(at(1000)) == rules.exp_seconds(at(0)) + 1
    assert rules.exp_seconds(at(1001)) == rules.exp_seconds(at(0)) + 2


def test_etag_follows_content_not_time() -> None:
    live = [entry("a", 0, 1000)]
    first = rules.select(live, None, at(10), lifetime=LIFETIME)
    later = rules.select(live, None, at(20), lifetime=LIFETIME)
    assert rules.etag(first, "json") == rules.etag(later, "json")
    assert rules.etag(first, "json") != rules.etag(first, "jwt")
    more = rules.select([*live, entry("b", 15, 1000)], None, at(20), lifetime=LIFETIME)
    assert rules.etag(more, "json") != rules.etag(first, "json")


def test_entry_lifetime_covers_the_access_token_lifetime() -> None:
    assert rules.entry_lifetime(600) == timedelta(seconds=600) + rules.ISSUANCE_MARGIN


# --- a validator following the cursor --------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    value: str
    created: int
    delay: int
    """The entry is committed (visible to reads) this long after its created_at."""
    lifetime: int

    @property
    def committed(self) -> int:
        return self.created + self.delay


planned = st.builds(
    Planned,
    value=st.uuids().map(lambda u: u.hex[:12]),
    created=st.integers(0, 3_000_000),
    delay=st.integers(0, MAX_COMMIT_DELAY),
    lifetime=st.integers(1, int(LIFETIME / MS)),
)
read_times = st.lists(st.integers(0, 3_200_000), min_size=1, max_size=25).map(sorted)


class Validator:
    """What `broker_client` does with a page: replace on full, merge otherwise, and drop
    an entry once its exp (in seconds) has passed."""

    def __init__(self) -> None:
        self.cursor: str | None = None
        self.entries: dict[str, int] = {}

    def apply(self, page: rules.FeedPage, now: datetime) -> None:
        got = {e.value: rules.exp_seconds(e.expires_at) for e in page.entries}
        self.entries = got if page.full else {**self.entries, **got}
        self.entries = {v: exp for v, exp in self.entries.items() if exp > now.timestamp()}
        self.cursor = str(page.cursor)


def check_following(
    plan: list[Planned],
    reads: list[int],
    live_at: Callable[[list[Planned], int], list[RevocationEntry]],
) -> None:
    validator = Validator()
    for read in reads:
        now = at(read)
        committed = [p for p in plan if p.committed <= read]
        page = rules.select(
            live_at(committed, read),
            rules.parse_cursor(validator.cursor),
            now,
            lifetime=LIFETIME,
        )
        # Expired entries never appear.
        assert all(e.expires_at > now for e in page.entries)
        validator.apply(page, now)
        # Every entry committed by now and still live is held by the validator.
        due = {p.value for p in committed if p.created + p.lifetime > read}
        held = {v for v, exp in validator.entries.items() if exp > now.timestamp()}
        missing = {p.value for p in committed if p.value in due} - held
        assert not missing, (read, missing)


def pure_live(committed: list[Planned], read: int) -> list[RevocationEntry]:
    """Every committed entry, expired ones too (a snapshot read a moment earlier may
    hold some): `select` must leave those out itself."""
    live = [entry(p.value, p.created, p.lifetime) for p in committed]
    return sorted(live, key=lambda e: (e.created_at, e.value))


@settings(max_examples=300, deadline=None)
@given(plan=st.lists(planned, max_size=30, unique_by=lambda p: p.value), reads=read_times)
def test_a_validator_following_the_cursor_misses_nothing(
    plan: list[Planned], reads: list[int]
) -> None:
    check_following(plan, reads, pure_live)


# --- the same over a real store ------------------------------------------------------------------


@contextmanager
def sqlite_store() -> Iterator[Store]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "feed.db")
        try:
            yield store
        finally:
            store.close()


@contextmanager
def mongo_store() -> Iterator[Store]:
    store = MongoStore("mongodb://mock/feed", client=mongomock.MongoClient(tz_aware=True))
    try:
        yield store
    finally:
        store.close()


def write(store: Store, planned_entry: Planned, kind: int) -> None:
    """Revoke something at `created` whose entry lives `lifetime`: a family (the fam entry's
    life is given) or an access token (its jti entry lives until the token's exp)."""
    created, until = at(planned_entry.created), at(planned_entry.created + planned_entry.lifetime)
    if kind == 0:
        store.deny_access_token(planned_entry.value, until, at=created)
        return
    sid, fid = f"s-{planned_entry.value}", planned_entry.value
    store.create_session(SessionRecord(sid, 1, "u", "u@x", "U", T0, T0 + timedelta(days=1), T0))
    store.create_family(
        FamilyRecord(fid, sid, "c", "s", "a", T0, T0 + timedelta(days=1)),
        RefreshTokenRecord(f"t-{fid}", fid, T0, T0 + timedelta(days=1)),
    )
    assert store.revoke_family(fid, created, "reuse", feed_until=until)


@pytest.mark.parametrize("backend", [sqlite_store, mongo_store], ids=["sqlite", "mongomock"])
@settings(max_examples=60, deadline=None)
@given(
    plan=st.lists(planned, max_size=15, unique_by=lambda p: p.value),
    kinds=st.lists(st.integers(0, 1), min_size=15, max_size=15),
    reads=read_times,
)
def test_over_a_store_a_validator_misses_nothing(
    backend: Callable[[], AbstractContextManager[Store]],
    plan: list[Planned],
    kinds: list[int],
    reads: list[int],
) -> None:
    with backend() as store:
        written: set[str] = set()
        order = sorted(range(len(plan)), key=lambda i: plan[i].committed)

        def live_at(committed: list[Planned], read: int) -> list[RevocationEntry]:
            # Commit, in commit order, what is due by this read; then the feed's read.
            for i in order:
                if plan[i].committed <= read and plan[i].value not in written:
                    write(store, plan[i], kinds[i])
                    written.add(plan[i].value)
            return store.live_revocations(at(read))

        check_following(plan, reads, live_at)
