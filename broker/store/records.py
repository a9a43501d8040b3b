"""Records the store keeps. Plain frozen dataclasses, no behaviour beyond derived flags.

Every datetime is timezone-aware UTC truncated to milliseconds (`ms`), because MongoDB
keeps milliseconds and a record must compare equal after a round trip through any backend.
Secrets never appear here in clear: client secrets are hashes, keys and upstream tokens are
AES-GCM ciphertexts (`tokens/crypto.py`), refresh tokens are known only by their `jti`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import NamedTuple

SCHEMA_VERSION = 1
"""Bumped when a record's stored shape changes; readers accept every older version."""


def ms(value: datetime) -> datetime:
    """Truncate to milliseconds in UTC: the precision every backend can keep."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: the broker only handles aware UTC datetimes")
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


@dataclass(frozen=True, slots=True)
class ClientRecord:
    client_id: str
    name: str = ""
    public: bool = True
    secret_hash: str | None = None
    """`tokens.secrets.hash_client_secret` output; None for public clients."""
    grant_types: tuple[str, ...] = ()
    redirect_uris: tuple[str, ...] = ()
    post_logout_redirect_uris: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    """Extra CORS origins beyond those derived from the redirect URIs."""
    scopes: tuple[str, ...] = ("openid", "profile", "email", "offline_access")
    audiences: tuple[str, ...] = ()
    """Audiences this client may request by token exchange."""
    may_introspect: bool = False
    may_exchange_shotgrid: bool = False
    max_exchange_lifetime: int | None = None
    """Seconds; an exchanged token may outlive its subject token only up to this."""
    backchannel_logout_uri: str | None = None
    """OIDC Back-Channel Logout 1.0 §2.2: where the broker POSTs a logout token when a
    session this client signed into ends."""


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One sign-in: the password grant, the login page (password, two-factor code or the
    App Session Launcher) or an approved device created it."""

    sid: str
    user_id: int
    login: str
    email: str
    name: str
    auth_time: datetime
    expires_at: datetime
    """Absolute end of the session (and of every refresh family under it)."""
    last_checked_at: datetime
    """Last time the user was confirmed active upstream."""
    revoked_at: datetime | None = None
    cookie_hash: str | None = None
    """SHA-256 of the SSO cookie value, for browser sessions."""
    auth_method: str = "password"
    """How the person signed in: `password` (Legacy Login), `two_factor` (password and an
    authentication code), `shotgrid` (App Session Launcher), `device` (RFC 8628, approved
    from a browser session). Rows written before this field read as `password`."""
    client_ip: str | None = None
    """The client address at sign-in (the device's, for `device`)."""
    user_agent: str | None = None
    """The User-Agent at sign-in, cut to `USER_AGENT_MAX` characters."""
    upstream_sid: str | None = None
    """The session whose kept ShotGrid tokens this one uses (custody): a device session
    uses those of the browser session that approved it."""
    client_id: str | None = None
    """The client the sign-in was made for, when one client made it (password and device
    grants): it is told by back-channel logout when the session ends even if it holds no
    refresh family. Browser sessions serve every client that gets a code under them (None)."""

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


USER_AGENT_MAX = 256
"""Longest User-Agent kept on a session (longer ones are cut)."""


@dataclass(frozen=True, slots=True)
class AppSessionRecord:
    """A ShotGrid App Session Launcher sign-in in progress, started by one login page.

    The page holds a random handle (only its hash is the key); the record is bound to the
    browser and the request that started it (`binding`), carries the ShotGrid request
    sealed (its id is a bearer capability for the poll), and paces the upstream polls
    (`next_poll_at`, taken by compare-and-swap)."""

    handle_hash: str
    binding: str
    """SHA-256 over the browser's CSRF cookie and the page's continuation."""
    request: bytes
    """Sealed JSON `{"id", "url"}` of the ShotGrid app session request."""
    app_name: str
    """What ShotGrid shows the person: the site name and a short random code."""
    created_at: datetime
    expires_at: datetime
    """ShotGrid forgets an unapproved request after this (about 300 s)."""
    next_poll_at: datetime
    """No upstream poll before this instant; moved forward by whoever polls."""
    purge_at: datetime
    """When the record may be deleted (a while after `expires_at`, so a late check can
    still say "expired" rather than "unknown")."""
    state: str = "pending"
    """`pending`, `approved` (ShotGrid answered; its session token waits, sealed, for the
    exchange), `completed` (a broker session was started), `denied` or `expired` (ShotGrid
    no longer knows it), `failed` (ShotGrid refused the account)."""
    session_token: bytes | None = None
    """Sealed ShotGrid session token while `approved`; cleared when completed."""


@dataclass(frozen=True, slots=True)
class DeviceCodeRecord:
    """An RFC 8628 device authorization: both codes are known only by their hashes."""

    device_code_hash: str
    user_code_hash: str
    client_id: str
    scope: str
    created_at: datetime
    expires_at: datetime
    interval: int
    """Seconds the client must wait between polls; +5 at each `slow_down` (§3.5)."""
    purge_at: datetime
    """When the record may be deleted (after `expires_at`, so a late poll still gets
    `expired_token`)."""
    last_poll_at: datetime | None = None
    status: str = "pending"
    """`pending`, `approved`, `denied`, or `used` (tokens issued: single use)."""
    sid: str | None = None
    """The browser session that approved or denied it."""
    decided_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PermissionCheckRecord:
    """What ShotGrid said about a signed-in person's permission group, for one browser
    session (the admin page asks once, then trusts the answer until `expires_at`)."""

    sid: str
    user_id: int
    login: str
    permission_group: str | None
    """The group's name as ShotGrid gave it; None when the person has none (or ShotGrid
    no longer knows the login)."""
    checked_at: datetime
    expires_at: datetime
    """`checked_at` plus the re-check period: reads treat the answer as absent after it."""


