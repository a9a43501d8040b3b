"""Logins and their refresh families: created, rotated and ended here.

A session is one sign-in (password grant, login page, device flow); a family is one chain
of refresh-token rotations from one grant under it. This module owns their lifetimes and
the order of the store calls; the rotation rules themselves are the pure functions of
`broker.tokens.rotation`, and the store offers only reads and compare-and-swaps.

Every revocation made here gives the store how long its revocation-feed entry lives
(`broker.tokens.revocation_feed.entry_lifetime`), and ending a session gives it the
back-channel logout notices to write in the same step: one per client that holds a
family under the session or made the sign-in, and registered a `backchannel_logout_uri`.
A family started concurrently with the session's end may miss its notice; its tokens are
still refused (the session's `sid` entry, and the refresh grant's own checks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from broker.clock import Clock, now_ms
from broker.store import (
    USER_AGENT_MAX,
    AlreadyClaimed,
    AuthCodeRecord,
    ClientStore,
    FamilyRecord,
    LogoutNotice,
    RefreshChain,
    RefreshStore,
    RefreshTokenRecord,
    SessionRecord,
    SessionStore,
)
from broker.tokens.rotation import RotationResult, RotationStatus, chain_problem, judge_reuse
from broker.tokens.secrets import new_token_id
from broker.upstream import Identity


class SessionsStore(SessionStore, RefreshStore, ClientStore, Protocol):
    """What `Sessions` needs of a store (clients: who gets back-channel logouts)."""


@dataclass(frozen=True, slots=True)
class Lifetimes:
    refresh_idle: timedelta
    """A refresh token unused this long expires."""
    absolute: timedelta
    """A session (and every family under it) ends this long after sign-in."""
    reuse_grace: timedelta
    default_audience: str
    revocation_entry: timedelta
    """How long a `sid` or `fam` entry stays on the revocation feed
    (`broker.tokens.revocation_feed.entry_lifetime`)."""


class Sessions:
    def __init__(self, store: SessionsStore, lifetimes: Lifetimes, clock: Clock) -> None:
        self.store = store
        self.lifetimes = lifetimes
        self.clock = clock

    def now(self) -> datetime:
        return now_ms(self.clock)

    # --- sessions ------------------------------------------------------------------------
    def feed_until(self, at: datetime) -> datetime:
        """When the revocation entry of something revoked `at` leaves the feed."""
        return at + self.lifetimes.revocation_entry

    def new_session(
        self,
        identity: Identity,
        *,
        cookie_hash: str | None = None,
        auth_method: str = "password",
        client_ip: str | None = None,
        user_agent: str | None = None,
        auth_time: datetime | None = None,
        upstream_sid: str | None = None,
        client_id: str | None = None,
    ) -> SessionRecord:
        """Start a session; how it was signed into, from where and with what are kept for
        the admin API (the user agent cut to `USER_AGENT_MAX` characters). `auth_time` is
        when the person authenticated, if earlier than now (a device approved from a
        browser session signed in before); `client_id` when one client made the sign-in
        (it then hears of the session's end by back-channel logout even without a refresh
        family)."""
        now = self.now()
        session = SessionRecord(
            sid=new_token_id(),
            user_id=identity.user_id,
            login=identity.login,
            email=identity.email,
            name=identity.name,
            auth_time=min(auth_time, now) if auth_time is not None else now,
            expires_at=now + self.lifetimes.absolute,
            last_checked_at=now,
            cookie_hash=cookie_hash,
            auth_method=auth_method,
            client_ip=client_ip[:64] if client_ip else None,
            user_agent=user_agent[:USER_AGENT_MAX] if user_agent else None,
            upstream_sid=upstream_sid,
            client_id=client_id,
        )
        self.store.create_session(session)
        return session

    def live(self, session: SessionRecord | None) -> bool:
        return session is not None and not session.revoked and session.expires_at > self.now()

    def end_session(self, sid: str, reason: str) -> bool:
        """End a session and every family under it (logout, deactivation, ...), with its
        revocation entry and back-channel logout notices. False if it had already ended
        (or never existed): then nothing is written and nobody is notified again."""
        now = self.now()
        return self.store.revoke_session(
            sid,
            now,
            reason,
            feed_until=self.feed_until(now),
            notices=self.logout_notices(sid, now),
        )

    def logout_notices(self, sid: str, now: datetime) -> tuple[LogoutNotice, ...]:
        """The back-channel logouts a session's end sends (OIDC Back-Channel Logout 1.0
        §2.7): to each client that made the sign-in or holds a family under it and has
        registered a `backchannel_logout_uri`."""
        session = self.store.get_session(sid)
        if session is None or session.revoked:
            return ()
        clients = dict.fromkeys([session.client_id] if session.client_id else [])
        clients.update(dict.fromkeys(f.client_id for f in self.store.list_families(sid)))
        notices = []
        for client_id in clients:
            client = self.store.get_client(client_id)
            if client is not None and client.backchannel_logout_uri:
                notices.append(
                    LogoutNotice(
                        notice_id=new_token_id(),
                        sid=sid,
                        client_id=client_id,
                        user_id=session.user_id,
                        created_at=now,
                        due_at=now,
                    )
                )
        return tuple(notices)

    def end_user_sessions(self, user_id: int, reason: str) -> list[str]:
        """End every session of a user that may still have valid access tokens (not
        revoked, and not expired for longer than a revocation entry lives); the sids
        ended by this call."""
        now = self.now()
        ended = []
        for session in self.store.list_user_sessions(user_id):
            if session.revoked or self.feed_until(session.expires_at) <= now:
                continue
            if self.end_session(session.sid, reason):
                ended.append(session.sid)
        return ended

    # --- families --------------------------------------------------------------------------
    def new_family(
        self,
        sid: str,
        client_id: str,
        scope: str,
        *,
        session_ends: datetime,
        audience: str | None = None,
        code_hash: str | None = None,
    ) -> tuple[FamilyRecord, RefreshTokenRecord]:
        """A family and its first token, not yet stored."""
        now = self.now()
        family = FamilyRecord(
            family_id=new_token_id(),
            sid=sid,
            client_id=client_id,
            scope=scope,
            audience=audience or self.lifetimes.default_audience,
            created_at=now,
            expires_at=min(session_ends, now + self.lifetimes.absolute),
            code_hash=code_hash,
        )
        return family, self.next_refresh_record(family, now)

    def start_family(
        self, session: SessionRecord, client_id: str, scope: str, *, audience: str | None = None
    ) -> tuple[FamilyRecord, RefreshTokenRecord]:
        family, first = self.new_family(
            session.sid, client_id, scope, session_ends=session.expires_at, audience=audience
        )
        self.store.create_family(family, first)
        return family, first

    def family_for_code(self, code: AuthCodeRecord) -> tuple[FamilyRecord, RefreshTokenRecord]:
        """The family a code starts, from the code alone (the store calls this inside its
        redemption step): its session began at the code's `auth_time`."""
        return self.new_family(
            code.sid,
            code.client_id,
            code.scope,
            session_ends=code.auth_time + self.lifetimes.absolute,
            code_hash=code.code_hash,
        )

    def next_refresh_record(self, family: FamilyRecord, now: datetime) -> RefreshTokenRecord:
        return RefreshTokenRecord(
            jti=new_token_id(),
            family_id=family.family_id,
            issued_at=now,
            expires_at=min(family.expires_at, now + self.lifetimes.refresh_idle),
        )

    def revoke_family(self, family_id: str, reason: str) -> bool:
        now = self.now()
        return self.store.revoke_family(family_id, now, reason, feed_until=self.feed_until(now))

    # --- rotation ----------------------------------------------------------------------------
    def rotate(
        self, chain: RefreshChain, *, before_claim: Callable[[], None] | None = None
    ) -> RotationResult:
        """One refresh of a chain the caller read (once): see `rotate_chain`."""
        now = self.now()
        return rotate_chain(
            self.store,
            chain,
            self.next_refresh_record(chain.family, now),
            now,
            self.lifetimes.reuse_grace,
            feed_until=self.feed_until(now),
            before_claim=before_claim,
        )


