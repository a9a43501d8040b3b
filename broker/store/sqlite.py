"""SQLite backend: one file, WAL mode, one connection per thread.

URL: `sqlite:///relative/path.db` or `sqlite:////absolute/path.db`.

Every record type has a table whose columns are the record's fields (datetimes as integer
epoch milliseconds, tuples and dicts as JSON text, enums as text) plus `schema`. Opening
the store creates missing tables and adds missing columns, so a file written by an older
version opens; readers fill defaults for what older rows lack (`_codec`).

Compare-and-swap: a single conditional statement whose rowcount decides (leases, upstream
custody, counters), or one short `BEGIN IMMEDIATE` transaction where several rows move
together (refresh claims, code redemption, key promotion, session revocation, bootstrap). BEGIN
IMMEDIATE takes the write lock up front, so the read that decides and the writes that
follow cannot interleave with another writer, in this process or another.

Revocation entries live in their own `revocations` table, one row per (kind, value),
inserted by the transaction that revokes the session or family or denylists the jti; the
back-channel logout outbox (`logout_outbox`) is filled by the session's revoking
transaction too (see the package docstring).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from broker.store import (
    AlreadyExists,
    FamilyStarter,
    StoreError,
    StoreUnavailable,
    register_backend,
)
from broker.store._codec import (
    StoredFormError,
    field_names,
    from_ms,
    from_row,
    key_range,
    opt_ms,
    specs,
    sql_type,
    to_ms,
    to_row,
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

BUSY_TIMEOUT_S = 5.0
_MS = timedelta(milliseconds=1)

# table -> (record class, primary key, extra column declarations)
_RECORD_TABLES: dict[str, tuple[type[Any], str, tuple[str, ...]]] = {
    "clients": (ClientRecord, "client_id", ()),
    "sessions": (SessionRecord, "sid", ()),
    "families": (FamilyRecord, "family_id", ()),
    "refresh_tokens": (
        RefreshTokenRecord,
        "jti",
        ('FOREIGN KEY ("family_id") REFERENCES families ("family_id") ON DELETE CASCADE',),
    ),
    "keys": (KeyRecord, "kid", ()),
    "upstream_tokens": (UpstreamTokenRecord, "key", ('"gc_at" INTEGER',)),
    "codes": (AuthCodeRecord, "code_hash", ()),
    "audit_events": (AuditRecord, "id", ()),
    "app_sessions": (AppSessionRecord, "handle_hash", ()),
    "device_codes": (DeviceCodeRecord, "device_code_hash", ()),
    "permission_checks": (PermissionCheckRecord, "sid", ()),
    "logout_outbox": (LogoutNotice, "notice_id", ()),
}

_OTHER_DDL = (
    'CREATE TABLE IF NOT EXISTS counters ("key" TEXT PRIMARY KEY NOT NULL,'
    " window_start INTEGER NOT NULL, count INTEGER NOT NULL, expires_at INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS denylist (jti TEXT PRIMARY KEY NOT NULL,"
    " expires_at INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY NOT NULL, owner TEXT NOT NULL,"
    " expires_at INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS revocations (kind TEXT NOT NULL, value TEXT NOT NULL,"
    " created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, PRIMARY KEY (kind, value))",
    "CREATE TABLE IF NOT EXISTS watermarks (name TEXT PRIMARY KEY NOT NULL,"
    " value INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS revocations_expiry ON revocations (expires_at)",
    "CREATE INDEX IF NOT EXISTS logout_outbox_due ON logout_outbox (due_at)",
    "CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id)",
    "CREATE UNIQUE INDEX IF NOT EXISTS sessions_cookie ON sessions (cookie_hash)"
    " WHERE cookie_hash IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions (expires_at)",
    "CREATE INDEX IF NOT EXISTS families_sid ON families (sid)",
    "CREATE INDEX IF NOT EXISTS families_expiry ON families (expires_at)",
    "CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens (family_id)",
    "CREATE INDEX IF NOT EXISTS refresh_tokens_expiry ON refresh_tokens (expires_at)",
    "CREATE INDEX IF NOT EXISTS codes_expiry ON codes (expires_at)",
    "CREATE INDEX IF NOT EXISTS sessions_login ON sessions (login)",
    "CREATE INDEX IF NOT EXISTS audit_events_login ON audit_events (login, id)",
    "CREATE INDEX IF NOT EXISTS audit_events_event ON audit_events (event, id)",
    "CREATE INDEX IF NOT EXISTS audit_events_expiry ON audit_events (expires_at)",
    "CREATE INDEX IF NOT EXISTS app_sessions_purge ON app_sessions (purge_at)",
    "CREATE UNIQUE INDEX IF NOT EXISTS device_codes_user_code ON device_codes (user_code_hash)",
    "CREATE INDEX IF NOT EXISTS device_codes_purge ON device_codes (purge_at)",
    "CREATE INDEX IF NOT EXISTS permission_checks_expiry ON permission_checks (expires_at)",
)


def _insert_sql(table: str, cls: type[Any], extra: tuple[str, ...] = (), verb: str = "") -> str:
    cols = [*field_names(cls), "schema", *extra]
    names = ", ".join(f'"{c}"' for c in cols)
    values = ", ".join(f":{c}" for c in cols)
    # Identifiers come from the record classes, never from input.
    return f"INSERT {verb} INTO {table} ({names}) VALUES ({values})"  # noqa: S608


_INSERT = {t: _insert_sql(t, cls) for t, (cls, _, _) in _RECORD_TABLES.items()}
_REPLACE_CLIENT = _insert_sql("clients", ClientRecord, verb="OR REPLACE")
_REPLACE_UPSTREAM = _insert_sql("upstream_tokens", UpstreamTokenRecord, ("gc_at",), "OR REPLACE")
_ADD_AUDIT = _insert_sql("audit_events", AuditRecord, verb="OR IGNORE")
_PUT_PERMISSION_CHECK = _insert_sql("permission_checks", PermissionCheckRecord, verb="OR REPLACE")


def _prefixed(alias: str, cls: type[Any]) -> list[str]:
    return [f'{alias}."{c}" AS "{alias}_{c}"' for c in (*field_names(cls), "schema")]


# The refresh grant's read: one statement instead of three, since every sqlite3 call
# from a worker thread releases and re-takes the GIL, a hand-off when the loop is busy.
_CHAIN_SELECT = (
    "SELECT "  # noqa: S608 (identifiers come from the record classes)
    + ", ".join(
        [
            *_prefixed("t", RefreshTokenRecord),
            *_prefixed("f", FamilyRecord),
            *_prefixed("s", SessionRecord),
        ]
    )
    + " FROM refresh_tokens t JOIN families f ON f.family_id = t.family_id"
    " JOIN sessions s ON s.sid = f.sid WHERE t.jti = ?"
)

# `CounterStore.reserve`: restart an ended window, count in a live one under the limit.
_RESERVE = (
    'INSERT INTO counters ("key", window_start, count, expires_at) VALUES (:key, :t, 1, :t + :w)'
    ' ON CONFLICT ("key") DO UPDATE SET'
    " count = CASE WHEN counters.window_start + :w > :t THEN counters.count + 1 ELSE 1 END,"
    " window_start = CASE WHEN counters.window_start + :w > :t"
    " THEN counters.window_start ELSE :t END,"
    " expires_at = CASE WHEN counters.window_start + :w > :t"
    " THEN counters.window_start + :w ELSE :t + :w END"
    " WHERE counters.window_start + :w <= :t OR counters.count < :limit"
    " RETURNING count, window_start"
)

# A jti denied twice keeps its first created_at and the later expiry; a session or family
# is revoked once (its compare-and-swap decides), so its entry is written once.
_ENTRY_UPSERT = (
    "INSERT INTO revocations (kind, value, created_at, expires_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (kind, value) DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)"
)

_UNAVAILABLE_MARKERS = ("locked", "busy", "i/o", "unable to open", "disk")


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {d[0]: v for d, v in zip(cursor.description, row, strict=True)}


def _guard(fn: Callable[P, T]) -> Callable[P, T]:
    """Map SQLite's lock/I-O failures to StoreUnavailable and corrupt rows to StoreError."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except sqlite3.OperationalError as exc:
            if any(m in str(exc).lower() for m in _UNAVAILABLE_MARKERS):
                raise StoreUnavailable(f"sqlite: {exc}") from exc
            raise StoreError(f"sqlite: {exc}") from exc
        except StoredFormError as exc:
            raise StoreError(str(exc)) from exc

    return wrapper


