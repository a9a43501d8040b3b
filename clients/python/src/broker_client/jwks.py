"""The broker's key set, fetched through discovery and cached (OIDC Discovery §4, RFC 7517).

`JWKSCache` finds `jwks_uri` in `{issuer}/.well-known/openid-configuration` (or is given
it), fetches the JWKS over an httpx client that the caller may pass in, and keeps the
loaded `KeySet`:

- fresh for the response's `Cache-Control: max-age` (minus `Age`), clamped to
  [`min_max_age`, `max_max_age`]; `default_max_age` when the header says nothing;
- an unknown kid (a rotation) refetches at most once per `unknown_kid_interval`, and
  only one caller fetches at a time (single flight, for threads and for asyncio tasks):
  the others wait for that fetch and use its result;
- while the broker is unreachable the last good key set keeps serving until
  `max_stale` seconds past its freshness, retried every `retry_interval`; after that
  `JWKSUnavailable`.

Sync (`key_set`, `key_set_for`) and async (`akey_set`, `akey_set_for`) share one state,
guarded by a lock held only for bookkeeping, never across I/O. `TokenValidator` calls the
sync ones on its own background thread only, and reads the result with `current`, which
never does I/O.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import weakref
from typing import Any

import httpx

from .verify import Clock, JWKSUnavailable, KeySet

__all__ = ["JWKSCache", "parse_max_age"]

log = logging.getLogger("broker_client.jwks")

_FETCH_ERRORS = (httpx.HTTPError, ValueError)


def parse_max_age(headers: httpx.Headers) -> float | None:
    """Seconds a response may be reused per RFC 9111 §5.2.2 (private cache), or None."""
    directives: dict[str, str | None] = {}
    for part in headers.get("cache-control", "").split(","):
        name, _, value = part.strip().partition("=")
        if name:
            directives[name.lower()] = value.strip('"') if value else None
    if "no-store" in directives or "no-cache" in directives:
        return 0.0
    raw = directives.get("max-age")
    if raw is None:
        return None
    try:
        max_age = float(int(raw))
        age = float(int(headers.get("age", "0")))
    except ValueError:
        return None
    return max(0.0, max_age - age)


class JWKSCache:
    def __init__(
        self,
        issuer: str,
        *,
        jwks_uri: str | None = None,
        http_client: httpx.Client | None = None,
        async_http_client: httpx.AsyncClient | None = None,
        clock: Clock = time.time,
        default_max_age: float = 300.0,
        min_max_age: float = 5.0,
        max_max_age: float = 86400.0,
        unknown_kid_interval: float = 30.0,
        max_stale: float = 3600.0,
        retry_interval: float = 5.0,
        timeout: float = 5.0,
    ) -> None:
        self.issuer = issuer
        self._configured_jwks_uri = jwks_uri
        self._jwks_uri = jwks_uri
        self._client = http_client
        self._owns_client = http_client is None
        self._aclient = async_http_client  # None: a client per fetch (see _fetch_async)
        self._clock = clock
        self.default_max_age = default_max_age
        self.min_max_age = min_max_age
        self.max_max_age = max_max_age
        self.unknown_kid_interval = unknown_kid_interval
        self.max_stale = max_stale
        self.retry_interval = retry_interval
        self.timeout = timeout

        self._state = threading.Lock()  # bookkeeping only; never held across I/O
        self._fetch_lock = threading.Lock()  # single flight for threads
        self._afetch_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]
        self._afetch_locks = weakref.WeakKeyDictionary()
        self._keys: KeySet | None = None
        self._fresh_until = -math.inf
        self._next_attempt = -math.inf
        self._last_kid_refetch = -math.inf
        self._generation = 0  # bumped by every successful fetch
        self._metadata: dict[str, Any] | None = None
        self._failing = False
        self.fetches = 0  # HTTP fetches of the JWKS attempted (for metrics and tests)

    # --- public, sync ---------------------------------------------------------------

    def key_set(self) -> KeySet:
        """The current key set, refreshed first if it is no longer fresh."""
        keys = self._keys
        if keys is not None and self._clock() < self._fresh_until:
            return keys
        return self._refresh(self._generation, for_kid=False)

    def key_set_for(self, kid: str, seen_generation: int | None = None) -> KeySet:
        """A key set that has `kid` if the broker publishes it (refetching at most once)."""
        gen = self._generation if seen_generation is None else seen_generation
        keys = self.key_set()
        if kid in keys:
            return keys
        return self._refresh(gen, for_kid=True)

    @property
    def generation(self) -> int:
        return self._generation

    # --- public, no I/O -----------------------------------------------------------------

    def current(self, now: float | None = None) -> KeySet | None:
        """The last good key set while it may still be used (fresh, or stale within
        `max_stale`); None otherwise. Never fetches."""
        return self._usable(self._clock() if now is None else now)

    def refresh_due(self, now: float) -> bool:
        """Whether a fetch is wanted now: the key set is missing or stale, and the retry
        interval after a failure has passed."""
        return now >= self._fresh_until and now >= self._next_attempt

    def next_check(self) -> float:
        """When `refresh_due` next turns true (clock seconds; -inf: already)."""
        return max(self._fresh_until, self._next_attempt)

    def kid_refetch_allowed(self, now: float) -> bool:
        """Whether an unknown kid may make a fetch now (once per `unknown_kid_interval`,
        and not while the retry interval after a failure runs)."""
        return (
            now - self._last_kid_refetch >= self.unknown_kid_interval and now >= self._next_attempt
        )

    def retry_after(self, now: float) -> int:
        """Seconds until the next fetch may happen, for a Retry-After header (>= 1)."""
        return max(1, math.ceil(self._next_attempt - now)) if now < self._next_attempt else 1

    @property
    def metadata(self) -> dict[str, Any] | None:
        """The discovery document of the last discovery (None before, or with an explicit
        `jwks_uri`): other endpoints, such as the revocation feed's, are read from it."""
        return self._metadata

    def close(self) -> None:
        if self._owns_client and self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        """Kept for symmetry: the async client is either the caller's or per fetch."""

    # --- public, async --------------------------------------------------------------

    async def akey_set(self) -> KeySet:
        keys = self._keys
        if keys is not None and self._clock() < self._fresh_until:
            return keys
        return await self._arefresh(self._generation, for_kid=False)

    async def akey_set_for(self, kid: str, seen_generation: int | None = None) -> KeySet:
        gen = self._generation if seen_generation is None else seen_generation
        keys = await self.akey_set()
        if kid in keys:
            return keys
        return await self._arefresh(gen, for_kid=True)

    # --- the refresh decision, shared by both flavours ----------------------------------

    def _usable(self, now: float) -> KeySet | None:
        """The last good key set while it is within the staleness bound."""
        if self._keys is not None and now < self._fresh_until + self.max_stale:
            return self._keys
        return None

    def _decide(self, seen_generation: int, for_kid: bool) -> tuple[bool, KeySet | None]:
        """Under the fetch lock: (fetch now?, key set to return if not)."""
        now = self._clock()
        with self._state:
            if self._generation != seen_generation:
                # Someone fetched since the caller looked: use that, do not fetch again.
                return False, self._keys
            if for_kid:
                if now - self._last_kid_refetch < self.unknown_kid_interval:
                    return False, self._usable(now)
            elif self._keys is not None and now < self._fresh_until:
                return False, self._keys
            if now < self._next_attempt:
                return False, self._usable(now)
            if for_kid:
                self._last_kid_refetch = now
            self.fetches += 1
            return True, None

    def _store(self, keys: KeySet, max_age: float | None) -> KeySet:
        ttl = self.default_max_age if max_age is None else max_age
        ttl = min(max(ttl, self.min_max_age), self.max_max_age)
        now = self._clock()
        with self._state:
            self._keys = keys
            self._fresh_until = now + ttl
            self._next_attempt = -math.inf
            self._generation += 1
            if self._failing:
                log.info("the broker's JWKS is reachable again")
            self._failing = False
        return keys

    def _failed(self, exc: Exception) -> KeySet:
        now = self._clock()
        with self._state:
            self._next_attempt = now + self.retry_interval
            if self._configured_jwks_uri is None:
                self._jwks_uri = None  # rediscover next time: the metadata may have moved
            usable = self._usable(now)
            first = not self._failing
            self._failing = True
        # Once per outage: the background thread retries every retry_interval.
        (log.warning if first else log.debug)("fetching the broker's JWKS failed: %s", exc)
        if usable is None:
            raise JWKSUnavailable(
                f"the broker's key set is unavailable: {exc}", self.retry_after(now)
            ) from exc
        return usable

    def _unavailable(self) -> KeySet:
        raise JWKSUnavailable(
            "the broker's key set is unavailable", self.retry_after(self._clock())
        )

    # --- sync I/O ---------------------------------------------------------------------

    def _refresh(self, seen_generation: int, *, for_kid: bool) -> KeySet:
        usable = self._usable(self._clock())
        if not for_kid and usable is not None:
            # Stale but usable: if someone is already refreshing, do not queue behind them.
            if not self._fetch_lock.acquire(blocking=False):
                return usable
        else:
            self._fetch_lock.acquire()
        try:
            fetch, keys = self._decide(seen_generation, for_kid)
            if not fetch:
                return keys if keys is not None else self._unavailable()
            try:
                new_keys, max_age = self._fetch_sync()
            except _FETCH_ERRORS as exc:
                return self._failed(exc)
            return self._store(new_keys, max_age)
        finally:
            self._fetch_lock.release()

    def http_client(self) -> httpx.Client:
        """The sync client fetches go through (the caller's, or one of our own)."""
        return self._sync_client()

    def _sync_client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout)
        return self._client

    def _fetch_sync(self) -> tuple[KeySet, float | None]:
        client = self._sync_client()
        uri = self._jwks_uri
        if uri is None:
            response = client.get(self._discovery_url(), headers={"accept": "application/json"})
            uri = self._jwks_uri = self._jwks_uri_from(response)
        response = client.get(uri, headers={"accept": "application/json"})
        return self._key_set_from(response)

    # --- async I/O --------------------------------------------------------------------

    def _afetch_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._state:
            lock = self._afetch_locks.get(loop)
            if lock is None:
                lock = self._afetch_locks[loop] = asyncio.Lock()
            return lock

    async def _arefresh(self, seen_generation: int, *, for_kid: bool) -> KeySet:
        lock = self._afetch_lock()
        usable = self._usable(self._clock())
        if not for_kid and usable is not None and lock.locked():
            return usable
        async with lock:
            fetch, keys = self._decide(seen_generation, for_kid)
            if not fetch:
                return keys if keys is not None else self._unavailable()
            try:
                new_keys, max_age = await self._fetch_async()
            except _FETCH_ERRORS as exc:
                return self._failed(exc)
            return self._store(new_keys, max_age)

    async def _fetch_async(self) -> tuple[KeySet, float | None]:
        if self._aclient is not None:
            return await self._fetch_with(self._aclient)
        # Without a client of the caller's, one per fetch: an httpx.AsyncClient's pooled
        # connections belong to the event loop that opened them, and a validator outlives
        # loops (a module-level validator under FastAPI's TestClient, asyncio.run scripts).
        # Reusing one across loops fails with "Event loop is closed", which is no
        # httpx.HTTPError, so the stale key set would not even be served. Fetches happen
        # minutes apart; a fresh connection each time costs nothing that matters.
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            return await self._fetch_with(client)

    async def _fetch_with(self, client: httpx.AsyncClient) -> tuple[KeySet, float | None]:
        uri = self._jwks_uri
        if uri is None:
            response = await client.get(
                self._discovery_url(), headers={"accept": "application/json"}
            )
            uri = self._jwks_uri = self._jwks_uri_from(response)
        response = await client.get(uri, headers={"accept": "application/json"})
        return self._key_set_from(response)

    # --- parsing ----------------------------------------------------------------------

    def _discovery_url(self) -> str:
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    def _jwks_uri_from(self, response: httpx.Response) -> str:
        response.raise_for_status()
        metadata: Any = response.json()
        if not isinstance(metadata, dict):
            raise ValueError("discovery metadata is not a JSON object")
        if metadata.get("issuer") != self.issuer:  # OIDC Discovery §4.3
            raise ValueError("discovery metadata names another issuer")
        uri = metadata.get("jwks_uri")
        if not isinstance(uri, str) or not uri:
            raise ValueError("discovery metadata has no jwks_uri")
        self._metadata = metadata
        return uri

    def _key_set_from(self, response: httpx.Response) -> tuple[KeySet, float | None]:
        response.raise_for_status()
        return KeySet.from_jwks(response.json()), parse_max_age(response.headers)
