"""Reading a presented refresh token: the broker's own MAC, issuer and audience, then the
records it names. Shared by the refresh grant, revocation and introspection, which then
each judge the records' state for their own purpose."""

from __future__ import annotations

from datetime import datetime

from broker.store import RefreshChain, RefreshStore
from broker.tokens.claims import REFRESH_TOKEN_TYP, epoch, issued_in_the_past
from broker.tokens.keys import KeyManager


def load_refresh_token(
    keys: KeyManager, store: RefreshStore, issuer: str, at: datetime, token: str
) -> RefreshChain | None:
    """The records behind a refresh token this broker issued, or None for anything else
    (garbage, another issuer, a forged MAC, dated after `at`, records gone). State is not
    judged here."""
    try:
        claims = keys.verify(token, use="rt", typ=REFRESH_TOKEN_TYP)
    except ValueError:
        return None
    jti = claims.get("jti")
    if claims.get("iss") != issuer or claims.get("aud") != issuer:
        return None
    if not isinstance(jti, str):
        return None
    if not issued_in_the_past(claims, epoch(at)):
        return None
    return store.get_refresh_chain(jti)
