"""The validator's background thread: the only place where the network is used.

`Refresher` owns one daemon thread per validator. It keeps the key set fresh (through
`JWKSCache`'s sync methods, which honour Cache-Control, the retry interval and the
unknown-kid rate limit), polls the revocation feed every `poll` seconds with its cursor
(`RevocationFeed`), and purges expired revocations. Callers on the hot path only read
memory; on the rare slow paths (no key set yet, an unknown kid, a fail-closed validator
that has not read the feed yet) they ask for an attempt and wait for its `Waiter` for a
short, bounded time: a thread blocks on an Event, an asyncio task awaits a future that
the thread resolves with `call_soon_threadsafe`, so the event loop is never blocked.

Scheduling uses the injected clock for *what is due* and real time only to sleep, at
most `poll` seconds at a time: a test moves the clock and calls `refresh()` instead of
waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import Callable
from typing import Any

import httpx

from .jwks import JWKSCache, parse_max_age
from .revocations import FeedPage, MalformedFeed, RevocationSet, parse_feed
from .verify import (
    DEFAULT_LEEWAY,
    Clock,
    InvalidToken,
    JWKSUnavailable,
    KeySet,
    UnknownKey,
    verify_typed_jws,
)

__all__ = ["FEED_TYPE", "FeedUnavailable", "Refresher", "RevocationFeed", "Waiter"]

log = logging.getLogger("broker_client.background")

FEED_TYPE = "revocations+jwt"
_MAX_PENDING_KIDS = 64


class Waiter:
    """A one-shot "done" signal that threads wait on and asyncio tasks await."""

    __slots__ = ("_event", "_futures", "_lock")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def fire(self) -> None:
        with self._lock:
            self._event.set()
            futures, self._futures = self._futures, []
        for loop, future in futures:
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, future)

    def done(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout) if timeout > 0 else self._event.is_set()

    async def wait_async(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._event.is_set():
                return True
            self._futures.append((loop, future))
        try:
            if timeout > 0:
                await asyncio.wait_for(future, timeout)
                return True
        except TimeoutError:
            pass
        # Gave up: do not keep the future until the fire.
        with self._lock, contextlib.suppress(ValueError):
            self._futures.remove((loop, future))
        return self._event.is_set()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class FeedUnavailable(Exception):
    """The feed could not be read (HTTP error, bad answer, no endpoint advertised)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RevocationFeed:
    """`GET {revocation_feed_endpoint}?since=CURSOR`, JSON or signed (`application/jwt`).

    Keeps the cursor and the ETag; a 304 means "nothing new". The signed form is
    verified with the broker's key set (header `typ: revocations+jwt`, `iss`, `exp`),
    which gives integrity over plain HTTP; `signed=False` reads the JSON form.
    """

    def __init__(
        self,
        issuer: str,
        jwks: JWKSCache,
        *,
        uri: str | None = None,
        signed: bool = True,
        clock: Clock,
        leeway: float = DEFAULT_LEEWAY,
    ) -> None:
        self.issuer = issuer
        self.jwks = jwks
        self._configured_uri = uri
        self.signed = signed
        self._clock = clock
        self.leeway = leeway
        self.cursor: str | None = None
        self.max_age: float | None = None
        self._etag: tuple[str, str] | None = None  # (url, etag) of the last 200
        self.reads = 0  # HTTP reads attempted (for metrics and tests)

    def _endpoint(self, client: httpx.Client) -> str:
        if self._configured_uri is not None:
            return self._configured_uri
        metadata = self.jwks.metadata
        if metadata is None:  # the key set came from an explicit jwks_uri: discover here
            url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            response = client.get(url, headers={"accept": "application/json"})
            response.raise_for_status()
            metadata = response.json()
            if not isinstance(metadata, dict) or metadata.get("issuer") != self.issuer:
                raise FeedUnavailable("discovery metadata names another issuer")
        uri = metadata.get("revocation_feed_endpoint")
        if not isinstance(uri, str) or not uri:
            raise FeedUnavailable("the broker advertises no revocation_feed_endpoint")
        return uri

    def fetch(
        self, client: httpx.Client, key_set_for: Callable[[str], KeySet] | None = None
    ) -> FeedPage | None:
        """One read; None when the broker answered 304 (nothing changed).

        `key_set_for` runs the refetch a feed signed by a newer key asks for (default: the
        cache's own); the refresher passes one that callers waiting for that key can see.
        """
        self.reads += 1
        try:
            endpoint = self._endpoint(client)
            params = {"since": self.cursor} if self.cursor is not None else {}
            url = str(httpx.URL(endpoint, params=params))
            headers = {"accept": "application/jwt" if self.signed else "application/json"}
            if self._etag is not None and self._etag[0] == url:
                headers["if-none-match"] = self._etag[1]
            response = client.get(url, headers=headers)
        except httpx.HTTPError as exc:
            raise FeedUnavailable(f"the revocation feed is unreachable: {exc}") from exc
        except ValueError as exc:  # discovery answered something that is not JSON
            raise FeedUnavailable(f"discovery failed: {exc}") from exc
        if response.status_code == 304:
            self.max_age = parse_max_age(response.headers)
            return None
        if response.status_code != 200:
            retry = response.headers.get("retry-after", "")
            raise FeedUnavailable(
                f"the revocation feed answered {response.status_code}",
                float(retry) if retry.isdigit() else None,
            )
        try:
            page = parse_feed(self._document(response, key_set_for), self.issuer)
        except (MalformedFeed, InvalidToken, ValueError) as exc:
            raise FeedUnavailable(f"the revocation feed answered badly: {exc}") from exc
        etag = response.headers.get("etag")
        self._etag = (url, etag) if etag else None
        self.max_age = parse_max_age(response.headers)
        self.cursor = page.cursor
        if page.skipped:
            log.warning("the revocation feed sent %d malformed entries: skipped", page.skipped)
        return page

    def _document(
        self, response: httpx.Response, key_set_for: Callable[[str], KeySet] | None
    ) -> Any:
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if not self.signed:
            if kind != "application/json":
                raise MalformedFeed(f"expected application/json, got {kind or 'nothing'}")
            return response.json()
        if kind != "application/jwt":
            raise MalformedFeed(f"expected application/jwt, got {kind or 'nothing'}")
        token = response.text.strip()
        keys = self.jwks.current()
        try:
            if keys is None:
                raise UnknownKey("")
            claims = verify_typed_jws(token, keys, FEED_TYPE)
        except UnknownKey as exc:  # signed by a key newer than ours: one rate-limited refetch
            try:
                if not exc.kid:
                    keys = self.jwks.key_set()
                else:
                    keys = (key_set_for or self.jwks.key_set_for)(exc.kid)
            except JWKSUnavailable as unavailable:
                raise MalformedFeed(str(unavailable)) from unavailable
            claims = verify_typed_jws(token, keys, FEED_TYPE)
        now = self._clock()
        exp, iat = claims.get("exp"), claims.get("iat")
        if exp.__class__ not in (int, float) or now >= exp + self.leeway:
            raise MalformedFeed("the signed revocation feed has expired")
        if iat.__class__ in (int, float) and iat > now + self.leeway:
            raise MalformedFeed("the signed revocation feed was issued in the future")
        return claims


