"""Validating the broker's own access tokens *with* the store: the check behind
introspection (RFC 7662), `/userinfo` and token exchange subjects (RFC 8693).

Offline validators only check signature and claims; here a token is also inactive once
its jti is denylisted (RFC 7009 revocation), its session ended (logout, upstream
deactivation) or its refresh family was revoked (reuse, revocation, logout).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from broker.store import DenylistStore, RefreshStore, SessionStore
from broker.tokens.claims import ACCESS_TOKEN_TYP, epoch, issued_in_the_past
from broker.tokens.keys import KeyManager


class AccessStore(DenylistStore, SessionStore, RefreshStore, Protocol):
    """What the check reads: the denylist, sessions and families."""


class InactiveToken(Exception):
    """Why a token is not active. The reason is for logs; clients only see inactive."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def validate_access_token(
    keys: KeyManager, store: AccessStore, issuer: str, at: datetime, token: str
) -> dict[str, Any]:
    """Claims of an access token active at `at`, else InactiveToken. Synchronous (store
    reads): call it from a worker thread."""
    try:
        claims = keys.verify(token, use="sig", typ=ACCESS_TOKEN_TYP)
    except ValueError as exc:
        raise InactiveToken(f"signature: {exc}") from None
    now = epoch(at)
    if claims.get("iss") != issuer:
        raise InactiveToken("wrong issuer")
    exp, jti = claims.get("exp"), claims.get("jti")
    if not isinstance(exp, int) or isinstance(exp, bool) or exp <= now:
        raise InactiveToken("expired")
    if not issued_in_the_past(claims, now):
        raise InactiveToken("issued in the future")
    if not isinstance(jti, str) or not jti:
        raise InactiveToken("no jti")
    if store.is_access_token_denied(jti, at):
        raise InactiveToken("revoked")
    sid = claims.get("sid")
    if sid is not None:
        session = store.get_session(str(sid))
        if session is None or session.revoked or session.expires_at <= at:
            raise InactiveToken("session ended")
    fam = claims.get("fam")
    if fam is not None:
        family = store.get_family(str(fam))
        if family is None or family.revoked:
            raise InactiveToken("family revoked")
    return claims
