"""Token validation for a resource server: key set cache + verification + result cache.

`TokenValidator.validate` answers a token it has already verified from a bounded LRU
keyed by the token itself, until the token's `exp` (plus the leeway verification allows),
so the signature is checked once per token rather than once per request. A token whose
key leaves the JWKS stays accepted until then, as it would for any offline validator
(CONTRACT.md: access tokens are short for this reason). Failures are never cached.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Collection

import httpx

from .jwks import JWKSCache
from .verify import (
    DEFAULT_LEEWAY,
    REQUIRED_CLAIMS,
    AccessTokenClaims,
    Clock,
    KeySet,
    MalformedToken,
    UnknownKey,
    check_claims,
    verify_signature,
)

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


class TokenValidator:
    """Validate broker access tokens for one issuer and audience.

    `jwks` defaults to a `JWKSCache` for `issuer` over the given httpx clients (or its
    own). `signature_checks` and `cache_hits` count work done, for metrics and tests.
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
    ) -> None:
        self.issuer = issuer
        self.audience = audience if isinstance(audience, str) else frozenset(audience)
        self.jwks = jwks or JWKSCache(
            issuer, http_client=http_client, async_http_client=async_http_client, clock=clock
        )
        self._clock = clock
        self.leeway = leeway
        self.required_claims = frozenset(required_claims)
        self.cache = ValidationCache(cache_size)
        self.signature_checks = 0
        self.cache_hits = 0

    def _cached(self, token: str, now: float) -> AccessTokenClaims | None:
        if token.__class__ is not str:
            raise MalformedToken("the token is not a string")
        hit = self.cache.get(token, now)
        if hit is not None:
            self.cache_hits += 1
        return hit

    def validate(self, token: str) -> AccessTokenClaims:
        """Claims of a valid token; `InvalidToken` or `JWKSUnavailable` otherwise."""
        now = self._clock()
        hit = self._cached(token, now)
        if hit is not None:
            return hit
        generation = self.jwks.generation
        keys = self.jwks.key_set()
        try:
            return self._verify(token, keys, now)
        except UnknownKey as exc:
            keys = self.jwks.key_set_for(exc.kid, generation)
        return self._verify(token, keys, now)

    async def avalidate(self, token: str) -> AccessTokenClaims:
        """`validate` for asyncio code: key set fetches do not block the event loop."""
        now = self._clock()
        hit = self._cached(token, now)
        if hit is not None:
            return hit
        generation = self.jwks.generation
        keys = await self.jwks.akey_set()
        try:
            return self._verify(token, keys, now)
        except UnknownKey as exc:
            keys = await self.jwks.akey_set_for(exc.kid, generation)
        return self._verify(token, keys, now)

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
        if claims.exp is not None:
            self.cache.put(token, claims, claims.exp + self.leeway)
        return claims