class Refresher:
    """One daemon thread doing every fetch for one validator (see the module docstring).

    `revocations` and `feed` are None when the validator does not check revocations.
    """

    def __init__(
        self,
        jwks: JWKSCache,
        *,
        clock: Clock,
        feed: RevocationFeed | None = None,
        revocations: RevocationSet | None = None,
        poll: float = 5.0,
        stale_after: float = 60.0,
        owns_jwks: bool = False,
        name: str = "broker-client-refresher",
    ) -> None:
        if poll <= 0:
            raise ValueError("poll must be > 0 seconds")
        self.jwks = jwks
        self.feed = feed
        self.revocations = revocations
        self.poll = poll
        self.stale_after = stale_after
        self._clock = clock
        self._owns_jwks = owns_jwks

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._kicked = True  # the first cycle runs at once
        self._force_feed = False
        self._stopping = False
        self._pending_kids: set[str] = set()
        self._keys_next = Waiter()  # fired at the end of the next key-set step
        self._keys_inflight: Waiter | None = None
        self._feed_next = Waiter()
        self._feed_inflight: Waiter | None = None
        self._cycle_next = Waiter()
        self.ready = Waiter()  # fired when the first cycle (key set, then feed) is done

        self.started_at = clock()
        self.feed_ok_at: float | None = None  # clock time of the last successful read
        self._next_poll = -math.inf
        self._outage_warned = False
        self.cycles = 0
        self.feed_failures = 0

        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # --- asked for by callers (never does I/O) ------------------------------------------

    def need_keys(self) -> Waiter | None:
        """A waiter for an attempt at the key set, or None if none may happen now (the
        last one failed and the retry interval runs): the caller refuses at once."""
        with self._lock:
            if self._keys_inflight is not None:
                return self._keys_inflight
            if not self._kicked and not self.jwks.refresh_due(self._clock()):
                return None
            self._kick()
            return self._keys_next

    def need_kid(self, kid: str) -> Waiter | None:
        """A waiter for a refetch that may bring `kid`, or None when the rate limit says no."""
        with self._lock:
            if kid in self._pending_kids:
                return self._keys_next
            if not self.jwks.kid_refetch_allowed(self._clock()):
                return self._keys_inflight  # one running may still bring it
            if len(self._pending_kids) >= _MAX_PENDING_KIDS:
                return self._keys_next
            self._pending_kids.add(kid)
            self._kick()
            return self._keys_next

    def need_feed(self) -> Waiter | None:
        """A waiter for the next feed read (a fail-closed validator that has none yet),
        or None while the last read failed and the next one is not due."""
        if self.feed is None:
            return None
        with self._lock:
            if self._feed_inflight is not None:
                return self._feed_inflight
            if self._clock() < self._next_poll:
                return None
            self._force_feed = True
            self._kick()
            return self._feed_next

    def refresh(self, timeout: float = 10.0, *, force: bool = True) -> bool:
        """Run one cycle now (the feed read even if not due, when `force`) and wait for it.

        For tests and for applications that want a fresh set at a known moment (after
        start-up, say). Returns False if the cycle did not finish within `timeout`.
        """
        with self._lock:
            if force:
                self._force_feed = True
            self._kick()
            waiter = self._cycle_next
        return waiter.wait(timeout)

    def wake(self) -> None:
        """Have the thread look at what is due now (after a clock moved, in tests)."""
        with self._lock:
            self._kick()

    def _kick(self) -> None:  # under the lock
        self._kicked = True
        self._wake.notify()

    # --- state read by the validator --------------------------------------------------

    def feed_stale(self, now: float) -> bool:
        """Past `stale_after` since the last good read (or since start, if none yet)."""
        since = self.feed_ok_at if self.feed_ok_at is not None else self.started_at
        return now - since > self.stale_after

    def note_stale(self, now: float) -> None:
        """Warn once per outage that revocations are no longer current."""
        if self._outage_warned:  # the common case during an outage: no lock
            return
        with self._lock:
            if self._outage_warned:
                return
            self._outage_warned = True
        since = self.feed_ok_at if self.feed_ok_at is not None else self.started_at
        log.warning(
            "the broker's revocation feed has not been read for %.0f s: tokens revoked "
            "since then are still accepted until they expire (fail_closed=False)",
            now - since,
        )

    def feed_retry_after(self, now: float) -> int:
        return max(1, math.ceil(self._next_poll - now)) if now < self._next_poll else 1

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # --- the thread -------------------------------------------------------------------

    def close(self, timeout: float = 0.2) -> None:
        """Stop the thread. A fetch in progress ends by its own timeout; the thread
        then exits (it is a daemon, so it never holds the process up)."""
        with self._lock:
            self._stopping = True
            self._wake.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._stopping:
                        return
                    if not self._kicked:
                        self._wake.wait(self._sleep_for())
                    if self._stopping:
                        return
                    self._kicked = False
                    force_feed, self._force_feed = self._force_feed, False
                try:
                    self._cycle(force_feed)
                except Exception:  # never let the thread die: validation depends on it
                    log.exception("the broker_client background refresh failed")
        finally:
            for waiter in (self._keys_next, self._feed_next, self._cycle_next, self.ready):
                waiter.fire()  # nobody waits forever on a stopped thread
            if self._owns_jwks:
                self.jwks.close()

    def _sleep_for(self) -> float:
        now = self._clock()
        due = [self.jwks.next_check()]
        if self.feed is not None:
            due.append(self._next_poll)
        wait = min(due) - now
        # At least 10 ms (no spinning on a clock that does not move), at most one poll.
        return min(self.poll, max(0.01, wait))

    def _cycle(self, force_feed: bool) -> None:
        with self._lock:
            kids, self._pending_kids = self._pending_kids, set()
            keys_waiter, self._keys_next = self._keys_next, Waiter()
            self._keys_inflight = keys_waiter
            cycle_waiter, self._cycle_next = self._cycle_next, Waiter()
        try:
            self._refresh_keys(kids)
        finally:
            with self._lock:
                self._keys_inflight = None
            keys_waiter.fire()
        if self._stopping:
            return
        if self.feed is not None and self.revocations is not None:
            now = self._clock()
            if force_feed or now >= self._next_poll:
                with self._lock:
                    feed_waiter, self._feed_next = self._feed_next, Waiter()
                    self._feed_inflight = feed_waiter
                try:
                    self._poll_feed(self.feed, self.revocations)
                finally:
                    with self._lock:
                        self._feed_inflight = None
                    feed_waiter.fire()
            now = self._clock()
            self.revocations.purge(now)
            if self.feed_stale(now):
                self.note_stale(now)
        self.cycles += 1
        cycle_waiter.fire()
        self.ready.fire()

    def _key_step_for(self, kid: str) -> KeySet:
        """The refetch a feed signed by a newer key asks for, run as a key step: a
        `validate` meeting the same new kid meanwhile is rate-limited out of its own
        refetch, and waits for this one instead of refusing a good token."""
        with self._lock:
            waiter, self._keys_next = self._keys_next, Waiter()
            self._keys_inflight = waiter
        try:
            return self.jwks.key_set_for(kid)
        finally:
            with self._lock:
                self._keys_inflight = None
            waiter.fire()

    def _refresh_keys(self, kids: set[str]) -> None:
        try:
            for kid in kids:
                self.jwks.key_set_for(kid)  # fetches at most once: rate-limited inside
            if self.jwks.refresh_due(self._clock()):
                self.jwks.key_set()
        except JWKSUnavailable:
            pass  # logged by the cache; callers see it through current() being None

    def _poll_feed(self, feed: RevocationFeed, revocations: RevocationSet) -> None:
        client = self.jwks.http_client()
        try:
            page = feed.fetch(client, self._key_step_for)
        except FeedUnavailable as exc:
            self.feed_failures += 1
            now = self._clock()
            delay = self.poll if exc.retry_after is None else max(self.poll, exc.retry_after)
            self._next_poll = now + min(delay, max(self.poll, self.stale_after / 2))
            if self.feed_ok_at is not None and not self.feed_stale(now):
                log.debug("reading the revocation feed failed: %s", exc)
            elif not self._outage_warned:
                log.warning("reading the revocation feed failed: %s", exc)
            return
        now = self._clock()
        if page is not None:
            if page.full:
                revocations.replace(page.entries, now)
            else:
                revocations.merge(page.entries, now)
        if self._outage_warned:
            log.info("the broker's revocation feed is readable again")
        with self._lock:
            self.feed_ok_at = now
            self._outage_warned = False
        # Cache-Control is honoured (never poll faster than max-age), within reason: a
        # long max-age from a misconfigured proxy must not outlast the staleness bound.
        max_age = feed.max_age or 0.0
        self._next_poll = now + max(self.poll, min(max_age, self.stale_after / 2))