def _guard_all(cls: type[T]) -> type[T]:
    for name, value in list(vars(cls).items()):
        if callable(value) and not name.startswith("_"):
            setattr(cls, name, _guard(value))
    return cls


class _Holder:
    """Owns one thread's connection; closing it when the thread (and its local) goes."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn


@_guard_all
class SQLiteStore:
    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = BUSY_TIMEOUT_S
    ) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._holders: weakref.WeakSet[_Holder] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._create_file()
        try:
            self._migrate()
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"sqlite: cannot open {self.path}: {exc}") from exc

    # --- connections ------------------------------------------------------------------------
    def _create_file(self) -> None:
        if self.path.exists():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread=False only so that close() may close every thread's
        # connection; each connection is otherwise used by the thread that opened it.
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.row_factory = _dict_row
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _conn(self) -> sqlite3.Connection:
        holder: _Holder | None = getattr(self._local, "holder", None)
        if holder is None:
            conn = self._connect()
            holder = _Holder(conn)
            weakref.finalize(holder, conn.close)
            with self._lock:
                self._holders.add(holder)
            self._local.holder = holder
        return holder.conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        # Threads of this process queue on a lock rather than on SQLite's busy handler,
        # which polls with sleeps: under a burst of refreshes that polling, not the work,
        # set the latency. Other processes still meet at BEGIN IMMEDIATE.
        conn = self._conn()
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._tx() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_meta"
                " (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL)"
            )
            row = conn.execute("SELECT value FROM schema_meta WHERE name = 'version'").fetchone()
            if row is not None and row["value"] > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {row['value']}; this broker reads up to"
                    f" {SCHEMA_VERSION}: upgrade the broker"
                )
            for table, (cls, pk, extra) in _RECORD_TABLES.items():
                cols = []
                for spec in specs(cls):
                    decl = f'"{spec.name}" {sql_type(spec)}'.rstrip()
                    if spec.name == pk:
                        decl += " PRIMARY KEY NOT NULL"
                    cols.append(decl)
                cols.append('"schema" INTEGER')
                constraints = [e for e in extra if e.startswith("FOREIGN")]
                extra_cols = [e for e in extra if not e.startswith("FOREIGN")]
                body = ", ".join([*cols, *extra_cols, *constraints])
                conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({body})")
                # A table written by an older version: add the columns it lacks (NULL in
                # old rows; readers fill the record defaults).
                present = {r["name"] for r in conn.execute(f"PRAGMA table_info({table})")}
                for decl in [*cols, *extra_cols]:
                    if decl.split()[0].strip('"') not in present:
                        column = decl.replace(" PRIMARY KEY NOT NULL", "")
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
            for ddl in _OTHER_DDL:
                conn.execute(ddl)
            conn.execute(
                "INSERT INTO schema_meta (name, value) VALUES ('version', ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (SCHEMA_VERSION,),
            )

    def _one(self, sql: str, params: Any = ()) -> dict[str, Any] | None:
        row: dict[str, Any] | None = self._conn().execute(sql, params).fetchone()
        return row

    def _insert(self, conn: sqlite3.Connection, table: str, record: Any) -> None:
        try:
            conn.execute(_INSERT[table], to_row(record))
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(f"{table}: {exc}") from exc

    # --- lifecycle -----------------------------------------------------------------------
    def ping(self) -> None:
        self._conn().execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            holders = list(self._holders)
            self._holders = weakref.WeakSet()
            self._local = threading.local()
        for holder in holders:
            holder.conn.close()

    def gc(self, now: datetime) -> int:
        t = to_ms(now)
        statements = (
            "DELETE FROM refresh_tokens WHERE expires_at <= :t OR family_id IN"
            " (SELECT family_id FROM families WHERE expires_at <= :t OR sid IN"
            " (SELECT sid FROM sessions WHERE expires_at <= :t))",
            "DELETE FROM families WHERE expires_at <= :t OR sid IN"
            " (SELECT sid FROM sessions WHERE expires_at <= :t)",
            "DELETE FROM sessions WHERE expires_at <= :t",
            "DELETE FROM codes WHERE expires_at <= :t",
            "DELETE FROM counters WHERE expires_at <= :t",
            "DELETE FROM denylist WHERE expires_at <= :t",
            "DELETE FROM revocations WHERE expires_at <= :t",
            "DELETE FROM logout_outbox WHERE created_at <= :t - :keep",
            "DELETE FROM leases WHERE expires_at <= :t",
            "DELETE FROM keys WHERE state = 'retired' AND drop_after <= :t",
            "DELETE FROM upstream_tokens WHERE gc_at <= :t",
            "DELETE FROM app_sessions WHERE purge_at <= :t",
            "DELETE FROM device_codes WHERE purge_at <= :t",
            "DELETE FROM permission_checks WHERE expires_at <= :t",
        )
        removed = 0
        with self._tx() as conn:
            for sql in statements:
                count = conn.execute(sql, {"t": t, "keep": LOGOUT_NOTICE_RETENTION // _MS}).rowcount
                # Revocation entries are not counted: on MongoDB they are part of the
                # records above, so the count stays the same on every backend.
                removed += 0 if "revocations" in sql else count
        return removed

    # --- clients -------------------------------------------------------------------------
    def put_client(self, client: ClientRecord) -> None:
        self._conn().execute(_REPLACE_CLIENT, to_row(client))

    def get_client(self, client_id: str) -> ClientRecord | None:
        row = self._one("SELECT * FROM clients WHERE client_id = ?", (client_id,))
        return None if row is None else from_row(ClientRecord, row)

    def list_clients(self) -> list[ClientRecord]:
        rows = self._conn().execute("SELECT * FROM clients ORDER BY client_id").fetchall()
        return [from_row(ClientRecord, r) for r in rows]

    def delete_client(self, client_id: str) -> bool:
        cur = self._conn().execute("DELETE FROM clients WHERE client_id = ?", (client_id,))
        return cur.rowcount > 0

    # --- sessions ------------------------------------------------------------------------
    def create_session(self, session: SessionRecord) -> None:
        self._insert(self._conn(), "sessions", session)

    def get_session(self, sid: str) -> SessionRecord | None:
        row = self._one("SELECT * FROM sessions WHERE sid = ?", (sid,))
        return None if row is None else from_row(SessionRecord, row)

    def get_session_by_cookie(self, cookie_hash: str) -> SessionRecord | None:
        row = self._one("SELECT * FROM sessions WHERE cookie_hash = ?", (cookie_hash,))
        return None if row is None else from_row(SessionRecord, row)

    def mark_session_checked(self, sid: str, at: datetime) -> None:
        self._conn().execute(
            "UPDATE sessions SET last_checked_at = ? WHERE sid = ? AND last_checked_at < ?",
            (to_ms(at), sid, to_ms(at)),
        )

    def list_user_sessions(self, user_id: int) -> list[SessionRecord]:
        rows = self._conn().execute(
            "SELECT * FROM sessions WHERE user_id = ? ORDER BY auth_time, sid", (user_id,)
        )
        return [from_row(SessionRecord, r) for r in rows.fetchall()]

    def revoke_session(
        self,
        sid: str,
        at: datetime,
        reason: str,
        *,
        feed_until: datetime,
        notices: Sequence[LogoutNotice] = (),
    ) -> bool:
        t = to_ms(at)
        with self._tx() as conn:
            won = conn.execute(
                "UPDATE sessions SET revoked_at = ? WHERE sid = ? AND revoked_at IS NULL", (t, sid)
            ).rowcount
            conn.execute(
                "UPDATE families SET revoked_at = ?, revoked_reason = ?"
                " WHERE sid = ? AND revoked_at IS NULL",
                (t, reason, sid),
            )
            if won:
                entry = (RevocationKind.SESSION.value, sid, t, to_ms(feed_until))
                conn.execute(_ENTRY_UPSERT, entry)
                for notice in notices:
                    self._insert(conn, "logout_outbox", notice)
        return won > 0

    # --- refresh families and tokens -------------------------------------------------------
    def create_family(self, family: FamilyRecord, first: RefreshTokenRecord) -> None:
        if first.family_id != family.family_id:
            raise ValueError("the first token belongs to another family")
        with self._tx() as conn:
            self._insert(conn, "families", family)
            self._insert(conn, "refresh_tokens", first)

    def get_family(self, family_id: str) -> FamilyRecord | None:
        row = self._one("SELECT * FROM families WHERE family_id = ?", (family_id,))
        return None if row is None else from_row(FamilyRecord, row)

    def list_families(self, sid: str) -> list[FamilyRecord]:
        rows = self._conn().execute(
            "SELECT * FROM families WHERE sid = ? ORDER BY created_at, family_id", (sid,)
        )
        return [from_row(FamilyRecord, r) for r in rows.fetchall()]

    def revoke_family(
        self, family_id: str, at: datetime, reason: str, *, feed_until: datetime
    ) -> bool:
        t = to_ms(at)
        with self._tx() as conn:
            won = conn.execute(
                "UPDATE families SET revoked_at = ?, revoked_reason = ?"
                " WHERE family_id = ? AND revoked_at IS NULL",
                (t, reason, family_id),
            ).rowcount
            if won:
                conn.execute(
                    _ENTRY_UPSERT, (RevocationKind.FAMILY.value, family_id, t, to_ms(feed_until))
                )
        return won > 0

    def get_refresh_token(self, jti: str) -> RefreshTokenRecord | None:
        row = self._one("SELECT * FROM refresh_tokens WHERE jti = ?", (jti,))
        return None if row is None else from_row(RefreshTokenRecord, row)

    def get_refresh_chain(self, jti: str) -> RefreshChain | None:
        row = self._one(_CHAIN_SELECT, (jti,))
        if row is None:
            return None
        parts: dict[str, dict[str, Any]] = {"t": {}, "f": {}, "s": {}}
        for name, value in row.items():
            parts[name[0]][name[2:]] = value
        return RefreshChain(
            from_row(RefreshTokenRecord, parts["t"]),
            from_row(FamilyRecord, parts["f"]),
            from_row(SessionRecord, parts["s"]),
        )

    def claim_refresh(self, parent_jti: str, successor: RefreshTokenRecord, now: datetime) -> Claim:
        t = to_ms(now)
        with self._tx() as conn:
            won = conn.execute(
                "UPDATE refresh_tokens SET used_at = ?, successor_jti = ?"
                " WHERE jti = ? AND used_at IS NULL",
                (t, successor.jti, parent_jti),
            ).rowcount
            if won:
                self._insert(conn, "refresh_tokens", successor)
                return Claimed()
            row = conn.execute(
                "SELECT p.used_at AS p_used_at, s.* FROM refresh_tokens p"
                " LEFT JOIN refresh_tokens s ON s.jti = p.successor_jti WHERE p.jti = ?",
                (parent_jti,),
            ).fetchone()
        if row is None:
            raise ValueError(f"no refresh token {parent_jti!r} to claim")
        used_at = row.pop("p_used_at")
        earlier = None if row["jti"] is None else from_row(RefreshTokenRecord, row)
        return AlreadyClaimed(from_ms(used_at), earlier)

    # --- signing keys --------------------------------------------------------------------
    def list_keys(self) -> list[KeyRecord]:
        return self._list_keys(self._conn())

    @staticmethod
    def _list_keys(conn: sqlite3.Connection) -> list[KeyRecord]:
        rows = conn.execute("SELECT * FROM keys ORDER BY created_at, kid").fetchall()
        return [from_row(KeyRecord, r) for r in rows]

    def bootstrap_keys(self, keys: list[KeyRecord]) -> list[KeyRecord]:
        with self._tx() as conn:
            for use in dict.fromkeys(k.use for k in keys):
                if conn.execute("SELECT 1 FROM keys WHERE use = ?", (use,)).fetchone():
                    continue
                for key in keys:
                    if key.use == use:
                        self._insert(conn, "keys", key)
            return self._list_keys(conn)

    def add_key(self, key: KeyRecord) -> None:
        self._insert(self._conn(), "keys", key)

    def promote_key_if(
        self, next_kid: str, *, current: str | None, new_next: KeyRecord, at: datetime
    ) -> bool:
        t = to_ms(at)
        with self._tx() as conn:
            nxt = conn.execute("SELECT use, state FROM keys WHERE kid = ?", (next_kid,)).fetchone()
            if nxt is None or nxt["state"] != KeyState.NEXT:
                return False
            currents = [
                r["kid"]
                for r in conn.execute(
                    "SELECT kid FROM keys WHERE use = ? AND state = ?",
                    (nxt["use"], KeyState.CURRENT.value),
                )
            ]
            if currents != ([] if current is None else [current]):
                return False
            if current is not None:
                conn.execute(
                    "UPDATE keys SET state = ?, retired_at = ? WHERE kid = ?",
                    (KeyState.RETIRED.value, t, current),
                )
            conn.execute(
                "UPDATE keys SET state = ?, activated_at = ? WHERE kid = ?",
                (KeyState.CURRENT.value, t, next_kid),
            )
            self._insert(conn, "keys", new_next)
            return True

    def retire_key(self, kid: str, at: datetime, drop_after: datetime) -> bool:
        cur = self._conn().execute(
            "UPDATE keys SET state = ?, retired_at = ?, drop_after = ? WHERE kid = ?",
            (KeyState.RETIRED.value, to_ms(at), to_ms(drop_after), kid),
        )
        return cur.rowcount > 0

    def set_drop_after(self, kid: str, drop_after: datetime) -> None:
        self._conn().execute(
            "UPDATE keys SET drop_after = ? WHERE kid = ?", (to_ms(drop_after), kid)
        )

    # --- upstream token custody --------------------------------------------------------------
    @staticmethod
    def _upstream_row(record: UpstreamTokenRecord) -> dict[str, Any]:
        row = to_row(record)
        row["gc_at"] = opt_ms(upstream_gc_at(record))
        return row

    def get_upstream_tokens(self, key: str) -> UpstreamTokenRecord | None:
        row = self._one('SELECT * FROM upstream_tokens WHERE "key" = ?', (key,))
        return None if row is None else from_row(UpstreamTokenRecord, row)

    def put_upstream_tokens(self, record: UpstreamTokenRecord) -> None:
        self._conn().execute(_REPLACE_UPSTREAM, self._upstream_row(record))

    def swap_upstream_tokens(self, expected_version: int, record: UpstreamTokenRecord) -> bool:
        if record.version != expected_version + 1:
            raise ValueError("record.version must be expected_version + 1")
        row = self._upstream_row(record)
        assignments = ", ".join(f'"{c}" = :{c}' for c in row if c != "key")
        cur = self._conn().execute(
            f"UPDATE upstream_tokens SET {assignments}"  # noqa: S608 (columns from the record)
            ' WHERE "key" = :key AND version = :expected',
            {**row, "expected": expected_version},
        )
        return cur.rowcount > 0

    def delete_upstream_tokens(self, key: str) -> None:
        self._conn().execute('DELETE FROM upstream_tokens WHERE "key" = ?', (key,))

    # --- leases ---------------------------------------------------------------------------
    def try_lease(self, name: str, owner: str, now: datetime, ttl: timedelta) -> bool:
        t = to_ms(now)
        cur = self._conn().execute(
            "INSERT INTO leases (name, owner, expires_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner,"
            " expires_at = excluded.expires_at"
            " WHERE leases.owner = excluded.owner OR leases.expires_at <= ?",
            (name, owner, t + ttl // _MS, t),
        )
        return cur.rowcount > 0

    def release_lease(self, name: str, owner: str) -> None:
        self._conn().execute("DELETE FROM leases WHERE name = ? AND owner = ?", (name, owner))

    # --- authorization codes -----------------------------------------------------------------
    def create_code(self, code: AuthCodeRecord) -> None:
        self._insert(self._conn(), "codes", code)

    def redeem_code(
        self, code_hash: str, now: datetime, start_family: FamilyStarter, *, feed_until: datetime
    ) -> tuple[AuthCodeRecord | None, bool]:
        # feed_until is unused: one transaction covers redemption and the family's start,
        # so this backend never has to revoke a family on its own here.
        t = to_ms(now)
        with self._tx() as conn:
            row = conn.execute(
                "SELECT * FROM codes WHERE code_hash = ? AND expires_at > ?", (code_hash, t)
            ).fetchone()
            if row is None:
                return None, False
            record = from_row(AuthCodeRecord, row)
            if record.used_at is None:
                family, first = start_family(record)
                if first.family_id != family.family_id:
                    raise ValueError("the first token belongs to another family")
                conn.execute(
                    "UPDATE codes SET used_at = ?, family_id = ? WHERE code_hash = ?",
                    (t, family.family_id, code_hash),
                )
                self._insert(conn, "families", family)
                self._insert(conn, "refresh_tokens", first)
                return replace(record, used_at=ms(now), family_id=family.family_id), True
            if record.replayed_at is None:
                conn.execute("UPDATE codes SET replayed_at = ? WHERE code_hash = ?", (t, code_hash))
                record = replace(record, replayed_at=ms(now))
            return record, False

    # --- App Session Launcher sign-ins ------------------------------------------------------------
    def create_app_session(self, record: AppSessionRecord) -> None:
        self._insert(self._conn(), "app_sessions", record)

    def get_app_session(self, handle_hash: str) -> AppSessionRecord | None:
        row = self._one("SELECT * FROM app_sessions WHERE handle_hash = ?", (handle_hash,))
        return None if row is None else from_row(AppSessionRecord, row)

    def claim_app_session_poll(self, handle_hash: str, now: datetime, until: datetime) -> bool:
        cur = self._conn().execute(
            "UPDATE app_sessions SET next_poll_at = ? WHERE handle_hash = ? AND next_poll_at <= ?",
            (to_ms(until), handle_hash, to_ms(now)),
        )
        return cur.rowcount > 0

    def set_app_session_state(
        self, handle_hash: str, expected: str, state: str, session_token: bytes | None
    ) -> bool:
        cur = self._conn().execute(
            "UPDATE app_sessions SET state = ?, session_token = ?"
            " WHERE handle_hash = ? AND state = ?",
            (state, session_token, handle_hash, expected),
        )
        return cur.rowcount > 0

    # --- device authorizations -------------------------------------------------------------------
    def create_device_code(self, record: DeviceCodeRecord) -> None:
        self._insert(self._conn(), "device_codes", record)

    def get_device_code(self, device_code_hash: str) -> DeviceCodeRecord | None:
        row = self._one(
            "SELECT * FROM device_codes WHERE device_code_hash = ?", (device_code_hash,)
        )
        return None if row is None else from_row(DeviceCodeRecord, row)

    def get_device_code_by_user_code(self, user_code_hash: str) -> DeviceCodeRecord | None:
        row = self._one("SELECT * FROM device_codes WHERE user_code_hash = ?", (user_code_hash,))
        return None if row is None else from_row(DeviceCodeRecord, row)

    def decide_device_code(self, user_code_hash: str, status: str, sid: str, now: datetime) -> bool:
        cur = self._conn().execute(
            "UPDATE device_codes SET status = ?, sid = ?, decided_at = ?"
            " WHERE user_code_hash = ? AND status = 'pending'",
            (status, sid, to_ms(now), user_code_hash),
        )
        return cur.rowcount > 0

    def touch_device_poll(
        self,
        device_code_hash: str,
        expected_last_poll_at: datetime | None,
        now: datetime,
        interval: int,
    ) -> bool:
        # `IS` compares NULL too: "never polled" is a value the swap can expect.
        cur = self._conn().execute(
            'UPDATE device_codes SET last_poll_at = ?, "interval" = ?'
            " WHERE device_code_hash = ? AND last_poll_at IS ?",
            (to_ms(now), interval, device_code_hash, opt_ms(expected_last_poll_at)),
        )
        return cur.rowcount > 0

    def redeem_device_code(self, device_code_hash: str, now: datetime) -> bool:
        to_ms(now)  # naive datetimes are refused here as everywhere
        cur = self._conn().execute(
            "UPDATE device_codes SET status = 'used'"
            " WHERE device_code_hash = ? AND status = 'approved'",
            (device_code_hash,),
        )
        return cur.rowcount > 0

    # --- permission checks ------------------------------------------------------------------
    def put_permission_check(self, record: PermissionCheckRecord) -> None:
        self._conn().execute(_PUT_PERMISSION_CHECK, to_row(record))

    def get_permission_check(self, sid: str, now: datetime) -> PermissionCheckRecord | None:
        row = self._one(
            "SELECT * FROM permission_checks WHERE sid = ? AND expires_at > ?", (sid, to_ms(now))
        )
        return None if row is None else from_row(PermissionCheckRecord, row)

    # --- counters -----------------------------------------------------------------------------
    def reserve(
        self, key: str, now: datetime, window: timedelta, limit: int
    ) -> CounterWindow | None:
        # One UPSERT decides: its WHERE lets the update through only for an ended window or
        # a live one under the limit; otherwise no row changes and RETURNING yields none.
        if limit < 1:
            raise ValueError("a counter limit is at least 1")
        rows = (
            self._conn()
            .execute(_RESERVE, {"key": key, "t": to_ms(now), "w": window // _MS, "limit": limit})
            .fetchall()
        )
        if not rows:
            return None
        return CounterWindow(int(rows[0]["count"]), from_ms(rows[0]["window_start"]))

    def release(self, key: str, started: datetime) -> bool:
        cursor = self._conn().execute(
            'UPDATE counters SET count = count - 1 WHERE "key" = ? AND window_start = ?'
            " AND count > 0",
            (key, to_ms(started)),
        )
        return cursor.rowcount == 1

    def read_counter(self, key: str, now: datetime, window: timedelta) -> CounterWindow | None:
        row = self._one(
            'SELECT count, window_start FROM counters WHERE "key" = ? AND window_start + ? > ?',
            (key, window // _MS, to_ms(now)),
        )
        return (
            None if row is None else CounterWindow(int(row["count"]), from_ms(row["window_start"]))
        )

    def reset_counter(self, key: str) -> None:
        self._conn().execute('DELETE FROM counters WHERE "key" = ?', (key,))

    def reset_counters(self, prefix: str) -> int:
        low, high = key_range(prefix)
        cursor = self._conn().execute(
            'DELETE FROM counters WHERE "key" >= ? AND "key" < ?', (low, high)
        )
        return cursor.rowcount

    # --- access-token denylist ----------------------------------------------------------------
    def deny_access_token(self, jti: str, expires_at: datetime, *, at: datetime) -> None:
        until = to_ms(expires_at)
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO denylist (jti, expires_at) VALUES (?, ?) ON CONFLICT (jti)"
                " DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)",
                (jti, until),
            )
            conn.execute(_ENTRY_UPSERT, (RevocationKind.ACCESS_TOKEN.value, jti, to_ms(at), until))

    def is_access_token_denied(self, jti: str, now: datetime) -> bool:
        row = self._one(
            "SELECT 1 AS hit FROM denylist WHERE jti = ? AND expires_at > ?", (jti, to_ms(now))
        )
        return row is not None

    # --- administration: sessions by login ---------------------------------------------------
    def list_login_sessions(self, login: str, now: datetime) -> list[SessionRecord]:
        rows = self._conn().execute(
            "SELECT * FROM sessions WHERE login = ? AND revoked_at IS NULL AND expires_at > ?"
            " ORDER BY auth_time DESC, sid DESC",
            (login, to_ms(now)),
        )
        return [from_row(SessionRecord, r) for r in rows.fetchall()]

    def refresh_activity(self, family_ids: Sequence[str]) -> dict[str, datetime]:
        ids = list(dict.fromkeys(family_ids))
        if not ids:
            return {}
        marks = ", ".join("?" for _ in ids)
        rows = self._conn().execute(
            "SELECT family_id, MAX(issued_at) AS last FROM refresh_tokens"  # noqa: S608
            f" WHERE family_id IN ({marks}) GROUP BY family_id",
            ids,
        )
        return {r["family_id"]: from_ms(r["last"]) for r in rows.fetchall()}

    # --- audit trail -------------------------------------------------------------------------
    def add_audit_events(self, events: Sequence[AuditRecord]) -> None:
        if not events:
            return
        with self._tx() as conn:
            conn.executemany(_ADD_AUDIT, [to_row(e) for e in events])

    def list_audit_events(
        self, now: datetime, *, login: str | None = None, event: str | None = None, limit: int
    ) -> list[AuditRecord]:
        if limit < 1:
            raise ValueError("limit must be 1 or more")
        where: list[str] = ["expires_at > ?"]
        params: list[Any] = [to_ms(now)]
        if login is not None:
            where.append("login = ?")
            params.append(login)
        if event is not None:
            where.append("event = ?")
            params.append(event)
        rows = self._conn().execute(
            f"SELECT * FROM audit_events WHERE {' AND '.join(where)}"  # noqa: S608
            " ORDER BY id DESC LIMIT ?",
            [*params, limit],
        )
        return [from_row(AuditRecord, r) for r in rows.fetchall()]

    def prune_audit_events(self, now: datetime, keep: int) -> int:
        with self._tx() as conn:
            removed = conn.execute(
                "DELETE FROM audit_events WHERE expires_at <= ?", (to_ms(now),)
            ).rowcount
            if keep <= 0:
                return removed + conn.execute("DELETE FROM audit_events").rowcount
            # The newest `keep` stay: everything older than the keep-th newest goes (no row
            # when fewer are stored, and `id < NULL` deletes nothing).
            removed += conn.execute(
                "DELETE FROM audit_events WHERE id < (SELECT id FROM audit_events"
                " ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (keep - 1,),
            ).rowcount
        return removed

    # --- revocation feed ----------------------------------------------------------------------
    def live_revocations(self, now: datetime) -> list[RevocationEntry]:
        rows = self._conn().execute(
            "SELECT kind, value, created_at, expires_at FROM revocations WHERE expires_at > ?"
            " ORDER BY created_at, kind, value",
            (to_ms(now),),
        )
        return [
            RevocationEntry(
                RevocationKind(r["kind"]),
                r["value"],
                from_ms(r["created_at"]),
                from_ms(r["expires_at"]),
            )
            for r in rows.fetchall()
        ]

    # --- back-channel logout outbox -------------------------------------------------------------
    def claim_logout_notices(
        self, now: datetime, owner: str, lease: timedelta, limit: int
    ) -> list[LogoutNotice]:
        t = to_ms(now)
        due = "due_at <= :t AND (lease_until IS NULL OR lease_until <= :t)"
        # The common case, nothing due, costs a read and no write lock.
        if self._one(f"SELECT 1 AS due FROM logout_outbox WHERE {due} LIMIT 1", {"t": t}) is None:  # noqa: S608
            return []
        until = ms(now + lease)
        with self._tx() as conn:
            rows = conn.execute(
                f"SELECT * FROM logout_outbox WHERE {due}"  # noqa: S608
                " ORDER BY due_at, notice_id LIMIT :n",
                {"t": t, "n": limit},
            ).fetchall()
            claimed = []
            for row in rows:
                conn.execute(
                    "UPDATE logout_outbox SET lease_owner = ?, lease_until = ? WHERE notice_id = ?",
                    (owner, to_ms(until), row["notice_id"]),
                )
                notice = from_row(LogoutNotice, row)
                claimed.append(replace(notice, lease_owner=owner, lease_until=until))
        return claimed

    def finish_logout_notice(self, notice: LogoutNotice) -> bool:
        cur = self._conn().execute(
            "DELETE FROM logout_outbox WHERE notice_id = ? AND lease_owner = ?",
            (notice.notice_id, notice.lease_owner),
        )
        return cur.rowcount > 0

    def retry_logout_notice(self, notice: LogoutNotice, due_at: datetime, error: str) -> bool:
        cur = self._conn().execute(
            "UPDATE logout_outbox SET attempts = attempts + 1, due_at = ?, last_error = ?,"
            " lease_owner = NULL, lease_until = NULL WHERE notice_id = ? AND lease_owner = ?",
            (to_ms(due_at), error, notice.notice_id, notice.lease_owner),
        )
        return cur.rowcount > 0

    def pending_logout_notices(self) -> list[LogoutNotice]:
        rows = self._conn().execute("SELECT * FROM logout_outbox ORDER BY created_at, notice_id")
        return [from_row(LogoutNotice, r) for r in rows.fetchall()]

    # --- watermarks ---------------------------------------------------------------------------
    def get_watermark(self, name: str) -> int | None:
        row = self._one("SELECT value FROM watermarks WHERE name = ?", (name,))
        return None if row is None else int(row["value"])

    def raise_watermark(self, name: str, value: int) -> int:
        rows = (
            self._conn()
            .execute(
                "INSERT INTO watermarks (name, value) VALUES (?, ?) ON CONFLICT (name)"
                " DO UPDATE SET value = max(value, excluded.value) RETURNING value",
                (name, int(value)),
            )
            .fetchall()
        )
        return int(rows[0]["value"])


def _from_url(url: str) -> SQLiteStore:
    prefix = "sqlite:///"
    if not url.lower().startswith(prefix) or len(url) == len(prefix):
        raise StoreError("a SQLite store URL reads sqlite:///relative/path or sqlite:////abs/path")
    return SQLiteStore(url[len(prefix) :].split("?", 1)[0])


register_backend("sqlite", _from_url)
