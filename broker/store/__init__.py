"""The store: protocols split by concern, the written contract every backend MUST keep,
and `open_store`.

Modelled on Dex's `storage.Storage` and fosite's per-concern storage interfaces: each
concern (clients, sessions, refresh families, keys, codes, counters, denylist, upstream
tokens, leases, the admin reads of sessions, the audit trail, permission checks) is its
own protocol, so a component asks for exactly what it uses, and one conformance suite per
concern (`tests/store/conformance.py`) runs against every backend.
Backends offer storage and atomic primitives only; the rules (grace and reuse of refresh
tokens, the key lifecycle, who may do what) live in `broker/tokens/` and the grants, once.
The methods are synchronous; the HTTP layer calls them from its worker threads, never on
the event loop.

Every implementation MUST:
- keep datetimes timezone-aware UTC at millisecond precision (`records.ms`), and check
  expiry itself on reads that say so (MongoDB TTL deletion runs about once a minute);
- make each method documented as atomic a single compare-and-swap: of two concurrent
  `claim_refresh` calls on one parent exactly one gets `Claimed`;
- raise `AlreadyExists` on duplicate primary keys where noted, return `None`/`False` for
  absent records (no NotFound for plain reads), and raise `StoreUnavailable` when the
  backend cannot be reached or times out (mapped to 503 `temporarily_unavailable`);
- store documents with a schema version and read every earlier version;
- never hold a secret in clear (the records are already hashed/encrypted by callers).

Revocation entries and logout notices (issue 15) are never a write of their own: each is
made by the very step that changes what it describes, so no crash can leave a revoked
session, family or access token off the feed, or an ended session without its
back-channel logouts. The two backends keep that promise in their own way, and one
conformance class (`RevocationConformance`) holds both to the same observable contract:

- SQLite writes a `revocations` row (and the `logout_outbox` rows) inside the
  `BEGIN IMMEDIATE` transaction that revokes the session or family or denylists the jti;
  the feed reads that one table by its `expires_at` index.
- MongoDB has no multi-document transactions, so the entry is *derived* from the document
  the decisive compare-and-swap writes: the same `update_one` that sets a session's or
  family's `revoked_at` sets its `feed_until` (and raises its TTL `expire_at` to at least
  that, so the document outlives the entry), and a denylist document carries its
  `created_at`; the feed reads sessions, families and the denylist by their `feed_until`
  / `expires_at` indexes (three indexed finds, once per second per process). Logout
  notices ride in the session document of the same `update_one`, and are copied into
  `logout_outbox` by idempotent upserts (by the call itself and, should it die first, by
  the next claim); a delivered notice stays there as a tombstone until its TTL, so a late
  copy can never resurrect it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from broker.store.records import (
    SCHEMA_VERSION,
    USER_AGENT_MAX,
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

FamilyStarter = Callable[[AuthCodeRecord], tuple[FamilyRecord, RefreshTokenRecord]]


class StoreError(Exception):
    """Base of store errors."""


class AlreadyExists(StoreError):
    """A record with that primary key is already stored."""


class StoreUnavailable(StoreError):
    """The backend is unreachable or timed out; the request may be retried later."""


class ClientStore(Protocol):
    def put_client(self, client: ClientRecord) -> None:
        """Insert or replace."""

    def get_client(self, client_id: str) -> ClientRecord | None: ...

    def list_clients(self) -> list[ClientRecord]:
        """Sorted by client_id."""

    def delete_client(self, client_id: str) -> bool: ...


class SessionStore(Protocol):
    def create_session(self, session: SessionRecord) -> None:
        """AlreadyExists on a duplicate sid."""

    def get_session(self, sid: str) -> SessionRecord | None:
        """Returned even when revoked or expired: callers decide (introspection says why)."""

    def get_session_by_cookie(self, cookie_hash: str) -> SessionRecord | None: ...

    def mark_session_checked(self, sid: str, at: datetime) -> None:
        """Set last_checked_at = max(last_checked_at, at)."""

    def list_user_sessions(self, user_id: int) -> list[SessionRecord]:
        """Every stored session of a user (revoked and expired ones too), oldest first;
        indexed by user_id."""

    def revoke_session(
        self,
        sid: str,
        at: datetime,
        reason: str,
        *,
        feed_until: datetime,
        notices: Sequence[LogoutNotice] = (),
    ) -> bool:
        """Atomically revoke the session and every family under it, and in the same step
        make its `sid` revocation entry (created `at`, live until `feed_until`) and store
        `notices` in the logout outbox. False (nothing written) if already revoked or
        unknown."""


class RefreshStore(Protocol):
    """Refresh families and their tokens."""

    def create_family(self, family: FamilyRecord, first: RefreshTokenRecord) -> None:
        """Insert a family and its first token together (one transaction)."""

    def get_family(self, family_id: str) -> FamilyRecord | None: ...

    def list_families(self, sid: str) -> list[FamilyRecord]: ...

    def revoke_family(
        self, family_id: str, at: datetime, reason: str, *, feed_until: datetime
    ) -> bool:
        """Revoke the family and, in the same step, make its `fam` revocation entry
        (created `at`, live until `feed_until`). False (nothing written) if already
        revoked or unknown."""

    def get_refresh_token(self, jti: str) -> RefreshTokenRecord | None: ...

    def get_refresh_chain(self, jti: str) -> RefreshChain | None:
        """The token, its family and the family's session, read together (the refresh
        grant's only read before its claim); None if any of the three is absent. State
        (used, revoked, expired) is returned as stored, never judged here."""

    def claim_refresh(self, parent_jti: str, successor: RefreshTokenRecord, now: datetime) -> Claim:
        """The rotation compare-and-swap, atomic as a whole: if the parent is unused, mark
        it used at `now` with `successor_jti`, store `successor` and return `Claimed`;
        otherwise write nothing and return `AlreadyClaimed` with the parent's `used_at`
        and the successor stored by the call that won (None if it is gone). The caller
        has judged the chain (`broker.tokens.rotation`) before calling; an unknown parent
        is a caller error (ValueError)."""


class KeyStore(Protocol):
    """Signing keys. The lifecycle (what to promote, retire, drop, and when) is decided in
    `broker.tokens.keys`; these are its storage and its atomic state changes."""

    def list_keys(self) -> list[KeyRecord]:
        """All keys, oldest first (by created_at, then kid)."""

    def bootstrap_keys(self, keys: list[KeyRecord]) -> list[KeyRecord]:
        """Per `use` among `keys`: insert that use's keys only if the store holds no key
        of that use yet (insert-if-none); either way, return all keys. Concurrent first
        starts agree on one set."""

    def add_key(self, key: KeyRecord) -> None:
        """AlreadyExists on a duplicate kid."""

    def promote_key_if(
        self, next_kid: str, *, current: str | None, new_next: KeyRecord, at: datetime
    ) -> bool:
        """Compare-and-swap of key states: if `next_kid` is NEXT and the CURRENT key of its
        use is `current` (None: there is none), then `next_kid` becomes CURRENT
        (activated_at=`at`), `current` becomes RETIRED (retired_at=`at`) and `new_next`
        is inserted, together. False (nothing written) if either state no longer
        matches: another process changed the keys first."""

    def retire_key(self, kid: str, at: datetime, drop_after: datetime) -> bool:
        """Mark a key RETIRED (from any state) with its drop time; False if unknown."""

    def set_drop_after(self, kid: str, drop_after: datetime) -> None:
        """Set when a retired key may be deleted."""


class UpstreamTokenStore(Protocol):
    """Sealed ShotGrid tokens (custody and the sudo cache)."""

    def get_upstream_tokens(self, key: str) -> UpstreamTokenRecord | None: ...

    def put_upstream_tokens(self, record: UpstreamTokenRecord) -> None:
        """Insert or replace unconditionally (a fresh login)."""

    def swap_upstream_tokens(self, expected_version: int, record: UpstreamTokenRecord) -> bool:
        """Replace the record under `record.key` only if its version is still
        `expected_version`; `record.version` must be `expected_version + 1`."""

    def delete_upstream_tokens(self, key: str) -> None: ...


class LeaseStore(Protocol):
    """Single flight across processes and replicas."""

    def try_lease(self, name: str, owner: str, now: datetime, ttl: timedelta) -> bool:
        """Take the lease if free, expired, or already ours; atomic."""

    def release_lease(self, name: str, owner: str) -> None: ...


class CodeStore(Protocol):
    """Authorization codes (RFC 6749 §4.1.2), stored by hash."""

    def create_code(self, code: AuthCodeRecord) -> None: ...

    def redeem_code(
        self, code_hash: str, now: datetime, start_family: FamilyStarter, *, feed_until: datetime
    ) -> tuple[AuthCodeRecord | None, bool]:
        """Redeem a code and start the refresh family its tokens belong to, as one atomic
        step, so a concurrent replay always finds the family to revoke (Dex's
        read-modify-write with an updater: the caller's pure `start_family` builds the
        family and its first token from the code record).

        First use of an unexpired code: mark it used at `now`, store the family and first
        token `start_family(record)` returns and `family_id` on the code, return
        (record, True). A replay: mark `replayed_at` (first replay only) and return
        (record as stored, False), its `family_id` naming the family to revoke. Unknown
        or expired: (None, False). Backends without multi-document transactions must
        still guarantee that a replay concurrent with the first use leaves the family
        revoked: the first use re-reads the code after storing the family and revokes the
        family itself if it finds the code replayed meanwhile (its `fam` entry then lives
        until `feed_until`)."""


class CounterStore(Protocol):
    """Fixed-window counters with a limit (login throttling). A window begins at the first
    count after the previous window of the key ended, and lasts `window`."""

    def reserve(
        self, key: str, now: datetime, window: timedelta, limit: int
    ) -> CounterWindow | None:
        """Atomically take one slot of the counter: a live window (begun less than `window`
        before `now`) under `limit` is incremented; an absent or ended one restarts at 1,
        begun at `now`; a live window at `limit` is left alone and None is returned. One
        conditional write, so concurrent callers never take more than `limit` slots of one
        window between them. Returns the window with the count this call made. `limit` is
        at least 1 (ValueError otherwise)."""

    def release(self, key: str, started: datetime) -> bool:
        """Give one slot back: decrement the counter if it is still in the window begun at
        `started` and above 0 (atomic). False when nothing changed (the window ended and
        restarted, or the counter was reset)."""

    def read_counter(self, key: str, now: datetime, window: timedelta) -> CounterWindow | None:
        """The live window, None if the counter is absent or its window has ended."""

    def reset_counter(self, key: str) -> None: ...

    def reset_counters(self, prefix: str) -> int:
        """Delete every counter whose key starts with `prefix` (not empty); how many."""


class DenylistStore(Protocol):
    """Revoked access tokens, by jti, until they expire (RFC 7009)."""

    def deny_access_token(self, jti: str, expires_at: datetime, *, at: datetime) -> None:
        """Denylist until `expires_at` (a later call never shortens it) and, in the same
        step, make the `jti` revocation entry (created `at` by the first call)."""

    def is_access_token_denied(self, jti: str, now: datetime) -> bool: ...


class SessionAdminStore(Protocol):
    """Reads of sessions for administration (the admin API); never on a token path."""

    def list_login_sessions(self, login: str, now: datetime) -> list[SessionRecord]:
        """The live sessions (not revoked, not expired at `now`) of a ShotGrid login,
        spelled exactly as stored, newest first (by auth_time, then sid)."""

    def refresh_activity(self, family_ids: Sequence[str]) -> dict[str, datetime]:
        """Per family, when its newest refresh token was issued (every rotation issues
        one, so this is when the family was last used, with no write per refresh).
        Families without a stored token are absent."""


class AuditStore(Protocol):
    """Kept audit events (`broker.audit_trail`): a bounded, expiring collection."""

    def add_audit_events(self, events: Sequence[AuditRecord]) -> None:
        """Insert a batch; an event whose id is already stored is skipped, so a retried
        batch writes nothing twice."""

    def list_audit_events(
        self, now: datetime, *, login: str | None = None, event: str | None = None, limit: int
    ) -> list[AuditRecord]:
        """Unexpired events, newest first (by id), matching `login` and `event` exactly
        when given; at most `limit` (1 or more)."""

    def prune_audit_events(self, now: datetime, keep: int) -> int:
        """Delete expired events, then all but the newest `keep` (0: all). How many went."""


class AppSessionStore(Protocol):
    """ShotGrid App Session Launcher sign-ins in progress (`AppSessionRecord`). The rules
    (pace, expiry, binding) live in `broker.signin.launcher`; these are its storage and
    its compare-and-swaps."""

    def create_app_session(self, record: AppSessionRecord) -> None:
        """AlreadyExists on a duplicate handle_hash."""

    def get_app_session(self, handle_hash: str) -> AppSessionRecord | None:
        """Returned whatever its state or expiry (callers judge)."""

    def claim_app_session_poll(self, handle_hash: str, now: datetime, until: datetime) -> bool:
        """Atomically: if the record's `next_poll_at` <= `now`, set it to `until` and
        return True (the caller may poll ShotGrid once); else False. False if unknown."""

    def set_app_session_state(
        self, handle_hash: str, expected: str, state: str, session_token: bytes | None
    ) -> bool:
        """Atomically: if the record's state is `expected`, set `state` and
        `session_token` (None clears it) and return True; else False."""


class DeviceCodeStore(Protocol):
    """RFC 8628 device authorizations (`DeviceCodeRecord`), stored by the codes' hashes.
    The rules (expiry, `slow_down`, who may approve) live in `broker.tokens.device` and
    the grant; these are storage and compare-and-swaps."""

    def create_device_code(self, record: DeviceCodeRecord) -> None:
        """AlreadyExists when the device code hash or the user code hash is taken."""

    def get_device_code(self, device_code_hash: str) -> DeviceCodeRecord | None: ...

    def get_device_code_by_user_code(self, user_code_hash: str) -> DeviceCodeRecord | None: ...

    def decide_device_code(self, user_code_hash: str, status: str, sid: str, now: datetime) -> bool:
        """Atomically: if the record is `pending`, set `status` (approved or denied), the
        deciding session and `decided_at`; else False (already decided, or unknown)."""

    def touch_device_poll(
        self,
        device_code_hash: str,
        expected_last_poll_at: datetime | None,
        now: datetime,
        interval: int,
    ) -> bool:
        """Compare-and-swap of the poll pace: if `last_poll_at` is still
        `expected_last_poll_at` (None: never polled), set it to `now` and `interval` to
        `interval`; else False (a concurrent poll came first)."""

    def redeem_device_code(self, device_code_hash: str, now: datetime) -> bool:
        """Atomically: if the record is `approved`, mark it `used` and return True; else
        False. Exactly one of concurrent redemptions wins (single use)."""


class PermissionCheckStore(Protocol):
    """Permission-group answers remembered per browser session (`PermissionCheckRecord`),
    so the admin page asks ShotGrid at most once per re-check period; the rule (who is
    an administrator, how long an answer holds) lives in `broker.admin_access`."""

    def put_permission_check(self, record: PermissionCheckRecord) -> None:
        """Insert, or replace the record of the same sid."""

    def get_permission_check(self, sid: str, now: datetime) -> PermissionCheckRecord | None:
        """The session's record unless it expired at `now` (expires_at <= now: None)."""


