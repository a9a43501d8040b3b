"""Reading a presented refresh token: the broker's own MAC, issuer and audience, then the
records it names. Shared by the refresh grant, revocation and introspection, which then
each judge the records' state for their own purpose."""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker.store import RefreshChain
from broker.tokens.claims import REFRESH_TOKEN_TYP

if TYPE_CHECKING:
    from broker.core import Broker


def load_refresh_token(broker: Broker, token: str) -> RefreshChain | None:
    """The records behind a refresh token this broker issued, or None for anything else
    (garbage, another issuer, a forged MAC, records gone). State is not judged here."""
    try:
        claims = broker.keys.verify(token, use="rt", typ=REFRESH_TOKEN_TYP)
    except ValueError:
        return None
    jti = claims.get("jti")
    if claims.get("iss") != broker.issuer or claims.get("aud") != broker.issuer:
        return None
    if not isinstance(jti, str):
        return None
    return broker.store.get_refresh_chain(jti)
