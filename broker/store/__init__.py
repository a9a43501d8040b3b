"""The Store protocol: the written contract every backend MUST keep, and `open_store`.

Modelled on Dex's `storage.Storage`: one protocol, one conformance suite
(`tests/store/conformance.py`) that every backend subclasses. The methods are synchronous;
the HTTP layer calls them from the threadpool, never on the event loop.

Every implementation MUST:
- keep datetimes timezone-aware UTC at millisecond precision (`records.ms`), and check
  expiry itself on reads that say so (MongoDB TTL deletion runs about once a minute);
- make each method documented as atomic a single compare-and-swap: two concurrent
  `rotate_refresh_token` calls on one parent produce exactly one ROTATED;
- raise `AlreadyExists` on duplicate primary keys where noted, return `None`/`False` for
  absent records (no NotFound for plain reads), and raise `StoreUnavailable` when the
  backend cannot be reached or times out (mapped to 503 `temporarily_unavailable`);
- store documents with a schema version and read every earlier version;
- never hold a secret in clear (the records are already hashed/encrypted by callers).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from broker.store.records import (
    SCHEMA_VERSION,
    AuthCodeRecord,
    ClientRecord,
    FamilyRecord,
    KeyRecord,
    KeyState,
    RefreshChain,
    RefreshTokenRecord,
    RotationResult,
    RotationStatus,
    SessionRecord,
    UpstreamTokenRecord,
    ms,
)


class StoreError(Exception):
    """Base of store errors."""


class AlreadyExists(StoreError):
    """A record with that primary key is already stored."""


class StoreUnavailable(StoreError):
    """The backend is unreachable or timed out; the request may be retried later."""


class Store(Protocol):
    # --- lifecycle -----------------------------------------------------------------------
    def ping(self) -> None:
        """Raise StoreUnavailable unless the backend answers."""

    def close(self) -> None: ...

    def gc(self, now: datetime) -> int:
        """Delete expired rows (sessions, families, tokens, codes, counters, denylist,
        dropped keys, upstream tokens past their refresh expiry). Returns rows removed."""

    # --- clients -------------------------------------------------------------------------
    def put_client(self, client: ClientRecord) -> None:
        """Insert or replace."""

    def get_client(self, client_id: str) -> ClientRecord | None: ...

    def list_clients(self) -> list[ClientRecord]:
        """Sorted by client_id."""

    def delete_client(self, client_id: str) -> bool: ...

    # --- sessions ------------------------------------------------------------------------
    def create_session(self, session: SessionRecord) -> None:
        """AlreadyExists on a duplicate sid."""

    def get_session(self, sid: str) -> SessionRecord | None:
        """Returned even when revoked or expired: callers decide (introspection says why)."""

    def get_session_by_cookie(self, cookie_hash: str) -> SessionRecord | None: ...

    def mark_session_checked(self, sid: str, at: datetime) -> None:
        """Set last_checked_at = max(last_checked_at, at)."""

    def revoke_session(self, sid: str, at: datetime, reason: str) -> bool:
        """Atomically revoke the session and every family under it. False if already
        revoked or unknown."""

    # --- refresh families and tokens -------------------------------------------------------
    def create_family(self, family: FamilyRecord, first: RefreshTokenRecord) -> None:
        """Insert a family and its first token together (one transaction)."""

    def get_family(self, family_id: str) -> FamilyRecord | None: ...

    def list_families(self, sid: str) -> list[FamilyRecord]: ...

    def revoke_family(self, family_id: str, at: datetime, reason: str) -> bool:
        """False if already revoked or unknown."""

    def get_refresh_token(self, jti: str) -> RefreshTokenRecord | None: ...

    def get_refresh_chain(self, jti: str) -> RefreshChain | None:
        """The token, its family and the family's session, read together (the refresh
        grant's only read before its compare-and-swap); None if any of the three is
        absent. State (used, revoked, expired) is returned as stored, not judged."""

    def rotate_refresh_token(
        self,
        parent_jti: str,
        successor: RefreshTokenRecord,
        now: datetime,
        grace: timedelta,
    ) -> RotationResult:
        """The refresh-rotation compare-and-swap, atomic as a whole.

        - parent unknown, expired (`expires_at <= now`), or its family revoked, expired, or
          its session revoked/expired: INVALID (nothing written);
        - parent unused: mark it used at `now` with `successor_jti`, insert `successor`,
          return ROTATED with `successor` and the family;
        - parent used at `used_at` with `now - used_at <= grace` and its successor unused:
          GRACE with the earlier successor record (nothing written; `successor` discarded);
        - otherwise (used, past grace or successor already used): revoke the family with
          reason `reuse` and return REUSED.
        """

    # --- signing keys --------------------------------------------------------------------
    def list_keys(self) -> list[KeyRecord]:
        """All keys, oldest first (by created_at, then kid)."""

    def bootstrap_keys(self, keys: list[KeyRecord]) -> list[KeyRecord]:
        """Insert `keys` only if the store holds no key of the same `use` yet; either way,
        return all keys. Concurrent first starts agree on one set."""

    def add_key(self, key: KeyRecord) -> None:
        """AlreadyExists on a duplicate kid."""

    def promote_key(
        self, expected_current: str | None, next_kid: str, new_next: KeyRecord, at: datetime
    ) -> bool:
        """Atomically: the key `expected_current` (state CURRENT, or no current key when
        None) becomes RETIRED with retired_at=`at`; `next_kid` (state NEXT) becomes
        CURRENT with activated_at=`at`; `new_next` is inserted. False (nothing written)
        if the states no longer match: another process rotated first."""

    def retire_key(self, kid: str, at: datetime, drop_after: datetime) -> bool:
        """Mark a key RETIRED (from any state) with its drop time; False if unknown."""

    def set_drop_after(self, kid: str, drop_after: datetime) -> None:
        """Set when a retired key may be deleted."""

    # --- upstream token custody --------------------------------------------------------------
    def get_upstream_tokens(self, key: str) -> UpstreamTokenRecord | None: ...

    def put_upstream_tokens(self, record: UpstreamTokenRecord) -> None:
        """Insert or replace unconditionally (a fresh login)."""

    def swap_upstream_tokens(self, expected_version: int, record: UpstreamTokenRecord) -> bool:
        """Replace the record under `record.key` only if its version is still
        `expected_version`; `record.version` must be `expected_version + 1`."""

    def delete_upstream_tokens(self, key: str) -> None: ...

    # --- leases (single flight across processes) ----------------------------------------------
    def try_lease(self, name: str, owner: str, now: datetime, ttl: timedelta) -> bool:
        """Take the lease if free, expired, or already ours; atomic."""

    def release_lease(self, name: str, owner: str) -> None: ...

    # --- authorization codes -----------------------------------------------------------------
    def create_code(self, code: AuthCodeRecord) -> None: ...

    def redeem_code(self, code_hash: str, now: datetime) -> tuple[AuthCodeRecord | None, bool]:
        """Atomically mark the code used. Returns (record, True) on first use of an
        unexpired code, (record, False) on a replay (record as stored, used_at set),
        (None, False) when unknown or expired."""

    def set_code_family(self, code_hash: str, family_id: str) -> None: ...

    # --- counters (login throttling) ----------------------------------------------------------
    def hit_counter(self, key: str, now: datetime, window: timedelta) -> int:
        """Atomically increment a fixed-window counter and return the new count; a counter
        older than `window` restarts at 1."""

    def get_counter(self, key: str, now: datetime, window: timedelta) -> int:
        """The current count, 0 if absent or its window has passed."""

    def reset_counter(self, key: str) -> None: ...

    # --- access-token denylist ----------------------------------------------------------------
    def deny_access_token(self, jti: str, expires_at: datetime) -> None: ...

    def is_access_token_denied(self, jti: str, now: datetime) -> bool: ...


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
    "AlreadyExists",
    "AuthCodeRecord",
    "ClientRecord",
    "FamilyRecord",
    "KeyRecord",
    "KeyState",
    "RefreshChain",
    "RefreshTokenRecord",
    "RotationResult",
    "RotationStatus",
    "SessionRecord",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "UpstreamTokenRecord",
    "ms",
    "open_store",
    "register_backend",
]