class RevocationStore(Protocol):
    """The revocation feed's one read (REVOCATION_FORMATS.md). The entries are written
    by `revoke_session`, `revoke_family`, `redeem_code` and `deny_access_token`."""

    def live_revocations(self, now: datetime) -> list[RevocationEntry]:
        """Every entry with `expires_at` after `now`, ordered by (created_at, kind, value).
        A session or family revoked twice has one entry (the first); a jti's entry keeps
        its first `created_at` and the latest `expires_at`."""


class LogoutOutboxStore(Protocol):
    """Back-channel logout notices waiting for delivery (written by `revoke_session`)."""

    def claim_logout_notices(
        self, now: datetime, owner: str, lease: timedelta, limit: int
    ) -> list[LogoutNotice]:
        """Up to `limit` notices due at `now` and not leased (or whose lease has passed),
        oldest due first, each leased to `owner` until `now + lease` by a compare-and-swap:
        of concurrent claimers, each notice goes to exactly one. Returned as leased."""

    def finish_logout_notice(self, notice: LogoutNotice) -> bool:
        """Delivered, or given up: the notice leaves the outbox for good. False (nothing
        written) unless it is still leased to `notice.lease_owner`."""

    def retry_logout_notice(self, notice: LogoutNotice, due_at: datetime, error: str) -> bool:
        """A failed attempt: count it, record `error`, release the lease and make the
        notice due again at `due_at`. False (nothing written) unless it is still leased
        to `notice.lease_owner`."""

    def pending_logout_notices(self) -> list[LogoutNotice]:
        """Every notice still in the outbox, ordered by (created_at, notice_id)."""


