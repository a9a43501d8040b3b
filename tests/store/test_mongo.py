"""MongoDB backend: the conformance suite on mongomock and, when BROKER_TEST_MONGODB_URI
points at a server, on a real MongoDB; plus what only this backend has (URL options,
older documents, TTL indexes, unreachable servers)."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import mongomock
import pymongo
import pytest
import uvicorn
from pymongo.errors import OperationFailure, ServerSelectionTimeoutError

from broker.cli import main
from broker.logs import unconfigure_logging
from broker.store import Store, StoreError, StoreUnavailable, open_store
from broker.store.mongo import MongoStore
from broker.store.records import (
    ClientRecord,
    FamilyRecord,
    KeyRecord,
    KeyState,
    RefreshTokenRecord,
    SessionRecord,
    UpstreamTokenRecord,
    ms,
)
from tests.store.conformance import GRACE, StoreConformance, make_token, rotate
from tests.support.broker import new_kek
from tests.support.mongo import MONGODB_URI, scratch_database, with_database

UNREACHABLE = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200&connectTimeoutMS=200"


class AtomicOps:
    """A mongomock client, database or collection whose every call holds one lock.

    mongomock runs find_one_and_update and upserts as find-then-write in Python, so two
    threads can interleave inside one "atomic" operation. A real server makes each
    single-document operation atomic, and that is all MongoStore relies on; this proxy
    restores exactly that guarantee, so the races below exercise the backend's multi-step
    logic (rotation then GRACE materialisation, promotion, bootstrap, the counter loop)
    under real thread interleavings between operations. True server-side concurrency
    across connections is covered by TestMongoStoreReal only.
    """

    def __init__(self, target: Any, lock: threading.RLock) -> None:
        self._target = target
        self._lock = lock

    def _wrap(self, value: Any) -> Any:
        if isinstance(value, mongomock.Database | mongomock.Collection):
            return AtomicOps(value, self._lock)
        return value

    def __getitem__(self, name: str) -> Any:
        return self._wrap(self._target[name])

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr) or isinstance(attr, mongomock.Collection):
            return self._wrap(attr)

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return self._wrap(attr(*args, **kwargs))

        return call


class TestMongoStoreMongomock(StoreConformance):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        client = AtomicOps(mongomock.MongoClient(tz_aware=True), threading.RLock())
        store = MongoStore("mongodb://mock/broker_test", client=client)
        yield store
        store.close()


class TestMongoStoreReal(StoreConformance):
    @pytest.fixture
    def store(self) -> Iterator[Store]:
        if not MONGODB_URI:
            pytest.skip(
                "BROKER_TEST_MONGODB_URI not set: no MongoDB server on this machine;"
                " the real-server suite did not run"
            )
        with scratch_database(MONGODB_URI) as url:
            store = MongoStore(url)
            try:
                yield store
            finally:
                store.close()

    def test_write_concern_majority(self, store: Store) -> None:
        assert isinstance(store, MongoStore)
        assert store._db.write_concern.document == {"w": "majority"}
        store.ping()


# --- mongomock only: shapes and options ------------------------------------------------------


@pytest.fixture
def mock_client() -> Any:
    return mongomock.MongoClient(tz_aware=True)


def test_reads_documents_of_an_older_schema(mock_client: Any) -> None:
    """Documents without `schema` and without fields added since (optional ones) read as
    records with the defaults."""
    now = ms(datetime.now(UTC))
    db = mock_client["token_broker"]
    db.clients.insert_one(
        {
            "_id": "legacy",
            "client_id": "legacy",
            "name": "Legacy",
            "public": False,
            "secret_hash": "h",
            "grant_types": ["password"],
            "redirect_uris": [],
        }
    )
    db.sessions.insert_one(
        {
            "_id": "s",
            "sid": "s",
            "user_id": 7,
            "login": "bob",
            "email": "b@x",
            "name": "Bob",
            "auth_time": now,
            "expires_at": now + timedelta(hours=1),
            "last_checked_at": now,
        }
    )
    db.keys.insert_one(
        {
            "_id": "k",
            "kid": "k",
            "alg": "RS256",
            "state": "current",
            "private_jwk": b"\x00ct",
            "created_at": now,
        }
    )
    db.families.insert_one(
        {
            "_id": "f",
            "family_id": "f",
            "sid": "s",
            "client_id": "legacy",
            "scope": "openid",
            "audience": "legacy",
            "created_at": now,
            "expires_at": now + timedelta(hours=1),
        }
    )
    db.refresh_tokens.insert_one(
        {
            "_id": "t",
            "jti": "t",
            "family_id": "f",
            "issued_at": now,
            "expires_at": now + timedelta(hours=1),
        }
    )
    db.upstream_tokens.insert_one(
        {
            "_id": "u",
            "key": "u",
            "access_token": b"a",
            "refresh_token": None,
            "expires_at": now,
            "refresh_expires_at": None,
        }
    )
    store = MongoStore("mongodb://mock/", client=mock_client)
    assert store.get_client("legacy") == ClientRecord(
        client_id="legacy", name="Legacy", public=False, secret_hash="h", grant_types=("password",)
    )
    assert store.get_session("s") == SessionRecord(
        sid="s",
        user_id=7,
        login="bob",
        email="b@x",
        name="Bob",
        auth_time=now,
        expires_at=now + timedelta(hours=1),
        last_checked_at=now,
    )
    old_session = store.get_session("s")
    assert old_session is not None and old_session.auth_method == "password"
    assert old_session.client_ip is None and old_session.user_agent is None
    assert store.list_keys() == [
        KeyRecord(
            kid="k", alg="RS256", state=KeyState.CURRENT, private_jwk=b"\x00ct", created_at=now
        )
    ]
    assert store.get_family("f") == FamilyRecord(
        family_id="f",
        sid="s",
        client_id="legacy",
        scope="openid",
        audience="legacy",
        created_at=now,
        expires_at=now + timedelta(hours=1),
    )
    assert store.get_upstream_tokens("u") == UpstreamTokenRecord(
        key="u", access_token=b"a", refresh_token=None, expires_at=now, refresh_expires_at=None
    )
    # An old key without `use` counts as a signing key for bootstrap and promotion.
    assert [k.kid for k in store.bootstrap_keys([])] == ["k"]
    result = rotate(store, "t", make_token(now, "t2", "f"), now, GRACE)
    assert result.status.value == "rotated"
    assert store.get_refresh_token("t") == RefreshTokenRecord(
        jti="t",
        family_id="f",
        issued_at=now,
        expires_at=now + timedelta(hours=1),
        used_at=now,
        successor_jti="t2",
    )
    store.close()


def test_documents_carry_schema_and_ttl_field(mock_client: Any) -> None:
    now = ms(datetime.now(UTC))
    store = MongoStore("mongodb://mock/db", client=mock_client)
    store.deny_access_token("j", now + timedelta(hours=1), at=now)
    doc = mock_client["db"].denylist.find_one({"_id": "j"})
    assert doc["expire_at"] == now + timedelta(hours=1) and doc["schema"] == 1
    store.put_client(ClientRecord(client_id="c"))
    assert mock_client["db"].clients.find_one({"_id": "c"})["schema"] == 1
    store.close()


def test_indexes(mock_client: Any) -> None:
    store = MongoStore("mongodb://mock/db", client=mock_client)
    store.ping()
    db = mock_client["db"]
    for name in (
        "sessions",
        "families",
        "refresh_tokens",
        "codes",
        "counters",
        "denylist",
        "upstream_tokens",
        "leases",
        "keys",
        "audit_events",
        "app_sessions",
        "device_codes",
        "logout_outbox",
    ):
        ttl = db[name].index_information()["ttl"]
        assert ttl["key"] == [("expire_at", 1)] and ttl["expireAfterSeconds"] == 0
    cookie = db.sessions.index_information()["cookie_hash_unique"]
    assert cookie["unique"] is True
    user_code = db.device_codes.index_information()["user_code_hash_unique"]
    assert user_code["unique"] is True
    # The revocation feed's and the outbox's reads are indexed.
    for name in ("sessions", "families"):
        assert db[name].index_information()["feed_until"]["key"] == [("feed_until", 1)]
    assert db.denylist.index_information()["expires_at"]["key"] == [("expires_at", 1)]
    assert db.sessions.index_information()["user_id"]["key"] == [("user_id", 1)]
    assert db.logout_outbox.index_information()["due"]["key"] == [("done", 1), ("due_at", 1)]
    store.close()


def test_revocation_is_one_document_write(mock_client: Any) -> None:
    """The session's revocation, its feed entry and its logout notices are one
    `update_one`: what the feed and the outbox read is derived from that document."""
    from tests.store.conformance import make_notice, make_session

    now = ms(datetime.now(UTC))
    store = MongoStore("mongodb://mock/db", client=mock_client)
    store.create_session(make_session(now, expires_at=now + timedelta(seconds=1)))
    writes: list[Any] = []
    real_update = store._sessions.update_one

    def spy(query: Any, update: Any, *args: Any, **kwargs: Any) -> Any:
        writes.append(update)
        return real_update(query, update, *args, **kwargs)

    store._sessions.update_one = spy  # type: ignore[method-assign]
    feed_until = now + timedelta(hours=1)
    assert store.revoke_session(
        "sid-1", now, "logout", feed_until=feed_until, notices=[make_notice(now, "n1")]
    )
    decisive = writes[0]["$set"]
    assert decisive["revoked_at"] == now and decisive["feed_until"] == feed_until
    assert [n["_id"] for n in decisive["pending_notices"]] == ["n1"]
    # The document outlives its own expiry while its entry and notices need it.
    assert writes[0]["$max"]["expire_at"] >= now + timedelta(days=1)
    store.close()


def test_notices_left_in_the_session_are_copied_once(mock_client: Any) -> None:
    """A revoking call that died after its decisive write, before copying its notices to
    the outbox: the next claim copies them; a late copy after delivery changes nothing."""
    from tests.store.conformance import make_notice, make_session

    now = ms(datetime.now(UTC))
    store = MongoStore("mongodb://mock/db", client=mock_client)
    store.create_session(make_session(now))
    copy = store._copy_notices
    store._copy_notices = lambda sid: None  # type: ignore[method-assign]  # the crash
    assert store.revoke_session(
        "sid-1",
        now,
        "logout",
        feed_until=now + timedelta(hours=1),
        notices=[make_notice(now, "n1")],
    )
    assert mock_client["db"].logout_outbox.count_documents({}) == 0
    store._copy_notices = copy  # type: ignore[method-assign]
    (claimed,) = store.claim_logout_notices(now, "A", timedelta(seconds=10), 5)
    assert claimed.notice_id == "n1"
    assert mock_client["db"].sessions.find_one({"_id": "sid-1"}).get("pending_notices") is None
    assert store.finish_logout_notice(claimed)
    # A copy repeated late (its first run died after upserting, before unsetting).
    mock_client["db"].sessions.update_one(
        {"_id": "sid-1"}, {"$set": {"pending_notices": [make_notice_doc(now)]}}
    )
    assert store.claim_logout_notices(now, "B", timedelta(seconds=10), 5) == []
    assert store.pending_logout_notices() == []
    store.close()


def make_notice_doc(now: datetime) -> dict[str, Any]:
    from broker.store.mongo import _notice_doc
    from tests.store.conformance import make_notice

    return _notice_doc(make_notice(now, "n1"))


def test_grace_finishes_a_rotation_whose_winner_died(mock_client: Any) -> None:
    """The winner marked the parent used (with the successor embedded) and crashed before
    inserting the successor: a retry within grace gets that successor, stored."""
    now = ms(datetime.now(UTC))
    store = MongoStore("mongodb://mock/db", client=mock_client)
    from tests.store.conformance import make_family, make_session

    store.create_session(make_session(now))
    store.create_family(make_family(now), make_token(now, "rt-0"))
    successor = make_token(now, "rt-1")
    rotate(store, "rt-0", successor, now, GRACE)
    mock_client["db"].refresh_tokens.delete_one({"_id": "rt-1"})  # the lost insert
    again = rotate(store, "rt-0", make_token(now, "rt-2"), now, GRACE)
    assert again.status.value == "grace" and again.successor == successor
    assert store.get_refresh_token("rt-1") == successor
    store.close()


def test_url_options() -> None:
    store = MongoStore(
        "mongodb://127.0.0.1:1/custom_db?w=1&readPreference=secondaryPreferred"
        "&serverSelectionTimeoutMS=200"
    )
    try:
        assert store._db.name == "custom_db"
        assert store._db.write_concern.document == {"w": 1}
        assert store._db.read_preference.mongos_mode == "secondaryPreferred"
        assert store._client.options.server_selection_timeout == 0.2
        assert store._client.options.retry_writes is True
    finally:
        store.close()
    default = MongoStore("mongodb://127.0.0.1:1")
    try:
        assert default._db.name == "token_broker"
        assert default._db.write_concern.document == {"w": "majority"}
        assert default._client.options.server_selection_timeout == 5
    finally:
        default.close()


def test_open_store_scheme() -> None:
    store = open_store(UNREACHABLE)
    assert isinstance(store, MongoStore)
    store.close()


def test_unreachable_server_is_unavailable_quickly() -> None:
    store = MongoStore(UNREACHABLE)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.ping()
        with pytest.raises(StoreUnavailable):
            store.get_client("x")
        with pytest.raises(StoreUnavailable):
            store.claim_refresh("x", make_token(ms(datetime.now(UTC)), "y"), ms(datetime.now(UTC)))
        assert time.monotonic() - started < 5
    finally:
        store.close()


# --- servers that refuse an index the broker needs -------------------------------------------

# What MongoDB-compatible servers answer (pymongo raises OperationFailure with these).
PARTIAL_REFUSED = (2, "Field 'partialFilterExpression' is currently not supported")  # DocumentDB
TTL_REFUSED = (2, "The 'expireAfterSeconds' option is supported on '_ts' field only.")  # Cosmos


def refuse_index(monkeypatch: pytest.MonkeyPatch, option: str, code: int, message: str) -> None:
    """mongomock's create_index answering as such a server does for `option`."""
    real = mongomock.Collection.create_index

    def create_index(self: Any, keys: Any, **kwargs: Any) -> Any:
        if option in kwargs:
            details = {"ok": 0.0, "errmsg": message, "code": code, "codeName": "BadValue"}
            raise OperationFailure(message, code=code, details=details)
        return real(self, keys, **kwargs)

    monkeypatch.setattr(mongomock.Collection, "create_index", create_index)