def rotate_chain(
    store: RefreshStore,
    chain: RefreshChain | None,
    successor: RefreshTokenRecord,
    now: datetime,
    grace: timedelta,
    *,
    feed_until: datetime,
    before_claim: Callable[[], None] | None = None,
) -> RotationResult:
    """Judge the chain as read (`broker.tokens.rotation`), claim its token for `successor`,
    and on a lost or late claim apply the reuse rules: the whole refresh, in the order of
    store calls every backend gets. `before_claim` runs only for a usable chain, before
    anything is written (the grant's upstream re-check, which may end the session). A
    family revoked for reuse stays on the revocation feed until `feed_until`."""
    if chain is None:
        return RotationResult(RotationStatus.INVALID, problem="expired")
    problem = chain_problem(chain, now)
    if problem is not None:
        return RotationResult(RotationStatus.INVALID, problem=problem)
    if before_claim is not None:
        before_claim()
    token, family, _session = chain
    if successor.family_id != family.family_id:
        raise ValueError("the successor belongs to another family")
    # Claimed even when the chain as read was already used: the store then answers with
    # the successor the winning call stored, which it completes if that call died
    # before storing it (MongoDB keeps it embedded in the parent for this).
    claim = store.claim_refresh(token.jti, successor, now)
    if not isinstance(claim, AlreadyClaimed):
        return RotationResult(RotationStatus.ROTATED, successor, family)
    used_at, earlier = claim.used_at, claim.successor
    if judge_reuse(used_at, earlier, now, grace) is RotationStatus.GRACE:
        return RotationResult(RotationStatus.GRACE, earlier, family)
    store.revoke_family(family.family_id, now, "reuse", feed_until=feed_until)
    return RotationResult(RotationStatus.REUSED, None, store.get_family(family.family_id) or family)
