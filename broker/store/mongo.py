"""MongoDB backend: one collection per record type, the natural key as `_id`.

URL: `mongodb://…/dbname?…` or `mongodb+srv://…`; the database defaults to `token_broker`.
Every URL option (TLS, replicaSet, readPreference, w, timeouts) passes through untouched;
the broker only supplies defaults for what the URL leaves out (majority writes, retryable
writes, bounded timeouts so an unreachable server fails fast with StoreUnavailable).

Safety rests on single-document compare-and-swap: every contested step is ONE conditional
`find_one_and_update`/`update_one` on the state that decides (never read-then-write), and
any second write that follows it is idempotent, so a crash between the two leaves nothing
a retry cannot finish. No multi-document transactions: they need a replica set, and no
step needs one under this design (see `claim_refresh`, `redeem_code`, `promote_key_if`,
`bootstrap_keys`). Documents carry `schema` and, when they expire, `expire_at` under a TTL
index; TTL deletion is late (about once a minute), so every read checks expiry itself.

Revocation entries are derived from the documents whose compare-and-swap made them (a
session's or family's `revoked_at`/`feed_until`, a denylist document's `created_at`), and
logout notices ride in the revoked session's document until copied into `logout_outbox`:
see the package docstring for why.
Indexes are created on first use rather than at construction, so a broker can start while
the database is down and answer 503 until it comes back.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import pymongo
from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WTimeoutError,
)

from broker.store import (
    AlreadyExists,
    FamilyStarter,
    StoreError,
    StoreUnavailable,
    register_backend,
)
from broker.store._codec import (
    EPOCH,
    StoredFormError,
    from_doc,
    key_range,
    to_doc,
    upstream_gc_at,
)
from broker.store.records import (
    LOGOUT_NOTICE_RETENTION,
    SCHEMA_VERSION,
    AlreadyClaimed,
    AppSessionRecord,
    AuditRecord,
    AuthCodeRecord,
    Claim,
    Claimed,
    ClientRecord,
    CounterWindow,
    DeviceCodeRecord,
    FamilyRecord,
    KeyRecord,
    KeyState,
    LogoutNotice,
    PermissionCheckRecord,
    RefreshChain,
    RefreshTokenRecord,
    RevocationEntry,
    RevocationKind,
    SessionRecord,
    UpstreamTokenRecord,
    ms,
)

P = ParamSpec("P")
T = TypeVar("T")
Doc = dict[str, Any]

DEFAULT_DATABASE = "token_broker"
# Applied only when the URL does not set them (keys compared case-insensitively).
DEFAULT_OPTIONS: dict[str, Any] = {
    "retryWrites": True,
    "w": "majority",
    "serverSelectionTimeoutMS": 5000,
    "connectTimeoutMS": 5000,
    "socketTimeoutMS": 10000,
}
_EXPIRING = (
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
    "permission_checks",
    "logout_outbox",
)


def _database_name(url: str) -> str:
    path = urlsplit(url).path.lstrip("/")
    return unquote(path) or DEFAULT_DATABASE


def _client_options(url: str) -> dict[str, Any]:
    given = {k.lower() for k, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
    return {k: v for k, v in DEFAULT_OPTIONS.items() if k.lower() not in given}


def _unavailable(exc: PyMongoError) -> bool:
    return isinstance(exc, ConnectionFailure | ExecutionTimeout | WTimeoutError) or exc.timeout


_NOT_SUPPORTED_CODES = frozenset({2, 67, 115, 303})
"""BadValue, CannotCreateIndex, CommandNotSupported, and DocumentDB's "Feature not
supported": what MongoDB-compatible servers answer for an index option they lack (Cosmos
DB: code 2, "The 'expireAfterSeconds' option is supported on '_ts' field only"; Amazon
DocumentDB 4.0: code 2, "Field 'partialFilterExpression' is currently not supported")."""


def _create_index(collection: Collection[Doc], feature: str, *args: Any, **kwargs: Any) -> None:
    """`create_index`, where a refusal becomes one StoreError line naming what the broker
    needed: otherwise every store call fails with the server's bare complaint."""
    try:
        collection.create_index(*args, **kwargs)
    except OperationFailure as exc:
        if _unavailable(exc):
            raise
        errmsg = str((exc.details or {}).get("errmsg") or exc).splitlines()[0][:300]
        if exc.code in _NOT_SUPPORTED_CODES or "support" in errmsg.lower():
            raise StoreError(
                f"mongodb: the server does not support the {feature} the broker needs on "
                f"'{collection.name}' (code {exc.code}: {errmsg}); use MongoDB, or a "
                "compatible server that has it"
            ) from exc
        raise StoreError(
            f"mongodb: creating the {feature} on '{collection.name}' failed "
            f"(code {exc.code}: {errmsg})"
        ) from exc