REFUSALS = [
    ("partialFilterExpression", *PARTIAL_REFUSED, "partialFilterExpression"),
    ("expireAfterSeconds", *TTL_REFUSED, "TTL index"),
]


@pytest.mark.parametrize(
    ("option", "code", "message", "named"), REFUSALS, ids=["partial index", "ttl index"]
)
def test_a_refused_index_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch,
    mock_client: Any,
    option: str,
    code: int,
    message: str,
    named: str,
) -> None:
    refuse_index(monkeypatch, option, code, message)
    store = MongoStore("mongodb://mock/db", client=mock_client)
    try:
        for call in (store.ping, lambda: store.get_client("x")):
            with pytest.raises(StoreError) as caught:
                call()
            text = str(caught.value)
            assert named in text and message in text and "\n" not in text
            assert not isinstance(caught.value, StoreUnavailable)  # not "try again later"
    finally:
        store.close()


def test_serve_stops_with_one_line_when_an_index_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    refuse_index(monkeypatch, "partialFilterExpression", *PARTIAL_REFUSED)
    monkeypatch.setattr(pymongo, "MongoClient", lambda url, **kw: mongomock.MongoClient(**kw))
    started: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: started.append(a))
    env = {
        "BROKER_ISSUER": "http://127.0.0.1:8000",
        "BROKER_SHOTGRID_URL": "http://127.0.0.1:9",
        "BROKER_STORE_URL": "mongodb://documentdb.example/token_broker",
        "BROKER_SECRET_KEY": new_kek(),
        "BROKER_SHOTGRID_SCRIPT_NAME": "token-broker",
        "BROKER_SHOTGRID_SCRIPT_KEY": "token-broker-key",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TOKEN_BROKER_CONFIG", raising=False)
    try:
        status = main(["serve"])
    finally:
        unconfigure_logging()
    err = capsys.readouterr().err
    assert status == 2 and started == []
    lines = [line for line in err.splitlines() if line.startswith("token-broker: ")]
    assert len(lines) == 1 and "partialFilterExpression" in lines[0], err
    assert "Traceback" not in err


def test_test_database_urls() -> None:
    """BROKER_TEST_MONGODB_URI may name a database (and authenticate against it)."""
    cases = {
        "mongodb://h:27017": "mongodb://h:27017/t",
        "mongodb://h/": "mongodb://h/t",
        "mongodb://h/app?replicaSet=rs0": "mongodb://h/t?replicaSet=rs0",
        "mongodb://u:p@h1,h2/?replicaSet=rs0": "mongodb://u:p@h1,h2/t?replicaSet=rs0&authSource=admin",
        "mongodb://u:p@h/app": "mongodb://u:p@h/t?authSource=app",
        "mongodb://u:p@h/app?authSource=admin": "mongodb://u:p@h/t?authSource=admin",
        "mongodb+srv://u:p@cluster.example/app?tls=true": (
            "mongodb+srv://u:p@cluster.example/t?tls=true&authSource=app"
        ),
    }
    for given, expected in cases.items():
        assert with_database(given, "t") == expected, given


def test_scratch_database_closes_its_client() -> None:
    """An unclosed MongoClient warns (ResourceWarning) when collected: an error here."""
    with pytest.raises(ServerSelectionTimeoutError), scratch_database(UNREACHABLE) as url:
        assert "/broker_test_" in url
    gc.collect()