class WatermarkStore(Protocol):
    """Named monotonic counters: how far a reader of an outside log has got (the ShotGrid
    event watcher's last EventLogEntry id)."""

    def get_watermark(self, name: str) -> int | None: ...

    def raise_watermark(self, name: str, value: int) -> int:
        """Set the watermark to max(current, value), atomically; return the result."""


class Store(
    ClientStore,
    SessionStore,
    RefreshStore,
    KeyStore,
    UpstreamTokenStore,
    LeaseStore,
    CodeStore,
    CounterStore,
    DenylistStore,
    SessionAdminStore,
    AuditStore,
    AppSessionStore,
    DeviceCodeStore,
    PermissionCheckStore,
    RevocationStore,
    LogoutOutboxStore,
    WatermarkStore,
    Protocol,
):
    """Everything a backend implements: every concern above, plus its lifecycle."""

    def ping(self) -> None:
        """Raise StoreUnavailable unless the backend answers."""

    def close(self) -> None: ...

    def gc(self, now: datetime) -> int:
        """Delete expired rows (sessions, families, tokens, codes, counters, denylist,
        revocation entries, dropped keys, upstream tokens past their refresh expiry, app
        session and device records past their `purge_at`, expired permission checks). A
        revoked session or family stays until its revocation entry expires when the entry
        is derived from it. Returns rows removed."""


