"""Token validation for a resource server: key set + revocations + verification + cache.

`TokenValidator.validate` never touches the network: a background thread per validator
(`background.Refresher`, started at construction, stopped by `close()`) keeps the key set
and the revocation set current, and validation reads them from memory. The slow paths
wait briefly and boundedly for that thread: no key set yet (`startup_wait`), an unknown
kid (`kid_wait`); `avalidate` awaits without blocking the event loop, and `validate`
called on an event loop's thread does not wait at all.

A token it has already verified is answered from a bounded LRU keyed by the token
itself, until the token's `exp` (plus the leeway), so the signature is checked once per
token rather than once per request; the revocation set is checked on every call, hits
included, so a token revoked after it was cached is refused from the next call on.
Failures are never cached.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Collection
from types import TracebackType

import httpx

from .background import Refresher, RevocationFeed, Waiter
from .jwks import JWKSCache
from .revocations import RevocationSet
from .verify import (
    DEFAULT_LEEWAY,
    REQUIRED_CLAIMS,
    AccessTokenClaims,
    Clock,
    JWKSUnavailable,
    KeySet,
    MalformedToken,
    RevocationsUnavailable,
    TokenRevoked,
    UnknownKey,
    check_claims,
    check_form,
    verify_signature,
)

log = logging.getLogger("broker_client.validator")

__all__ = ["TokenValidator", "ValidationCache"]


class ValidationCache:
    """A thread-safe LRU of verified claims, each entry good until its deadline."""

    def __init__(self, maxsize: int = 10_000) -> None:
        if maxsize < 0:
            raise ValueError("maxsize must be >= 0")
        self.maxsize = maxsize
        self._entries: OrderedDict[str, tuple[float, AccessTokenClaims]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, token: str, now: float) -> AccessTokenClaims | None:
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                return None
            if now >= entry[0]:
                del self._entries[token]
                return None
            self._entries.move_to_end(token)
            return entry[1]

    def put(self, token: str, claims: AccessTokenClaims, until: float) -> None:
        if self.maxsize == 0:
            return
        with self._lock:
            self._entries[token] = (until, claims)
            self._entries.move_to_end(token)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _on_event_loop() -> bool:
    """Whether this thread is running an event loop (a sync call inside async code)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class TokenValidator:
    """Validate broker access tokens for one issuer and audience.

    Network: `jwks` defaults to a `JWKSCache` for `issuer` over `http_client` (or a
    client of its own); all its fetches and the revocation feed's run on this
    validator's background thread. Use it as a context manager, or call `close()`.

    Revocations (`revocations=True`, the default): the broker's revocation feed
    (`revocation_feed_endpoint` from discovery, or `revocation_feed_uri`) is read every
    `poll` seconds, incrementally with its cursor, in its signed form unless
    `signed_feed=False`; a token whose `sid`, `fam` or `jti` it names is refused with
    `TokenRevoked`. The set holds at most `max_revocations` entries (past that, the
    entries closest to expiry are dropped first, with a warning). If the feed cannot be
    read for more than `revocation_stale_after` seconds: `fail_closed=False` (default)
    keeps validating signatures and logs one warning per outage; `fail_closed=True`
    refuses every token with `RevocationsUnavailable` (a `JWKSUnavailable`: 503) until
    the feed answers again, and from start-up until it has answered once.

    Waiting: at most `startup_wait` seconds for the first key set (then
    `JWKSUnavailable`), at most `kid_wait` seconds for the refetch an unknown kid asks
    for (then `JWKSUnavailable`, retry shortly); no waiting at all in `validate` called
    on an event loop's thread (use `avalidate` there).

    `signature_checks` and `cache_hits` count work done, for metrics and tests.
    """

    def __init__(
        self,
        issuer: str,
        audience: str | Collection[str] = "dna-api",
        *,
        jwks: JWKSCache | None = None,
        http_client: httpx.Client | None = None,
        async_http_client: httpx.AsyncClient | None = None,
        clock: Clock = time.time,
        leeway: float = DEFAULT_LEEWAY,
        required_claims: Collection[str] = REQUIRED_CLAIMS,
        cache_size: int = 10_000,
        revocations: bool = True,
        poll: float = 5.0,
        revocation_stale_after: float = 60.0,
        fail_closed: bool = False,
        revocation_feed_uri: str | None = None,
        signed_feed: bool = True,
        max_revocations: int = 100_000,
        kid_wait: float = 0.25,
        startup_wait: float = 1.0,
    ) -> None:
        if async_http_client is not None:
            warnings.warn(
                "TokenValidator(async_http_client=...) is no longer used: every fetch "
                "runs on the validator's own thread with a sync client; pass "
                "http_client= to configure it (proxies, TLS)",
                DeprecationWarning,
                stacklevel=2,
            )
        self.issuer = issuer
        self.audience = audience if isinstance(audience, str) else frozenset(audience)
        owns_jwks = jwks is None
        self.jwks = jwks or JWKSCache(issuer, http_client=http_client, clock=clock)
        self._clock = clock
        self.leeway = leeway
        self.required_claims = frozenset(required_claims)
        self.cache = ValidationCache(cache_size)
        self.kid_wait = kid_wait
        self.startup_wait = startup_wait
        self.fail_closed = fail_closed
        self.revocation_stale_after = revocation_stale_after
        self.revocations: RevocationSet | None = None
        feed: RevocationFeed | None = None
        if revocations:
            self.revocations = RevocationSet(max_revocations, grace=leeway)
            feed = RevocationFeed(
                issuer,
                self.jwks,
                uri=revocation_feed_uri,
                signed=signed_feed,
                clock=clock,
                leeway=leeway,
            )
        self.feed = feed
        self.refresher = Refresher(
            self.jwks,
            clock=clock,
            feed=feed,
            revocations=self.revocations,
            poll=poll,
            stale_after=revocation_stale_after,
            owns_jwks=owns_jwks,
        )
        # A validator dropped without close() still stops its thread.
        self._finalizer = weakref.finalize(self, self.refresher.close, 0.0)
        self._loop_warned = False
        self.signature_checks = 0
        self.cache_hits = 0

    # --- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Stop the background thread (and close the HTTP client it made, if any)."""
        self._finalizer.detach()
        self.refresher.close()

    def __enter__(self) -> TokenValidator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def refresh(self, timeout: float = 10.0, *, force: bool = True) -> bool:
        """Have the background thread read the feed (and the key set, if due) now, and
        wait for it; False if it did not finish within `timeout`. `force=False` does
        only what the clock says is due (tests move an injected clock, then call it)."""
        return self.refresher.refresh(timeout, force=force)

    def now(self) -> float:
        """The validator's clock (epoch seconds)."""
        return self._clock()

    async def akeys_for(self, kid: str | None = None) -> KeySet:
        """The key set, for other tokens the broker signs (logout tokens): waits, without
        blocking the loop, like `avalidate` does, for the first key set and, when `kid`
        is not in it, for the refetch it may bring. The caller checks `kid` is there."""
        keys = self.jwks.current(self._clock())
        if keys is None:
            await self._await(self.refresher.need_keys(), self.startup_wait)
            keys = self._keys_or_unavailable()
        if kid is None or kid in keys:
            return keys
        waiter = self.refresher.need_kid(kid)
        if waiter is None:
            return keys
        if not await self._await(waiter, self.kid_wait):
            raise self._refetching()
        return self._keys_or_unavailable()

    # --- validation ---------------------------------------------------------------------

    def _cached(self, token: str, now: float) -> AccessTokenClaims | None:
        if token.__class__ is not str:
            raise MalformedToken("the token is not a string")
        hit = self.cache.get(token, now)
        if hit is not None:
            self.cache_hits += 1
        return hit

    def validate(self, token: str) -> AccessTokenClaims:
        """Claims of a valid token; `InvalidToken` (401) or `JWKSUnavailable` (503)."""
        now = self._clock()
        hit = self._cached(token, now)
        if hit is not None:
            self._admit(hit, now)
            return hit
        keys = self.jwks.current(now)
        if keys is None:
            check_form(token)  # garbage is a 401 even without keys
            self._wait(self.refresher.need_keys(), self.startup_wait)
            keys = self._keys_or_unavailable()
        if self.fail_closed and self.revocations is not None and self.refresher.feed_ok_at is None:
            self._wait(self.refresher.need_feed(), self.startup_wait)
        try:
            return self._verify(token, keys, now)
        except UnknownKey as exc:
            waiter = self.refresher.need_kid(exc.kid)
            if waiter is None:
                raise
            if not self._wait(waiter, self.kid_wait):
                raise self._refetching() from exc
        return self._verify(token, self._keys_or_unavailable(), now)

    async def avalidate(self, token: str) -> AccessTokenClaims:
        """`validate` for asyncio code: every wait is awaited, the loop never blocks."""
        now = self._clock()
        hit = self._cached(token, now)
        if hit is not None:
            self._admit(hit, now)
            return hit
        keys = self.jwks.current(now)
        if keys is None:
            check_form(token)
            await self._await(self.refresher.need_keys(), self.startup_wait)
            keys = self._keys_or_unavailable()
        if self.fail_closed and self.revocations is not None and self.refresher.feed_ok_at is None:
            await self._await(self.refresher.need_feed(), self.startup_wait)
        try:
            return self._verify(token, keys, now)
        except UnknownKey as exc:
            waiter = self.refresher.need_kid(exc.kid)
            if waiter is None:
                raise
            if not await self._await(waiter, self.kid_wait):
                raise self._refetching() from exc
        return self._verify(token, self._keys_or_unavailable(), now)

    def _wait(self, waiter: Waiter | None, timeout: float) -> bool:
        if waiter is None:
            return False
        if _on_event_loop():
            # A sync call inside async code (DNA's async dependency calling the sync
            # validate_token): waiting would stall every request on the loop.
            if not self._loop_warned:
                self._loop_warned = True
                log.warning(
                    "TokenValidator.validate() called on an event loop thread: it will not "
                    "wait for the key set; use avalidate() in async code"
                )
            return waiter.done()
        return waiter.wait(timeout)

    @staticmethod
    async def _await(waiter: Waiter | None, timeout: float) -> bool:
        return False if waiter is None else await waiter.wait_async(timeout)

    def _keys_or_unavailable(self) -> KeySet:
        now = self._clock()
        keys = self.jwks.current(now)
        if keys is None:
            raise JWKSUnavailable("the broker's key set is unavailable", self.jwks.retry_after(now))
        return keys

    @staticmethod
    def _refetching() -> JWKSUnavailable:
        return JWKSUnavailable("the broker's key set is being refetched", 1)

    def _admit(self, claims: AccessTokenClaims, now: float) -> None:
        """Refuse a revoked token, or any token when fail-closed and the feed is stale.

        Runs on every call, cache hits included: a few float comparisons and at most
        three dict lookups.
        """
        revocations = self.revocations
        if revocations is None:
            return
        refresher = self.refresher
        if refresher.feed_ok_at is None or refresher.feed_stale(now):
            if self.fail_closed:
                raise RevocationsUnavailable(
                    "the broker's revocation feed is unavailable",
                    refresher.feed_retry_after(now),
                )
            if refresher.feed_stale(now):
                refresher.note_stale(now)
        kind = revocations.match(claims._claims, now)
        if kind is not None:
            raise TokenRevoked(kind)

    def _verify(self, token: str, keys: KeySet, now: float) -> AccessTokenClaims:
        self.signature_checks += 1
        payload = verify_signature(token, keys)
        claims = check_claims(
            payload,
            issuer=self.issuer,
            audience=self.audience,
            now=now,
            leeway=self.leeway,
            required_claims=self.required_claims,
        )
        self._admit(claims, now)
        if claims.exp is not None:
            self.cache.put(token, claims, claims.exp + self.leeway)
        return claims
