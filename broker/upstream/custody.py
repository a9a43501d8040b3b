"""The user's ShotGrid tokens on the broker's side: kept sealed (the `custody` strategy),
obtained with the broker's script (`sudo`), and fetched once for everyone.

A cross-process single flight over a sealed record: threads of this process queue on a
per-key lock, other processes and replicas on a store lease, and the winner's result lands
with a compare-and-swap on the record's version; everyone else reuses the stored token
until `UPSTREAM_MARGIN` before it expires. In custody, ShotGrid rotates its refresh token
on every use, so a lost rotated token would end the user's upstream access: the swap makes
that impossible.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Literal, Protocol

from broker.clock import Clock, now_ms
from broker.store import LeaseStore, SessionRecord, UpstreamTokenRecord, UpstreamTokenStore, ms
from broker.tokens.crypto import Sealer
from broker.tokens.secrets import new_token_id
from broker.upstream import (
    DirectoryUpstream,
    Identity,
    RefreshUpstream,
    SudoUpstream,
    UpstreamTokenRejected,
    UpstreamTokens,
)

UPSTREAM_MARGIN = timedelta(seconds=60)
"""A kept ShotGrid token is renewed this long before it expires, so a token handed out
still has a useful life (and clock skew with ShotGrid cannot make it arrive dead)."""

LEASE_TTL = timedelta(seconds=30)
WAIT_FOR_OTHER_PROCESS = 15.0

Strategy = Literal["sudo", "custody"]


class CustodyStore(UpstreamTokenStore, LeaseStore, Protocol):
    """What `Custody` needs of a store."""


class CustodyUpstream(RefreshUpstream, SudoUpstream, DirectoryUpstream, Protocol):
    """The upstream capabilities custody uses."""


class Custody:
    def __init__(
        self,
        store: CustodyStore,
        sealer: Sealer,
        upstream: CustodyUpstream,
        *,
        strategy: Strategy,
        clock: Clock,
    ) -> None:
        self.store = store
        self.sealer = sealer
        self.upstream = upstream
        self.strategy = strategy
        self.clock = clock
        # Striped locks: bounded memory whatever the number of users; two keys that share
        # a stripe only queue behind each other, which is harmless.
        self._locks = [threading.Lock() for _ in range(64)]

    # --- sealing -------------------------------------------------------------------------
    def seal(self, key: str, tokens: UpstreamTokens, *, version: int) -> UpstreamTokenRecord:
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

    def open(self, record: UpstreamTokenRecord) -> UpstreamTokens:
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

    # --- what the grants ask ---------------------------------------------------------------
    def keep(self, session: SessionRecord, tokens: UpstreamTokens) -> None:
        """At sign-in. Custody only: seal the user's ShotGrid tokens, bound to the session;
        `sudo` keeps nothing of the user's."""
        if self.strategy == "custody":
            key = session_key(session.sid)
            self.store.put_upstream_tokens(self.seal(key, tokens, version=1))

    def forget(self, sid: str) -> None:
        self.store.delete_upstream_tokens(session_key(sid))

    def tokens_for(self, session: SessionRecord) -> UpstreamTokens:
        """A live ShotGrid token acting as the session's user, by the configured strategy."""
        if self.strategy == "sudo":
            return self.sudo_tokens(session.login)
        return self.custody_tokens(custody_key(session))

    def check_user(self, session: SessionRecord) -> Identity | None:
        """Re-read the user in ShotGrid: with the broker's script key when the upstream has
        one, else with the user's kept ShotGrid token. None when neither is available
        (the deployment chose to keep nothing and gave no script)."""
        if self.upstream.script_configured:
            return self.upstream.user_by_id(session.user_id)
        if self.strategy == "custody":
            access = self.custody_tokens(custody_key(session)).access_token
            return self.upstream.user_by_id(session.user_id, access_token=access)
        return None

    def custody_tokens(self, key: str) -> UpstreamTokens:
        """The user's kept ShotGrid tokens, refreshed upstream when the access token is
        about to expire (once per key at a time, see the module docstring)."""

        def renew(current: UpstreamTokens | None) -> UpstreamTokens:
            if current is None:
                raise UpstreamTokenRejected("no ShotGrid token is kept for this sign-in")
            if not current.refresh_token or (
                current.refresh_expires_at is not None
                and current.refresh_expires_at <= now_ms(self.clock)
            ):
                raise UpstreamTokenRejected("the kept ShotGrid refresh token has expired")
            return self.upstream.refresh(current.refresh_token)

        return self._single_flight(key, renew, create=False)

    def sudo_tokens(self, login: str) -> UpstreamTokens:
        """A ShotGrid token acting as `login`: the broker's script with
        `scope=sudo_as_login:<login>`, cached (sealed) under `sudo:<login>` and shared by
        every request and process until shortly before it expires. Its refresh token is
        dropped: a new sudo grant is as cheap as a refresh and keeps nothing."""

        def renew(_current: UpstreamTokens | None) -> UpstreamTokens:
            fresh = self.upstream.sudo_token(login)
            return UpstreamTokens(
                access_token=fresh.access_token, refresh_token="", expires_at=fresh.expires_at
            )

        return self._single_flight(f"sudo:{login}", renew, create=True)

    # --- single flight -------------------------------------------------------------------------
    def _single_flight(
        self,
        key: str,
        renew: Callable[[UpstreamTokens | None], UpstreamTokens],
        *,
        create: bool,
    ) -> UpstreamTokens:
        with self._locks[hash(key) % len(self._locks)]:
            for _attempt in range(100):
                record = self.store.get_upstream_tokens(key)
                if record is None and not create:
                    raise UpstreamTokenRejected("no ShotGrid token is kept for this sign-in")
                tokens = self.open(record) if record is not None else None
                now = now_ms(self.clock)
                if tokens is not None and tokens.expires_at - now > UPSTREAM_MARGIN:
                    return tokens
                owner = new_token_id()
                lease = f"upstream-refresh:{key}"
                if self.store.try_lease(lease, owner, now, LEASE_TTL):
                    try:
                        current = self.store.get_upstream_tokens(key)
                        if _version(current) != _version(record):
                            continue  # another process renewed meanwhile: use its result
                        fresh = renew(tokens)
                        if record is None:
                            self.store.put_upstream_tokens(self.seal(key, fresh, version=1))
                        elif not self.store.swap_upstream_tokens(
                            record.version, self.seal(key, fresh, version=record.version + 1)
                        ):
                            continue
                        return fresh
                    finally:
                        self.store.release_lease(lease, owner)
                # Another process holds the lease: wait for its result to land in the store.
                self._wait_for_version_change(key, _version(record), lease)
            raise UpstreamTokenRejected("could not obtain a fresh ShotGrid token")

    def _wait_for_version_change(self, key: str, version: int | None, lease: str) -> None:
        deadline = time.monotonic() + WAIT_FOR_OTHER_PROCESS
        while time.monotonic() < deadline:
            if _version(self.store.get_upstream_tokens(key)) != version:
                return
            # The holder may have failed without writing: a free lease ends the wait.
            probe = new_token_id()
            if self.store.try_lease(lease, probe, now_ms(self.clock), timedelta(seconds=1)):
                self.store.release_lease(lease, probe)
                return
            time.sleep(0.05)  # across processes the store is the only channel we share


def session_key(sid: str) -> str:
    return f"session:{sid}"


def custody_key(session: SessionRecord) -> str:
    """Where the session's kept ShotGrid tokens are: its own, or those of the browser
    session that approved it (a device session shares them)."""
    return session_key(session.upstream_sid or session.sid)


def _version(record: UpstreamTokenRecord | None) -> int | None:
    return record.version if record is not None else None
