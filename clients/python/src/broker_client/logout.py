"""Logout token validation (OpenID Connect Back-Channel Logout 1.0 §2.4, §2.6).

Framework-free: `LogoutTokenVerifier.verify(token, keys, now)` checks one logout token
and remembers its `jti` (bounded replay memory); `integrations.backchannel` wraps it in
a Starlette endpoint that feeds the validator's revocation set.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Collection, Mapping
from typing import Any, Final

from .verify import DEFAULT_LEEWAY, InvalidToken, KeySet, verify_typed_jws

__all__ = [
    "BACKCHANNEL_LOGOUT_EVENT",
    "LOGOUT_TOKEN_TYPE",
    "InvalidLogoutToken",
    "LogoutTokenVerifier",
]

LOGOUT_TOKEN_TYPE: Final = "logout+jwt"
BACKCHANNEL_LOGOUT_EVENT: Final = "http://schemas.openid.net/event/backchannel-logout"


class InvalidLogoutToken(InvalidToken):
    """A logout token to refuse: answered 400 `invalid_request` (§2.8)."""

    error = "invalid_request"


class LogoutTokenVerifier:
    """The §2.6 checks, with a replay memory of at most `replay_capacity` jtis.

    A jti is remembered until the token's `exp` plus the leeway (after that the token
    is refused as expired anyway); past the capacity the soonest-to-expire are forgotten
    first. A replayed logout token could only end the same session again, so a
    forgotten jti costs nothing but the replay check.
    """

    def __init__(
        self,
        issuer: str,
        client_id: str | Collection[str],
        *,
        leeway: float = DEFAULT_LEEWAY,
        max_age: float = 300.0,
        replay_capacity: int = 10_000,
    ) -> None:
        self.issuer = issuer
        self.client_ids = frozenset([client_id] if isinstance(client_id, str) else client_id)
        self.leeway = leeway
        self.max_age = max_age
        self.replay_capacity = replay_capacity
        self._seen: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def verify(self, token: str, keys: KeySet, now: float) -> dict[str, Any]:
        """The token's claims if it is a valid, unseen logout token for us."""
        claims = verify_typed_jws(token, keys, LOGOUT_TOKEN_TYPE)
        if claims.get("iss") != self.issuer:
            raise InvalidLogoutToken("the logout token was issued by someone else")
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(isinstance(a, str) and a in self.client_ids for a in auds):
            raise InvalidLogoutToken("the logout token is not meant for this client")
        iat, exp = claims.get("iat"), claims.get("exp")
        if iat.__class__ not in (int, float) or exp.__class__ not in (int, float):
            raise InvalidLogoutToken("the logout token needs numeric iat and exp")
        if iat > now + self.leeway:
            raise InvalidLogoutToken("the logout token was issued in the future")
        if iat < now - self.max_age - self.leeway:
            raise InvalidLogoutToken("the logout token is too old")
        if now >= exp + self.leeway:
            raise InvalidLogoutToken("the logout token expired")
        events = claims.get("events")
        if not isinstance(events, Mapping) or not isinstance(
            events.get(BACKCHANNEL_LOGOUT_EVENT), Mapping
        ):
            raise InvalidLogoutToken("the logout token has no back-channel logout event")
        if "nonce" in claims:  # §2.4: forbidden, so an ID token cannot pass as one
            raise InvalidLogoutToken("a logout token must not have a nonce")
        sid, sub = claims.get("sid"), claims.get("sub")
        if not (isinstance(sid, str) and sid):
            # §2.4 allows sub alone ("every session of the user"); the broker always
            # sends sid, and the revocation set ends sessions by sid, so sub alone is
            # refused rather than accepted and silently ignored.
            if isinstance(sub, str) and sub:
                raise InvalidLogoutToken("this receiver ends sessions by sid; the token has none")
            raise InvalidLogoutToken("the logout token names no session (sid) or subject")
        if sub is not None and not isinstance(sub, str):
            raise InvalidLogoutToken("the logout token's sub is not a string")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise InvalidLogoutToken("the logout token has no jti")
        self._remember(jti, float(exp) + self.leeway, now)
        return claims

    def _remember(self, jti: str, until: float, now: float) -> None:
        with self._lock:
            expiry = self._expiry
            while expiry and (expiry[0][0] <= now or len(self._seen) >= self.replay_capacity):
                _, old = heapq.heappop(expiry)
                self._seen.pop(old, None)
            if jti in self._seen:
                raise InvalidLogoutToken("the logout token was already used")
            self._seen[jti] = until
            heapq.heappush(expiry, (until, jti))