@dataclass(frozen=True, slots=True)
class FamilyRecord:
    """A refresh-token family: one chain of rotations from one grant."""

    family_id: str
    sid: str
    client_id: str
    scope: str
    audience: str
    created_at: datetime
    expires_at: datetime
    """Absolute lifetime of the family."""
    revoked_at: datetime | None = None
    revoked_reason: str | None = None
    code_hash: str | None = None
    """The authorization code this family came from, to revoke it on code replay."""

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True)
class RefreshTokenRecord:
    jti: str
    family_id: str
    issued_at: datetime
    expires_at: datetime
    """Idle expiry, never after the family's absolute expiry."""
    used_at: datetime | None = None
    successor_jti: str | None = None


@dataclass(frozen=True, slots=True)
class Claimed:
    """`claim_refresh` marked the parent used and stored the successor: this call won."""


@dataclass(frozen=True, slots=True)
class AlreadyClaimed:
    """`claim_refresh` found the parent already used (by another call, maybe a concurrent
    one): when, and the successor that call stored (None if it is gone)."""

    used_at: datetime
    successor: RefreshTokenRecord | None


Claim = Claimed | AlreadyClaimed


class RefreshChain(NamedTuple):
    """A refresh token with the family and session it belongs to (one store read)."""

    token: RefreshTokenRecord
    family: FamilyRecord
    session: SessionRecord


class KeyState(StrEnum):
    NEXT = "next"
    CURRENT = "current"
    RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    kid: str
    alg: str
    """RS256 or ES256 for published signing keys; HS256 for the broker-only refresh key."""
    state: KeyState
    private_jwk: bytes
    """AES-GCM ciphertext of the private JWK (JSON), bound to the kid."""
    created_at: datetime
    activated_at: datetime | None = None
    retired_at: datetime | None = None
    drop_after: datetime | None = None
    """A retired key is unpublished and deleted after this instant."""
    use: str = "sig"
    """`sig` for published keys, `rt` for the refresh-token MAC key (never published)."""


@dataclass(frozen=True, slots=True)
class UpstreamTokenRecord:
    """Encrypted ShotGrid tokens kept under a key: `session:<sid>` or `sudo:<login>`."""

    key: str
    access_token: bytes
    refresh_token: bytes | None
    expires_at: datetime
    refresh_expires_at: datetime | None
    version: int = 1
    """Bumped by every swap: the compare-and-swap guard."""


@dataclass(frozen=True, slots=True)
class AuthCodeRecord:
    code_hash: str
    client_id: str
    redirect_uri: str
    scope: str
    sid: str
    auth_time: datetime
    expires_at: datetime
    nonce: str | None = None
    code_challenge: str | None = None
    code_challenge_method: str | None = None
    used_at: datetime | None = None
    family_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    replayed_at: datetime | None = None
    """First time the code was presented again after its redemption."""


@dataclass(frozen=True, slots=True)
class CounterWindow:
    """A fixed-window counter as it stands: its count and when its window began (the
    window's identity: `CounterStore.release` gives a slot back only to that window)."""

    count: int
    started: datetime


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One kept audit event (`broker.audit_trail`): identifiers only, as in the log line."""

    id: str
    """Unique and sortable by time: 13 digits of epoch milliseconds, then hex digits."""
    at: datetime
    event: str
    outcome: str
    expires_at: datetime
    """The event is dropped after this (`BROKER_AUDIT_RETENTION`)."""
    login: str | None = None
    """The ShotGrid login the event is about, lower-cased (the filter of the admin API)."""
    fields: dict[str, str] = field(default_factory=dict)
    """The event's other identifiers (client_id, sid, ip, admin, ...), as text."""


class RevocationKind(StrEnum):
    """What a revocation entry names (the claim of an access token it matches)."""

    SESSION = "sid"
    FAMILY = "fam"
    ACCESS_TOKEN = "jti"


@dataclass(frozen=True, slots=True)
class RevocationEntry:
    """One entry of the revocation feed: a session ended, a refresh family revoked or an
    access token revoked, from `created_at` until `expires_at` (after which no token it
    can match is still valid). Written by the store in the same step as the change."""

    kind: RevocationKind
    value: str
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class LogoutNotice:
    """A back-channel logout to deliver (OIDC Back-Channel Logout 1.0): the outbox row
    written with the session's end, claimed by one deliverer at a time under a lease."""

    notice_id: str
    """Random; also the logout token's `jti`, the same on every attempt, so a receiver
    that got a delivery whose answer was lost recognises the retry."""
    sid: str
    client_id: str
    user_id: int
    created_at: datetime
    due_at: datetime
    """Next attempt no earlier than this."""
    attempts: int = 0
    """Attempts made so far."""
    lease_owner: str | None = None
    lease_until: datetime | None = None
    """While leased, no other deliverer may claim the notice."""
    last_error: str | None = None


LOGOUT_NOTICE_RETENTION = timedelta(days=1)
"""A logout notice still undelivered this long after it was written is deleted by `gc`
(and MongoDB's TTL): every token of its session has long expired, and a deliverer gives
up well before (`BROKER_BACKCHANNEL_MAX_ATTEMPTS`)."""
