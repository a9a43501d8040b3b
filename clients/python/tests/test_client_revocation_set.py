"""RevocationSet and the feed document, as properties against a plain model.

The model is the obvious dict {(kind, value): deadline} with the format page's rules
written out naively: `full` replaces, incremental merges keep the later deadline,
entries end at exp + grace, the cap drops the soonest deadlines first.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker_client.revocations import (
    KINDS,
    MalformedFeed,
    RevocationEntry,
    RevocationSet,
    parse_feed,
)
from client_support import LogRecords

VALUES = st.sampled_from(["a", "b", "c", "d", "e", "f"])
ENTRY = st.builds(
    RevocationEntry,
    kind=st.sampled_from(KINDS),
    value=VALUES,
    exp=st.integers(min_value=0, max_value=100).map(float),
)
BATCH = st.lists(ENTRY, max_size=12)
OP = st.one_of(
    st.tuples(st.just("replace"), BATCH),
    st.tuples(st.just("merge"), BATCH),
    st.tuples(st.just("advance"), st.integers(min_value=0, max_value=30)),
)

Model = dict[tuple[str, str], float]


def model_apply(model: Model, entries: list[RevocationEntry], now: float, grace: float) -> Model:
    for e in entries:
        deadline = e.exp + grace
        if deadline > now and deadline > model.get((e.kind, e.value), float("-inf")):
            model[(e.kind, e.value)] = deadline
    return model


def live(model: Model, now: float) -> Model:
    return {key: deadline for key, deadline in model.items() if deadline > now}


def contents(revocations: RevocationSet, now: float) -> Model:
    return {
        (kind, value): deadline
        for kind, entries in revocations.snapshot().items()
        for value, deadline in entries.items()
        if deadline > now
    }


@settings(max_examples=150, deadline=None)
@given(ops=st.lists(OP, max_size=25), grace=st.sampled_from([0.0, 5.0]))
def test_the_set_behaves_like_the_model(ops: list[tuple[str, Any]], grace: float) -> None:
    revocations = RevocationSet(max_entries=10_000, grace=grace)
    model: Model = {}
    now = 0.0
    for op, arg in ops:
        if op == "replace":
            model = model_apply({}, arg, now, grace)
            revocations.replace(arg, now)
        elif op == "merge":
            model = model_apply(model, arg, now, grace)
            revocations.merge(arg, now)
        else:
            now += arg
            revocations.purge(now)
        model = live(model, now)
        assert contents(revocations, now) == model
        assert len(revocations) == len(model)  # purge keeps nothing dead around
        for kind in KINDS:
            for value in "abcdef":
                expected = (kind, value) in model
                claims = {kind: value}
                assert (revocations.match(claims, now) == kind) is expected


@given(batch=BATCH, now=st.integers(min_value=0, max_value=50).map(float))
def test_duplicates_are_idempotent(batch: list[RevocationEntry], now: float) -> None:
    once, twice = RevocationSet(), RevocationSet()
    once.merge(batch, now)
    twice.merge(batch, now)
    twice.merge(batch, now)
    twice.merge(list(reversed(batch)), now)
    assert once.snapshot() == twice.snapshot()


@given(first=BATCH, second=BATCH)
def test_full_replaces_whatever_was_there(
    first: list[RevocationEntry], second: list[RevocationEntry]
) -> None:
    revocations, fresh = RevocationSet(), RevocationSet()
    revocations.merge(first, 0.0)
    revocations.replace(second, 0.0)
    fresh.replace(second, 0.0)
    assert revocations.snapshot() == fresh.snapshot()


@settings(max_examples=100, deadline=None)
@given(batches=st.lists(BATCH, min_size=1, max_size=6), cap=st.integers(min_value=1, max_value=8))
def test_the_cap_drops_the_soonest_to_expire_first(
    batches: list[list[RevocationEntry]], cap: int
) -> None:
    revocations = RevocationSet(max_entries=cap)
    model: Model = {}
    for batch in batches:
        revocations.merge(batch, 0.0)
        model = model_apply(model, batch, 0.0, 0.0)
        held = contents(revocations, 0.0)
        assert len(held) <= cap
        # Everything kept outlives everything dropped (ties may go either way).
        dropped = {key: d for key, d in model.items() if key not in held}
        if held and dropped:
            assert min(held.values()) >= max(dropped.values())
        model = held  # what was dropped is gone for good
    assert revocations.evicted >= 0


def test_the_cap_counts_evictions_and_warns_once() -> None:
    revocations = RevocationSet(max_entries=2)
    with LogRecords("broker_client.revocations") as logs:
        revocations.merge([RevocationEntry("jti", v, 10.0 + i) for i, v in enumerate("abcd")], 0)
        revocations.add("jti", "e", 50.0, 0)
    assert revocations.evicted == 3
    assert set(revocations.snapshot()["jti"]) == {"d", "e"}
    assert len([m for m in logs.messages() if "revocation set is full" in m]) == 1


def test_an_entry_lives_until_exp_plus_grace() -> None:
    revocations = RevocationSet(grace=30.0)
    revocations.add("sid", "s1", 100.0, 0.0)
    assert revocations.match({"sid": "s1"}, 129.9) == "sid"
    assert revocations.match({"sid": "s1"}, 130.0) is None
    assert revocations.purge(130.0) == 1
    assert len(revocations) == 0
    revocations.add("fam", "f1", 10.0, 50.0)  # dead on arrival: not kept
    assert len(revocations) == 0


def test_a_token_matches_by_sid_fam_or_jti() -> None:
    revocations = RevocationSet()
    revocations.merge(
        [
            RevocationEntry("sid", "s1", 100.0),
            RevocationEntry("fam", "f1", 100.0),
            RevocationEntry("jti", "j1", 100.0),
        ],
        0.0,
    )
    assert revocations.match({"sid": "s1", "fam": "f9", "jti": "j9"}, 1.0) == "sid"
    assert revocations.match({"sid": "s9", "fam": "f1", "jti": "j9"}, 1.0) == "fam"
    assert revocations.match({"sid": "s9", "fam": "f9", "jti": "j1"}, 1.0) == "jti"
    assert revocations.match({"sid": "s9", "jti": "j9"}, 1.0) is None
    assert revocations.match({"jti": "s1"}, 1.0) is None  # kinds do not mix


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RevocationSet(max_entries=0)


# --- the feed document ------------------------------------------------------------------

ISS = "http://127.0.0.1:8000"


def feed(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "iss": ISS,
        "iat": 1764450000,
        "cursor": "1764450000123",
        "full": True,
        "entries": [
            {"sid": "1qF203_GFMdkUIzXJTv36A", "exp": 1764450600},
            {"fam": "_OoY9r3s3Wd7bAe56P_tjg", "exp": 1764450600},
            {"jti": "2Vt0c9yH0hS7oX3c3o3J0g", "exp": 1764450412},
        ],
    }
    document.update(changes)
    return document


def test_the_format_pages_example_parses() -> None:
    page = parse_feed(feed(), ISS)
    assert page.cursor == "1764450000123"
    assert page.full is True
    assert [(e.kind, e.value, e.exp) for e in page.entries] == [
        ("sid", "1qF203_GFMdkUIzXJTv36A", 1764450600.0),
        ("fam", "_OoY9r3s3Wd7bAe56P_tjg", 1764450600.0),
        ("jti", "2Vt0c9yH0hS7oX3c3o3J0g", 1764450412.0),
    ]
    assert page.skipped == 0


@pytest.mark.parametrize(
    "document",
    [
        [],
        feed(iss="http://elsewhere"),
        feed(cursor=5),
        feed(cursor=""),
        feed(full="yes"),
        feed(entries={}),
        {k: v for k, v in feed().items() if k != "cursor"},
    ],
    ids=["not an object", "issuer", "cursor int", "cursor empty", "full", "entries", "no cursor"],
)
def test_a_malformed_document_is_refused_whole(document: Any) -> None:
    with pytest.raises(MalformedFeed):
        parse_feed(document, ISS)


@pytest.mark.parametrize(
    "entry",
    [
        {"sid": "s"},
        {"sid": "s", "exp": "soon"},
        {"sid": "s", "exp": True},
        {"sid": "s", "jti": "j", "exp": 1},
        {"sub": "101", "exp": 1},
        {"sid": 5, "exp": 1},
        {"sid": "", "exp": 1},
        "sid",
    ],
)
def test_a_malformed_entry_is_skipped_and_counted(entry: Any) -> None:
    page = parse_feed(feed(entries=[entry, {"jti": "ok", "exp": 1}]), ISS)
    assert [e.value for e in page.entries] == ["ok"]
    assert page.skipped == 1