def _guard(fn: Callable[P, T]) -> Callable[P, T]:
    """Ensure the indexes exist, and map driver failures to the store's error tree."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            store = args[0]
            assert isinstance(store, MongoStore)
            store._ensure_ready()
            return fn(*args, **kwargs)
        except PyMongoError as exc:
            if _unavailable(exc):
                raise StoreUnavailable(f"mongodb: {exc}") from exc
            raise
        except StoredFormError as exc:
            raise StoreError(str(exc)) from exc

    return wrapper


def _guard_all(cls: type[T]) -> type[T]:
    for name, value in list(vars(cls).items()):
        if callable(value) and not name.startswith("_") and name != "close":
            setattr(cls, name, _guard(value))
    return cls


def _doc(record: Any, key: str, expire_at: datetime | None = None) -> Doc:
    doc = to_doc(record)
    doc["_id"] = doc[key]
    doc["expire_at"] = expire_at
    return doc


def _key_doc(key: KeyRecord) -> Doc:
    dropping = key.state is KeyState.RETIRED and key.drop_after is not None
    return _doc(key, "kid", key.drop_after if dropping else None)


def _opt(cls: type[T], doc: Mapping[str, Any] | None) -> T | None:
    return None if doc is None else from_doc(cls, doc)


def _notice_doc(notice: LogoutNotice) -> Doc:
    doc = _doc(notice, "notice_id", notice.created_at + LOGOUT_NOTICE_RETENTION)
    doc["done"] = False
    return doc


def _aware(value: datetime) -> datetime:
    """A stored date as aware UTC (a client opened without tz_aware returns naive UTC)."""
    return ms(value if value.tzinfo is not None else value.replace(tzinfo=UTC))


@_guard_all
class MongoStore:
    def __init__(self, url: str, *, client: Any = None) -> None:
        self._owns_client = client is None
        if client is None:
            try:
                client = pymongo.MongoClient(url, tz_aware=True, **_client_options(url))
            except ConfigurationError as exc:
                raise StoreError(f"mongodb: bad store URL: {exc}") from exc
        self._client = client
        self._db: Database[Doc] = client[_database_name(url)]
        c = self._db
        self._clients: Collection[Doc] = c["clients"]
        self._sessions: Collection[Doc] = c["sessions"]
        self._families: Collection[Doc] = c["families"]
        self._tokens: Collection[Doc] = c["refresh_tokens"]
        self._keys: Collection[Doc] = c["keys"]
        self._meta: Collection[Doc] = c["meta"]
        self._upstream: Collection[Doc] = c["upstream_tokens"]
        self._leases: Collection[Doc] = c["leases"]
        self._codes: Collection[Doc] = c["codes"]
        self._counters: Collection[Doc] = c["counters"]
        self._denylist: Collection[Doc] = c["denylist"]
        self._audit: Collection[Doc] = c["audit_events"]
        self._app_sessions: Collection[Doc] = c["app_sessions"]
        self._device_codes: Collection[Doc] = c["device_codes"]
        self._permission_checks: Collection[Doc] = c["permission_checks"]
        self._outbox: Collection[Doc] = c["logout_outbox"]
        self._ready = False
        self._ready_lock = threading.Lock()

    def _ensure_ready(self) -> None:
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            # create_index is idempotent; _id already indexes every natural key uniquely.
            _create_index(
                self._sessions,
                "partial unique index (partialFilterExpression)",
                "cookie_hash",
                name="cookie_hash_unique",
                unique=True,
                partialFilterExpression={"cookie_hash": {"$type": "string"}},
            )
            _create_index(self._families, "index", "sid", name="sid")
            _create_index(self._tokens, "index", "family_id", name="family_id")
            _create_index(self._keys, "index", "use", name="use")
            _create_index(self._sessions, "index", "login", name="login")
            _create_index(self._audit, "index", [("login", 1), ("_id", -1)], name="login")
            _create_index(self._audit, "index", [("event", 1), ("_id", -1)], name="event")
            _create_index(
                self._device_codes,
                "unique index",
                "user_code_hash",
                name="user_code_hash_unique",
                unique=True,
            )
            _create_index(self._sessions, "index", "user_id", name="user_id")
            # The revocation feed's reads, and the outbox's.
            for derived in (self._sessions, self._families):
                _create_index(derived, "sparse index", "feed_until", name="feed_until", sparse=True)
            _create_index(self._denylist, "index", "expires_at", name="expires_at")
            _create_index(
                self._sessions,
                "sparse index",
                "pending_notices._id",
                name="pending_notices",
                sparse=True,
            )
            _create_index(self._outbox, "index", [("done", 1), ("due_at", 1)], name="due")
            for name in _EXPIRING:
                _create_index(
                    self._db[name],
                    "TTL index (expireAfterSeconds)",
                    "expire_at",
                    name="ttl",
                    expireAfterSeconds=0,
                )
            self._ready = True

    @staticmethod
    def _insert(collection: Collection[Doc], doc: Doc) -> None:
        try:
            collection.insert_one(doc)
        except DuplicateKeyError as exc:
            raise AlreadyExists(f"{collection.name}: {doc['_id']!r} already stored") from exc

    # --- lifecycle -----------------------------------------------------------------------
    def ping(self) -> None:
        self._db.command("ping")

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def gc(self, now: datetime) -> int:
        now = ms(now)
        # A revoked session or family outlives its own expiry while its revocation entry
        # (derived from it) lives, and a session until its logout notices are copied out.
        feeding = {"feed_until": {"$gt": now}}
        sids = [
            d["_id"]
            for d in self._sessions.find(
                {
                    "expires_at": {"$lte": now},
                    "$nor": [feeding, {"pending_notices._id": {"$exists": True}}],
                },
                {"_id": 1},
            )
        ]
        fids = [
            d["_id"]
            for d in self._families.find(
                {
                    "$or": [{"expires_at": {"$lte": now}}, {"sid": {"$in": sids}}],
                    "$nor": [feeding],
                },
                {"_id": 1},
            )
        ]
        removed = self._tokens.delete_many(
            {"$or": [{"expires_at": {"$lte": now}}, {"family_id": {"$in": fids}}]}
        ).deleted_count
        removed += self._families.delete_many({"_id": {"$in": fids}}).deleted_count
        removed += self._sessions.delete_many({"_id": {"$in": sids}}).deleted_count
        for collection in (self._codes, self._counters, self._denylist, self._leases):
            removed += collection.delete_many({"expires_at": {"$lte": now}}).deleted_count
        removed += self._upstream.delete_many({"expire_at": {"$lte": now}}).deleted_count
        removed += self._outbox.delete_many({"expire_at": {"$lte": now}}).deleted_count
        removed += self._keys.delete_many(
            {"state": KeyState.RETIRED.value, "drop_after": {"$lte": now}}
        ).deleted_count
        for collection in (self._app_sessions, self._device_codes):
            removed += collection.delete_many({"purge_at": {"$lte": now}}).deleted_count
        removed += self._permission_checks.delete_many({"expires_at": {"$lte": now}}).deleted_count
        return removed

    # --- clients -------------------------------------------------------------------------
    def put_client(self, client: ClientRecord) -> None:
        doc = _doc(client, "client_id")
        del doc["expire_at"]
        self._clients.replace_one({"_id": client.client_id}, doc, upsert=True)

    def get_client(self, client_id: str) -> ClientRecord | None:
        return _opt(ClientRecord, self._clients.find_one({"_id": client_id}))

    def list_clients(self) -> list[ClientRecord]:
        return [from_doc(ClientRecord, d) for d in self._clients.find().sort("_id", 1)]

    def delete_client(self, client_id: str) -> bool:
        return self._clients.delete_one({"_id": client_id}).deleted_count > 0

    # --- sessions ------------------------------------------------------------------------
    def create_session(self, session: SessionRecord) -> None:
        self._insert(self._sessions, _doc(session, "sid", session.expires_at))

    def get_session(self, sid: str) -> SessionRecord | None:
        return _opt(SessionRecord, self._sessions.find_one({"_id": sid}))

    def get_session_by_cookie(self, cookie_hash: str) -> SessionRecord | None:
        return _opt(SessionRecord, self._sessions.find_one({"cookie_hash": cookie_hash}))

    def mark_session_checked(self, sid: str, at: datetime) -> None:
        self._sessions.update_one({"_id": sid}, {"$max": {"last_checked_at": ms(at)}})

    def list_user_sessions(self, user_id: int) -> list[SessionRecord]:
        cursor = self._sessions.find({"user_id": user_id}).sort([("auth_time", 1), ("_id", 1)])
        return [from_doc(SessionRecord, d) for d in cursor]

    def revoke_session(
        self,
        sid: str,
        at: datetime,
        reason: str,
        *,
        feed_until: datetime,
        notices: Sequence[LogoutNotice] = (),
    ) -> bool:
        """The CAS on the session sets `revoked_at`, its revocation entry (`feed_until`)
        and its logout notices (`pending_notices`) in one document write; copying the
        notices into the outbox follows, idempotently."""
        at, feed_until = ms(at), ms(feed_until)
        update: Doc = {"revoked_at": at, "feed_until": feed_until}
        keep = feed_until
        if notices:
            update["pending_notices"] = [_notice_doc(n) for n in notices]
            keep = max(keep, at + LOGOUT_NOTICE_RETENTION)
        won = self._sessions.update_one(
            {"_id": sid, "revoked_at": None}, {"$set": update, "$max": {"expire_at": keep}}
        ).modified_count
        # The revoked session already makes every rotation under it INVALID; revoking the
        # families too is idempotent and runs even when the session was already revoked,
        # so a crash between the two writes is repaired by the next call.
        self._families.update_many(
            {"sid": sid, "revoked_at": None},
            {"$set": {"revoked_at": at, "revoked_reason": reason}},
        )
        if won and notices:
            self._copy_notices(sid)
        return won > 0

    def _copy_notices(self, sid: str) -> None:
        """Upsert a session's pending notices into the outbox, then drop them from the
        session. Idempotent: a notice already copied (even delivered: its tombstone stays
        until its TTL) is never written again."""
        doc = self._sessions.find_one({"_id": sid}, {"pending_notices": 1})
        for notice in (doc or {}).get("pending_notices") or []:
            with contextlib.suppress(DuplicateKeyError):  # a concurrent copy, same notice
                self._outbox.update_one(
                    {"_id": notice["_id"]}, {"$setOnInsert": notice}, upsert=True
                )
        self._sessions.update_one({"_id": sid}, {"$unset": {"pending_notices": ""}})

    # --- refresh families and tokens -------------------------------------------------------
    def create_family(self, family: FamilyRecord, first: RefreshTokenRecord) -> None:
        if first.family_id != family.family_id:
            raise ValueError("the first token belongs to another family")
        self._insert(self._families, _doc(family, "family_id", family.expires_at))
        try:
            self._insert(self._tokens, _doc(first, "jti", first.expires_at))
        except AlreadyExists:
            self._families.delete_one({"_id": family.family_id})
            raise
        # A crash between the two inserts leaves a family without tokens: unusable, and
        # removed by TTL/gc at its expiry.

    def _ensure_family(self, family: FamilyRecord, first: RefreshTokenRecord) -> None:
        """Idempotent inserts of a family and its first token (code redemption: the
        decisive write was the code's, so a retry may repeat these)."""
        fam = _doc(family, "family_id", family.expires_at)
        self._families.update_one({"_id": fam["_id"]}, {"$setOnInsert": fam}, upsert=True)
        tok = _doc(first, "jti", first.expires_at)
        self._tokens.update_one({"_id": tok["_id"]}, {"$setOnInsert": tok}, upsert=True)

    def get_family(self, family_id: str) -> FamilyRecord | None:
        return _opt(FamilyRecord, self._families.find_one({"_id": family_id}))

    def list_families(self, sid: str) -> list[FamilyRecord]:
        cursor = self._families.find({"sid": sid}).sort([("created_at", 1), ("_id", 1)])
        return [from_doc(FamilyRecord, d) for d in cursor]

    def revoke_family(
        self, family_id: str, at: datetime, reason: str, *, feed_until: datetime
    ) -> bool:
        feed_until = ms(feed_until)
        result = self._families.update_one(
            {"_id": family_id, "revoked_at": None},
            {
                "$set": {"revoked_at": ms(at), "revoked_reason": reason, "feed_until": feed_until},
                "$max": {"expire_at": feed_until},
            },
        )
        return result.modified_count > 0

    def get_refresh_token(self, jti: str) -> RefreshTokenRecord | None:
        return _opt(RefreshTokenRecord, self._tokens.find_one({"_id": jti}))

    def get_refresh_chain(self, jti: str) -> RefreshChain | None:
        token = self.get_refresh_token(jti)
        family = self.get_family(token.family_id) if token is not None else None
        session = self.get_session(family.sid) if family is not None else None
        if token is None or family is None or session is None:
            return None
        return RefreshChain(token, family, session)

    def claim_refresh(self, parent_jti: str, successor: RefreshTokenRecord, now: datetime) -> Claim:
        """The single-document CAS on the parent decides; the successor is embedded in the
        parent by that same write, so the insert that follows is idempotent and a loser
        can finish it if the winner crashed (or has not got there yet)."""
        now = ms(now)
        succ_doc = _doc(successor, "jti", successor.expires_at)
        won = self._tokens.find_one_and_update(
            {"_id": parent_jti, "used_at": None},
            {"$set": {"used_at": now, "successor_jti": successor.jti, "successor": succ_doc}},
            projection={"_id": 1},
        )
        if won is not None:
            self._materialise(succ_doc)
            return Claimed()
        parent = self._tokens.find_one({"_id": parent_jti})
        if parent is None or parent.get("used_at") is None:
            raise ValueError(f"no refresh token {parent_jti!r} to claim")
        earlier = self._tokens.find_one({"_id": parent.get("successor_jti")})
        if earlier is None and parent.get("successor") is not None:
            earlier = self._materialise(parent["successor"])
        return AlreadyClaimed(
            parent["used_at"], None if earlier is None else from_doc(RefreshTokenRecord, earlier)
        )

    def _materialise(self, succ_doc: Doc) -> Doc:
        """Insert the successor if absent (idempotent); return it as stored."""
        self._tokens.update_one({"_id": succ_doc["_id"]}, {"$setOnInsert": succ_doc}, upsert=True)
        stored = self._tokens.find_one({"_id": succ_doc["_id"]})
        return stored if stored is not None else succ_doc

    # --- signing keys --------------------------------------------------------------------
    def list_keys(self) -> list[KeyRecord]:
        cursor = self._keys.find().sort([("created_at", 1), ("_id", 1)])
        return [from_doc(KeyRecord, d) for d in cursor]

    def bootstrap_keys(self, keys: list[KeyRecord]) -> list[KeyRecord]:
        """Per `use`, the first process to insert the marker document `bootstrap:<use>`
        (holding its whole key set) wins. Until the marker is marked complete, every
        caller upserts the marker's keys with $setOnInsert before answering, so no one
        returns a half-written set and the set is finished even if the winner died half
        way. A complete marker is never replayed (keys dropped later stay dropped)."""
        for use in dict.fromkeys(k.use for k in keys):
            marker_id = f"bootstrap:{use}"
            marker = self._meta.find_one({"_id": marker_id})
            if marker is None and self._keys.find_one(self._use_filter(use), {"_id": 1}):
                # Keys of this use exist: added without bootstrap, or by a bootstrap under
                # way (whose marker was written before any of its keys).
                marker = self._meta.find_one({"_id": marker_id})
                if marker is None or marker.get("complete"):
                    continue
            if marker is None:
                proposal = [_key_doc(k) for k in keys if k.use == use]
                with contextlib.suppress(DuplicateKeyError):  # another process proposed first
                    self._meta.insert_one(
                        {
                            "_id": marker_id,
                            "keys": proposal,
                            "complete": False,
                            "schema": SCHEMA_VERSION,
                        }
                    )
                marker = self._meta.find_one({"_id": marker_id})
            if marker is None or marker.get("complete"):
                continue
            for doc in marker["keys"]:
                with contextlib.suppress(DuplicateKeyError):  # a concurrent upsert, same kid
                    self._keys.update_one({"_id": doc["_id"]}, {"$setOnInsert": doc}, upsert=True)
            self._meta.update_one({"_id": marker_id}, {"$set": {"complete": True}})
        return self.list_keys()

    @staticmethod
    def _use_filter(use: str) -> Doc:
        # Documents from before `use` existed are signing keys.
        return {"use": use} if use != "sig" else {"use": {"$in": ["sig", None]}}

    def add_key(self, key: KeyRecord) -> None:
        self._insert(self._keys, _key_doc(key))

    def promote_key_if(
        self, next_kid: str, *, current: str | None, new_next: KeyRecord, at: datetime
    ) -> bool:
        """The CAS is NEXT -> CURRENT on `next_kid`: of concurrent promoters only one flips
        it. The expectation on the current key is checked before (a promoter reads current
        and next together, so a stale one also names a next key that is no longer NEXT);
        retiring the old key and inserting `new_next` after the CAS are idempotent."""
        at = ms(at)
        nxt = _opt(KeyRecord, self._keys.find_one({"_id": next_kid}))
        if nxt is None or nxt.state is not KeyState.NEXT:
            return False
        currents = [
            d["_id"]
            for d in self._keys.find(
                {**self._use_filter(nxt.use), "state": KeyState.CURRENT.value}, {"_id": 1}
            )
        ]
        if currents != ([] if current is None else [current]):
            return False
        if self._keys.find_one({"_id": new_next.kid}, {"_id": 1}) is not None:
            raise AlreadyExists(f"keys: {new_next.kid!r} already stored")
        flipped = self._keys.update_one(
            {"_id": next_kid, "state": KeyState.NEXT.value},
            {"$set": {"state": KeyState.CURRENT.value, "activated_at": at}},
        )
        if flipped.modified_count == 0:
            return False
        if current is not None:
            self._keys.update_one(
                {"_id": current, "state": KeyState.CURRENT.value},
                {"$set": {"state": KeyState.RETIRED.value, "retired_at": at}},
            )
        doc = _key_doc(new_next)
        self._keys.update_one({"_id": doc["_id"]}, {"$setOnInsert": doc}, upsert=True)
        return True

    def retire_key(self, kid: str, at: datetime, drop_after: datetime) -> bool:
        drop_after = ms(drop_after)
        result = self._keys.update_one(
            {"_id": kid},
            {
                "$set": {
                    "state": KeyState.RETIRED.value,
                    "retired_at": ms(at),
                    "drop_after": drop_after,
                    "expire_at": drop_after,
                }
            },
        )
        return result.matched_count > 0

    def set_drop_after(self, kid: str, drop_after: datetime) -> None:
        drop_after = ms(drop_after)
        # The TTL field only on retired keys: a live key is never deleted by the server.
        self._keys.update_one(
            {"_id": kid, "state": KeyState.RETIRED.value},
            {"$set": {"drop_after": drop_after, "expire_at": drop_after}},
        )
        self._keys.update_one(
            {"_id": kid, "state": {"$ne": KeyState.RETIRED.value}},
            {"$set": {"drop_after": drop_after}},
        )

    # --- upstream token custody --------------------------------------------------------------
    def get_upstream_tokens(self, key: str) -> UpstreamTokenRecord | None:
        return _opt(UpstreamTokenRecord, self._upstream.find_one({"_id": key}))

    def put_upstream_tokens(self, record: UpstreamTokenRecord) -> None:
        doc = _doc(record, "key", upstream_gc_at(record))
        self._upstream.replace_one({"_id": record.key}, doc, upsert=True)

    def swap_upstream_tokens(self, expected_version: int, record: UpstreamTokenRecord) -> bool:
        if record.version != expected_version + 1:
            raise ValueError("record.version must be expected_version + 1")
        doc = _doc(record, "key", upstream_gc_at(record))
        result = self._upstream.replace_one({"_id": record.key, "version": expected_version}, doc)
        return result.matched_count > 0

    def delete_upstream_tokens(self, key: str) -> None:
        self._upstream.delete_one({"_id": key})

    # --- leases ---------------------------------------------------------------------------
    def try_lease(self, name: str, owner: str, now: datetime, ttl: timedelta) -> bool:
        now = ms(now)
        until = ms(now + ttl)
        try:
            # Matches a lease that is ours or expired; when none matches, the upsert tries
            # to insert `name` and a live lease of another owner makes that a duplicate.
            self._leases.update_one(
                {"_id": name, "$or": [{"owner": owner}, {"expires_at": {"$lte": now}}]},
                {
                    "$set": {
                        "owner": owner,
                        "expires_at": until,
                        "expire_at": until,
                        "schema": SCHEMA_VERSION,
                    }
                },
                upsert=True,
            )
        except DuplicateKeyError:
            return False
        return True

    def release_lease(self, name: str, owner: str) -> None:
        self._leases.delete_one({"_id": name, "owner": owner})

    # --- authorization codes -----------------------------------------------------------------
    def create_code(self, code: AuthCodeRecord) -> None:
        self._insert(self._codes, _doc(code, "code_hash", code.expires_at))

    def redeem_code(
        self, code_hash: str, now: datetime, start_family: FamilyStarter, *, feed_until: datetime
    ) -> tuple[AuthCodeRecord | None, bool]:
        """The CAS on the code document decides and names the family; the family's inserts
        follow (idempotent). A replay marks the code first and its caller revokes the
        family after; the first use re-reads the code after inserting the family. Of any
        interleaving of the two, at least one side sees the other: a replayed code's
        family is revoked even when the replay overtakes the inserts."""
        now = ms(now)
        current = self._codes.find_one({"_id": code_hash, "expires_at": {"$gt": now}})
        if current is None:
            return None, False
        if current.get("used_at") is None:
            family, first = start_family(from_doc(AuthCodeRecord, current))
            if first.family_id != family.family_id:
                raise ValueError("the first token belongs to another family")
            doc = self._codes.find_one_and_update(
                {"_id": code_hash, "used_at": None, "expires_at": {"$gt": now}},
                {"$set": {"used_at": now, "family_id": family.family_id}},
                return_document=ReturnDocument.AFTER,
            )
            if doc is not None:
                self._ensure_family(family, first)
                again = self._codes.find_one({"_id": code_hash}, {"replayed_at": 1})
                if again is not None and again.get("replayed_at") is not None:
                    self.revoke_family(family.family_id, now, "code_replay", feed_until=feed_until)
                return from_doc(AuthCodeRecord, doc), True
        self._codes.update_one(
            {"_id": code_hash, "replayed_at": None, "used_at": {"$ne": None}},
            {"$set": {"replayed_at": now}},
        )
        doc = self._codes.find_one({"_id": code_hash})
        if doc is None or doc["expires_at"] <= now:
            return None, False
        return from_doc(AuthCodeRecord, doc), False

    # --- App Session Launcher sign-ins ------------------------------------------------------------
    def create_app_session(self, record: AppSessionRecord) -> None:
        self._insert(self._app_sessions, _doc(record, "handle_hash", record.purge_at))

    def get_app_session(self, handle_hash: str) -> AppSessionRecord | None:
        return _opt(AppSessionRecord, self._app_sessions.find_one({"_id": handle_hash}))

    def claim_app_session_poll(self, handle_hash: str, now: datetime, until: datetime) -> bool:
        result = self._app_sessions.update_one(
            {"_id": handle_hash, "next_poll_at": {"$lte": ms(now)}},
            {"$set": {"next_poll_at": ms(until)}},
        )
        return result.modified_count > 0

    def set_app_session_state(
        self, handle_hash: str, expected: str, state: str, session_token: bytes | None
    ) -> bool:
        result = self._app_sessions.update_one(
            {"_id": handle_hash, "state": expected},
            {"$set": {"state": state, "session_token": session_token}},
        )
        return result.matched_count > 0

    # --- permission checks ----------------------------------------------------------------------
    def put_permission_check(self, record: PermissionCheckRecord) -> None:
        doc = _doc(record, "sid", record.expires_at)
        self._permission_checks.replace_one({"_id": record.sid}, doc, upsert=True)

    def get_permission_check(self, sid: str, now: datetime) -> PermissionCheckRecord | None:
        doc = self._permission_checks.find_one({"_id": sid, "expires_at": {"$gt": ms(now)}})
        return _opt(PermissionCheckRecord, doc)

    # --- device authorizations -------------------------------------------------------------------
    def create_device_code(self, record: DeviceCodeRecord) -> None:
        self._insert(self._device_codes, _doc(record, "device_code_hash", record.purge_at))

    def get_device_code(self, device_code_hash: str) -> DeviceCodeRecord | None:
        return _opt(DeviceCodeRecord, self._device_codes.find_one({"_id": device_code_hash}))

    def get_device_code_by_user_code(self, user_code_hash: str) -> DeviceCodeRecord | None:
        doc = self._device_codes.find_one({"user_code_hash": user_code_hash})
        return _opt(DeviceCodeRecord, doc)

    def decide_device_code(self, user_code_hash: str, status: str, sid: str, now: datetime) -> bool:
        result = self._device_codes.update_one(
            {"user_code_hash": user_code_hash, "status": "pending"},
            {"$set": {"status": status, "sid": sid, "decided_at": ms(now)}},
        )
        return result.modified_count > 0

    def touch_device_poll(
        self,
        device_code_hash: str,
        expected_last_poll_at: datetime | None,
        now: datetime,
        interval: int,
    ) -> bool:
        expected = None if expected_last_poll_at is None else ms(expected_last_poll_at)
        result = self._device_codes.update_one(
            {"_id": device_code_hash, "last_poll_at": expected},
            {"$set": {"last_poll_at": ms(now), "interval": interval}},
        )
        return result.modified_count > 0

    def redeem_device_code(self, device_code_hash: str, now: datetime) -> bool:
        ms(now)  # naive datetimes are refused here as everywhere
        result = self._device_codes.update_one(
            {"_id": device_code_hash, "status": "approved"}, {"$set": {"status": "used"}}
        )
        return result.modified_count > 0

    # --- counters -----------------------------------------------------------------------------
    def reserve(
        self, key: str, now: datetime, window: timedelta, limit: int
    ) -> CounterWindow | None:
        """One `find_one_and_update`: its filter matches an ended window or a live one under
        the limit, and its update pipeline restarts the first and counts in the second. A
        live window at the limit does not match, so the upsert tries to insert a second
        document with the same `_id` and the unique index refuses it (DuplicateKeyError):
        nothing is written. The same error also ends a race of two first inserts, so the
        loser tries once more; a second refusal means the window is full."""
        if limit < 1:
            raise ValueError("a counter limit is at least 1")
        now = ms(now)
        ended = now - window
        live = {"$gt": ["$window_start", ended]}
        update = [
            {
                "$set": {
                    "count": {"$cond": [live, {"$add": ["$count", 1]}, 1]},
                    "window_start": {"$cond": [live, "$window_start", now]},
                    "expires_at": {"$cond": [live, "$expires_at", now + window]},
                    "expire_at": {"$cond": [live, "$expire_at", now + window]},
                    "schema": SCHEMA_VERSION,
                }
            }
        ]
        query = {"_id": key, "$or": [{"window_start": {"$lte": ended}}, {"count": {"$lt": limit}}]}
        for _ in range(2):
            try:
                doc = self._counters.find_one_and_update(
                    query, update, upsert=True, return_document=ReturnDocument.AFTER
                )
            except DuplicateKeyError:
                continue
            assert doc is not None  # an upsert returning the document after always has one
            return CounterWindow(int(doc["count"]), doc["window_start"])
        return None

    def release(self, key: str, started: datetime) -> bool:
        result = self._counters.update_one(
            {"_id": key, "window_start": ms(started), "count": {"$gt": 0}}, {"$inc": {"count": -1}}
        )
        return result.modified_count == 1

    def read_counter(self, key: str, now: datetime, window: timedelta) -> CounterWindow | None:
        doc = self._counters.find_one({"_id": key, "window_start": {"$gt": ms(now) - window}})
        return None if doc is None else CounterWindow(int(doc["count"]), doc["window_start"])

    def reset_counter(self, key: str) -> None:
        self._counters.delete_one({"_id": key})

    def reset_counters(self, prefix: str) -> int:
        low, high = key_range(prefix)
        return int(self._counters.delete_many({"_id": {"$gte": low, "$lt": high}}).deleted_count)

    # --- access-token denylist ----------------------------------------------------------------
    def deny_access_token(self, jti: str, expires_at: datetime, *, at: datetime) -> None:
        expires_at = ms(expires_at)
        self._denylist.update_one(
            {"_id": jti},
            {
                "$max": {"expires_at": expires_at, "expire_at": expires_at},
                "$set": {"schema": SCHEMA_VERSION},
                "$setOnInsert": {"created_at": ms(at)},
            },
            upsert=True,
        )

    def is_access_token_denied(self, jti: str, now: datetime) -> bool:
        doc = self._denylist.find_one({"_id": jti, "expires_at": {"$gt": ms(now)}}, {"_id": 1})
        return doc is not None

    # --- administration: sessions by login ---------------------------------------------------
    def list_login_sessions(self, login: str, now: datetime) -> list[SessionRecord]:
        cursor = self._sessions.find(
            {"login": login, "revoked_at": None, "expires_at": {"$gt": ms(now)}}
        ).sort([("auth_time", -1), ("_id", -1)])
        return [from_doc(SessionRecord, d) for d in cursor]

    def refresh_activity(self, family_ids: Sequence[str]) -> dict[str, datetime]:
        ids = list(dict.fromkeys(family_ids))
        if not ids:
            return {}
        rows = self._tokens.aggregate(
            [
                {"$match": {"family_id": {"$in": ids}}},
                {"$group": {"_id": "$family_id", "last": {"$max": "$issued_at"}}},
            ]
        )
        return {r["_id"]: ms(_aware(r["last"])) for r in rows}

    # --- audit trail -------------------------------------------------------------------------
    def add_audit_events(self, events: Sequence[AuditRecord]) -> None:
        if not events:
            return
        docs = [_doc(e, "id", e.expires_at) for e in events]
        try:
            self._audit.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            # Ids already stored (a retried batch) are skipped; anything else is raised.
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != 11000 for e in errors):
                raise

    def list_audit_events(
        self, now: datetime, *, login: str | None = None, event: str | None = None, limit: int
    ) -> list[AuditRecord]:
        if limit < 1:
            raise ValueError("limit must be 1 or more")
        query: Doc = {"expires_at": {"$gt": ms(now)}}
        if login is not None:
            query["login"] = login
        if event is not None:
            query["event"] = event
        cursor = self._audit.find(query).sort("_id", -1).limit(limit)
        return [from_doc(AuditRecord, d) for d in cursor]

    def prune_audit_events(self, now: datetime, keep: int) -> int:
        removed = self._audit.delete_many({"expires_at": {"$lte": ms(now)}}).deleted_count
        if keep <= 0:
            return removed + self._audit.delete_many({}).deleted_count
        oldest_kept = list(self._audit.find({}, {"_id": 1}).sort("_id", -1).skip(keep - 1).limit(1))
        if oldest_kept:
            removed += self._audit.delete_many(
                {"_id": {"$lt": oldest_kept[0]["_id"]}}
            ).deleted_count
        return removed

    # --- revocation feed ------------------------------------------------------------------------
    def live_revocations(self, now: datetime) -> list[RevocationEntry]:
        now = ms(now)
        found: list[RevocationEntry] = []
        for kind, collection in (
            (RevocationKind.SESSION, self._sessions),
            (RevocationKind.FAMILY, self._families),
        ):
            for doc in collection.find(
                {"feed_until": {"$gt": now}}, {"_id": 1, "revoked_at": 1, "feed_until": 1}
            ):
                found.append(
                    RevocationEntry(
                        kind, doc["_id"], _aware(doc["revoked_at"]), _aware(doc["feed_until"])
                    )
                )
        for doc in self._denylist.find({"expires_at": {"$gt": now}}):
            # Denied before created_at was kept: as old as can be.
            created = doc.get("created_at")
            found.append(
                RevocationEntry(
                    RevocationKind.ACCESS_TOKEN,
                    doc["_id"],
                    _aware(created) if created is not None else EPOCH,
                    _aware(doc["expires_at"]),
                )
            )
        found.sort(key=lambda e: (e.created_at, e.kind.value, e.value))
        return found

    # --- back-channel logout outbox -------------------------------------------------------------
    def _copy_pending(self) -> None:
        for doc in self._sessions.find({"pending_notices._id": {"$exists": True}}, {"_id": 1}):
            self._copy_notices(doc["_id"])

    def claim_logout_notices(
        self, now: datetime, owner: str, lease: timedelta, limit: int
    ) -> list[LogoutNotice]:
        """Each claim is one `find_one_and_update` on one notice: of concurrent claimers
        exactly one sees it due and unleased. First, notices a revoking call left in its
        session document (it died before copying them) are copied."""
        now = ms(now)
        until = ms(now + lease)
        self._copy_pending()
        claimed: list[LogoutNotice] = []
        for _ in range(limit):
            doc = self._outbox.find_one_and_update(
                {
                    "done": False,
                    "due_at": {"$lte": now},
                    "$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}],
                },
                {"$set": {"lease_owner": owner, "lease_until": until}},
                sort=[("due_at", 1), ("_id", 1)],
                return_document=ReturnDocument.AFTER,
            )
            if doc is None:
                break
            claimed.append(from_doc(LogoutNotice, doc))
        return claimed

    def finish_logout_notice(self, notice: LogoutNotice) -> bool:
        result = self._outbox.update_one(
            {"_id": notice.notice_id, "lease_owner": notice.lease_owner, "done": False},
            {"$set": {"done": True, "lease_owner": None, "lease_until": None}},
        )
        return result.modified_count > 0

    def retry_logout_notice(self, notice: LogoutNotice, due_at: datetime, error: str) -> bool:
        result = self._outbox.update_one(
            {"_id": notice.notice_id, "lease_owner": notice.lease_owner, "done": False},
            {
                "$set": {
                    "due_at": ms(due_at),
                    "last_error": error,
                    "lease_owner": None,
                    "lease_until": None,
                },
                "$inc": {"attempts": 1},
            },
        )
        return result.modified_count > 0

    def pending_logout_notices(self) -> list[LogoutNotice]:
        self._copy_pending()
        cursor = self._outbox.find({"done": False}).sort([("created_at", 1), ("_id", 1)])
        return [from_doc(LogoutNotice, d) for d in cursor]

    # --- watermarks ---------------------------------------------------------------------------
    def get_watermark(self, name: str) -> int | None:
        doc = self._meta.find_one({"_id": f"watermark:{name}"})
        return None if doc is None else int(doc["value"])

    def raise_watermark(self, name: str, value: int) -> int:
        doc = self._meta.find_one_and_update(
            {"_id": f"watermark:{name}"},
            {"$max": {"value": int(value)}, "$set": {"schema": SCHEMA_VERSION}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert doc is not None  # an upsert returning the document after it
        return int(doc["value"])


def _from_url(url: str) -> MongoStore:
    return MongoStore(url)


register_backend("mongodb", _from_url)
register_backend("mongodb+srv", _from_url)
