"""The broker's framework-free core: wiring (settings, clock, store, keys, upstream) and the
token issuance every grant shares.

Grants decide *whether* to issue; this module decides *what* is issued, so the password,
refresh, code and exchange grants cannot drift apart on claims, lifetimes or storage.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from broker.settings import Settings, decode_key
from broker.store import (
    FamilyRecord,
    RefreshTokenRecord,
    SessionRecord,
    Store,
    UpstreamTokenRecord,
    ms,
)
from broker.tokens import claims as claims_mod
from broker.tokens.crypto import Sealer
from broker.tokens.keys import ID_TOKEN_ALG, KeyManager
from broker.tokens.secrets import new_token_id
from broker.upstream import Identity, UpstreamTokens

Clock = Callable[[], datetime]

UPSTREAM_MARGIN = timedelta(seconds=60)
"""A kept ShotGrid token is renewed this long before it expires, so a token handed out
still has a useful life (and clock skew with ShotGrid cannot make it arrive dead)."""


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class IssuedAccessToken:
    token: str
    claims: dict[str, Any]
    expires_in: int


class Broker:
    """One per process; shared by every request. Thread-safe: state lives in the store."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        upstream: Any,
        *,
        clock: Clock = system_clock,
    ) -> None:
        if settings.issuer is None or settings.secret_key is None:
            raise ValueError("issuer and secret_key are required")
        self.settings = settings
        self.issuer: str = settings.issuer
        self.store = store
        self.upstream = upstream
        self.clock = clock
        # Striped locks: bounded memory whatever the number of sessions; two keys that
        # share a stripe only queue behind each other, which is harmless.
        self._locks = [threading.Lock() for _ in range(64)]
        keks = [decode_key(settings.secret_key)] + [decode_key(k) for k in settings.old_secret_keys]
        self.sealer = Sealer(keks)
        longest = max(settings.access_token_ttl, 600)
        self.keys = KeyManager(
            store,
            self.sealer,
            clock=clock,
            signing_alg=settings.signing_alg,
            rotation_interval=timedelta(seconds=settings.key_rotation_interval),
            retire_after=timedelta(seconds=longest + settings.jwks_max_age),
            reload_interval=timedelta(seconds=max(1, min(60, settings.jwks_max_age // 2))),
        )

    def now(self) -> datetime:
        return ms(self.clock())

    def start(self) -> None:
        self.keys.ensure_keys()
        self.keys.rotate_if_due()

    # --- sessions and families -----------------------------------------------------------
    def new_session(self, identity: Identity, *, cookie_hash: str | None = None) -> SessionRecord:
        now = self.now()
        session = SessionRecord(
            sid=new_token_id(),
            user_id=identity.user_id,
            login=identity.login,
            email=identity.email,
            name=identity.name,
            auth_time=now,
            expires_at=now + timedelta(seconds=self.settings.refresh_absolute_ttl),
            last_checked_at=now,
            cookie_hash=cookie_hash,
        )
        self.store.create_session(session)
        return session

    def keep_upstream_tokens(self, session: SessionRecord, tokens: UpstreamTokens) -> None:
        """Custody strategy only: seal the user's ShotGrid tokens, bound to the session."""
        if self.settings.upstream_strategy != "custody":
            return
        key = f"session:{session.sid}"
        self.store.put_upstream_tokens(self.seal_upstream(key, tokens, version=1))

    def seal_upstream(
        self, key: str, tokens: UpstreamTokens, *, version: int
    ) -> UpstreamTokenRecord:
        return UpstreamTokenRecord(
            key=key,
            access_token=self.sealer.seal(tokens.access_token.encode(), f"{key}:at"),
            refresh_token=(
                self.sealer.seal(tokens.refresh_token.encode(), f"{key}:rt")
                if tokens.refresh_token
                else None
            ),
            expires_at=ms(tokens.expires_at),
            refresh_expires_at=ms(tokens.refresh_expires_at) if tokens.refresh_expires_at else None,
            version=version,
        )

    def open_upstream(self, record: UpstreamTokenRecord) -> UpstreamTokens:
        return UpstreamTokens(
            access_token=self.sealer.open(record.access_token, f"{record.key}:at").decode(),
            refresh_token=(
                self.sealer.open(record.refresh_token, f"{record.key}:rt").decode()
                if record.refresh_token
                else ""
            ),
            expires_at=record.expires_at,
            refresh_expires_at=record.refresh_expires_at,
        )

    def start_family(
        self,
        session: SessionRecord,
        client_id: str,
        scope: str,
        *,
        audience: str | None = None,
        code_hash: str | None = None,
    ) -> tuple[FamilyRecord, RefreshTokenRecord]:
        now = self.now()
        family = FamilyRecord(
            family_id=new_token_id(),
            sid=session.sid,
            client_id=client_id,
            scope=scope,
            audience=audience or self.settings.default_audience,
            created_at=now,
            expires_at=min(
                session.expires_at, now + timedelta(seconds=self.settings.refresh_absolute_ttl)
            ),
            code_hash=code_hash,
        )
        first = self.next_refresh_record(family, now)
        self.store.create_family(family, first)
        return family, first

    def next_refresh_record(self, family: FamilyRecord, now: datetime) -> RefreshTokenRecord:
        return RefreshTokenRecord(
            jti=new_token_id(),
            family_id=family.family_id,
            issued_at=now,
            expires_at=min(
                family.expires_at, now + timedelta(seconds=self.settings.refresh_idle_ttl)
            ),
        )

    # --- token strings ------------------------------------------------------------------
    def access_token(
        self,
        session: SessionRecord | None,
        client_id: str,
        scope: str,
        *,
        audience: str | None = None,
        act: dict[str, Any] | None = None,
        not_after: datetime | None = None,
        family_id: str | None = None,
    ) -> IssuedAccessToken:
        now = self.now()
        expires = now + timedelta(seconds=self.settings.access_token_ttl)
        if not_after is not None and not_after < expires:
            expires = not_after
        claims = claims_mod.access_token_claims(
            issuer=self.issuer,
            audience=audience or self.settings.default_audience,
            client_id=client_id,
            scope=scope,
            jti=new_token_id(),
            issued_at=now,
            expires_at=expires,
            session=session,
            act=act,
            family_id=family_id,
        )
        token = self.keys.sign(claims, claims_mod.ACCESS_TOKEN_TYP)
        return IssuedAccessToken(token, claims, max(0, int((expires - now).total_seconds())))

    def refresh_token(
        self, record: RefreshTokenRecord, family: FamilyRecord, session: SessionRecord
    ) -> str:
        claims = claims_mod.refresh_token_claims(
            issuer=self.issuer, token=record, family=family, session=session
        )
        return self.keys.sign_refresh(claims, claims_mod.REFRESH_TOKEN_TYP)

    def id_token(
        self,
        session: SessionRecord,
        client_id: str,
        scope: str,
        *,
        nonce: str | None = None,
        access_token: str | None = None,
    ) -> str:
        now = self.now()
        claims = claims_mod.id_token_claims(
            issuer=self.issuer,
            client_id=client_id,
            session=session,
            scope=scope,
            issued_at=now,
            expires_at=now + timedelta(seconds=self.settings.access_token_ttl),
            nonce=nonce,
            access_token=access_token,
            alg=ID_TOKEN_ALG,
        )
        return self.keys.sign(claims, "JWT", alg=ID_TOKEN_ALG)

    def token_response(
        self,
        session: SessionRecord,
        client_id: str,
        scope: str,
        *,
        family: FamilyRecord | None,
        refresh: RefreshTokenRecord | None,
        nonce: str | None = None,
    ) -> dict[str, Any]:
        """RFC 6749 §5.1 body: access token, refresh token if any, ID token for `openid`."""
        audience = family.audience if family else None
        at = self.access_token(
            session,
            client_id,
            scope,
            audience=audience,
            family_id=family.family_id if family else None,
        )
        body: dict[str, Any] = {
            "access_token": at.token,
            "token_type": "Bearer",
            "expires_in": at.expires_in,
            "scope": scope,
        }
        if family is not None and refresh is not None:
            body["refresh_token"] = self.refresh_token(refresh, family, session)
        if "openid" in scope.split():
            body["id_token"] = self.id_token(
                session, client_id, scope, nonce=nonce, access_token=at.token
            )
        return body

    # --- upstream checks and custody (called from Authlib worker threads) ----------------
    def check_user_upstream(self, session: SessionRecord) -> Identity | None:
        """Re-read the user in ShotGrid: with the broker's script key when configured,
        else with the user's kept ShotGrid token. None when neither is available (the
        check cannot be made; the deployment chose to keep nothing)."""
        from broker.grants import run_async

        if self.settings.shotgrid_script_name and self.settings.shotgrid_script_key:
            identity: Identity = run_async(self.upstream.user_by_id, session.user_id)
            return identity
        if self.settings.upstream_strategy == "custody":
            access = self.custody_access_token(f"session:{session.sid}")
            return run_async(_user_by_id_with_token, self.upstream, session.user_id, access)
        return None

    def custody_access_token(self, key: str) -> str:
        """A live ShotGrid access token from custody (see `custody_tokens`)."""
        return self.custody_tokens(key).access_token

    def custody_tokens(self, key: str) -> UpstreamTokens:
        """The user's kept ShotGrid tokens, refreshed upstream when the access token is
        about to expire. ShotGrid rotates its refresh token on every use, so the refresh
        runs once per key at a time (`_cached_upstream`): a lost rotated refresh token
        would end the user's upstream access."""
        from broker.grants import run_async
        from broker.upstream import UpstreamTokenRejected

        def renew(current: UpstreamTokens | None) -> UpstreamTokens:
            if current is None:
                raise UpstreamTokenRejected("no ShotGrid token is kept for this sign-in")
            if not current.refresh_token or (
                current.refresh_expires_at is not None and current.refresh_expires_at <= self.now()
            ):
                raise UpstreamTokenRejected("the kept ShotGrid refresh token has expired")
            fresh: UpstreamTokens = run_async(self.upstream.refresh, current.refresh_token)
            return fresh

        return self._cached_upstream(key, renew, create=False)

    def sudo_tokens(self, login: str) -> UpstreamTokens:
        """A ShotGrid token acting as `login`: the broker's script with
        `scope=sudo_as_login:<login>`. Cached (sealed) under `sudo:<login>` and shared
        by every request and process until shortly before it expires; its refresh token
        is dropped, a new sudo grant is as cheap as a refresh and keeps nothing."""
        from broker.grants import run_async

        def renew(_current: UpstreamTokens | None) -> UpstreamTokens:
            fresh: UpstreamTokens = run_async(self.upstream.sudo_token, login)
            return UpstreamTokens(
                access_token=fresh.access_token, refresh_token="", expires_at=fresh.expires_at
            )

        return self._cached_upstream(f"sudo:{login}", renew, create=True)

    def _cached_upstream(
        self,
        key: str,
        renew: Callable[[UpstreamTokens | None], UpstreamTokens],
        *,
        create: bool,
    ) -> UpstreamTokens:
        """Single flight over a sealed upstream token record: threads of this process
        queue on a per-key lock, other processes on a store lease, and the winner's
        result lands with a compare-and-swap on the record's version. Everyone else reuses
        the stored token until `UPSTREAM_MARGIN` before it expires."""
        from broker.upstream import UpstreamTokenRejected

        with self._custody_lock(key):
            for _attempt in range(100):
                record = self.store.get_upstream_tokens(key)
                if record is None and not create:
                    raise UpstreamTokenRejected("no ShotGrid token is kept for this sign-in")
                tokens = self.open_upstream(record) if record is not None else None
                now = self.now()
                if tokens is not None and tokens.expires_at - now > UPSTREAM_MARGIN:
                    return tokens
                owner = new_token_id()
                lease = f"upstream-refresh:{key}"
                if self.store.try_lease(lease, owner, now, timedelta(seconds=30)):
                    try:
                        current = self.store.get_upstream_tokens(key)
                        if _version(current) != _version(record):
                            continue  # another process renewed meanwhile: use its result
                        fresh = renew(tokens)
                        if record is None:
                            self.store.put_upstream_tokens(
                                self.seal_upstream(key, fresh, version=1)
                            )
                        elif not self.store.swap_upstream_tokens(
                            record.version,
                            self.seal_upstream(key, fresh, version=record.version + 1),
                        ):
                            continue
                        return fresh
                    finally:
                        self.store.release_lease(lease, owner)
                # Another process holds the lease: wait for its result to land in the store.
                self._wait_for_version_change(key, _version(record), lease)
            raise UpstreamTokenRejected("could not obtain a fresh ShotGrid token")

    def _wait_for_version_change(self, key: str, version: int | None, lease: str) -> None:
        import time

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if _version(self.store.get_upstream_tokens(key)) != version:
                return
            # The holder may have failed without writing: a free lease ends the wait.
            probe = new_token_id()
            if self.store.try_lease(lease, probe, self.now(), timedelta(seconds=1)):
                self.store.release_lease(lease, probe)
                return
            time.sleep(0.05)  # cross-process: the store is the only channel we share

    def _custody_lock(self, key: str) -> threading.Lock:
        return self._locks[hash(key) % len(self._locks)]


def _version(record: UpstreamTokenRecord | None) -> int | None:
    return record.version if record is not None else None


async def _user_by_id_with_token(upstream: Any, user_id: int, access: str) -> Identity:
    identity: Identity = await upstream.user_by_id(user_id, access_token=access)
    return identity