StoreFactory = Callable[[str], Store]
_BACKENDS: dict[str, StoreFactory] = {}


def register_backend(scheme: str, factory: StoreFactory) -> None:
    _BACKENDS[scheme] = factory


def open_store(url: str) -> Store:
    """Open a backend by the scheme of its URL: `sqlite:///path`, `mongodb://...`."""
    scheme = url.split(":", 1)[0].lower()
    if scheme not in _BACKENDS:
        _load_builtin(scheme)
    try:
        factory = _BACKENDS[scheme]
    except KeyError:
        raise StoreError(f"unsupported store URL scheme {scheme!r}") from None
    return factory(url)


def _load_builtin(scheme: str) -> None:
    if scheme == "sqlite":
        import broker.store.sqlite
    elif scheme in ("mongodb", "mongodb+srv"):
        import broker.store.mongo  # noqa: F401


__all__ = [
    "SCHEMA_VERSION",
    "USER_AGENT_MAX",
    "AlreadyClaimed",
    "AlreadyExists",
    "AppSessionRecord",
    "AppSessionStore",
    "AuditRecord",
    "AuditStore",
    "AuthCodeRecord",
    "Claim",
    "Claimed",
    "ClientRecord",
    "ClientStore",
    "CodeStore",
    "CounterStore",
    "CounterWindow",
    "DenylistStore",
    "DeviceCodeRecord",
    "DeviceCodeStore",
    "FamilyRecord",
    "FamilyStarter",
    "KeyRecord",
    "KeyState",
    "KeyStore",
    "LeaseStore",
    "LogoutNotice",
    "LogoutOutboxStore",
    "PermissionCheckRecord",
    "PermissionCheckStore",
    "RefreshChain",
    "RefreshStore",
    "RefreshTokenRecord",
    "RevocationEntry",
    "RevocationKind",
    "RevocationStore",
    "SessionAdminStore",
    "SessionRecord",
    "SessionStore",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "UpstreamTokenRecord",
    "UpstreamTokenStore",
    "WatermarkStore",
    "ms",
    "open_store",
    "register_backend",
]
