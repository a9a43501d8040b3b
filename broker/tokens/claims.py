"""Claim sets of every token the broker signs, as pure functions of records and a clock.

Access tokens follow RFC 9068 (header `typ: at+jwt`) plus the ShotGrid claims of the
contract; refresh tokens are broker-only JWTs (`typ: rt+jwt`, `aud` = the issuer) so no
resource server can mistake one for an access token; ID tokens follow OIDC Core §2.
No I/O, no randomness: callers pass the `jti` and the clock reading.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from typing import Any

from broker.store.records import FamilyRecord, RefreshTokenRecord, SessionRecord

ACCESS_TOKEN_TYP = "at+jwt"
REFRESH_TOKEN_TYP = "rt+jwt"
LOGOUT_TOKEN_TYP = "logout+jwt"
"""OIDC Back-Channel Logout 1.0 §2.4 (explicit typing per RFC 8725 §3.11)."""
LOGOUT_TOKEN_LIFETIME = 120
"""Seconds between a logout token's `iat` and `exp` (REVOCATION_FORMATS.md)."""
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"


IAT_LEEWAY_SECONDS = 30
"""Clock skew tolerated on `iat` wherever the broker reads a token back (access, refresh and
ID tokens): another replica's clock may run a little ahead of this one's."""


def epoch(value: datetime) -> int:
    return int(value.timestamp())


def issued_in_the_past(claims: dict[str, Any], now: int) -> bool:
    """Whether `iat` is an integer no later than `now` (epoch seconds) plus the leeway.

    A token dated in the future was not issued by this broker's clock: it was signed with
    a key that leaked, or by a replica whose clock is wrong; either way it is refused,
    with the same leeway at every endpoint that reads tokens."""
    iat = claims.get("iat")
    return isinstance(iat, int) and not isinstance(iat, bool) and iat <= now + IAT_LEEWAY_SECONDS


def access_token_claims(
    *,
    issuer: str,
    audience: str,
    client_id: str,
    scope: str,
    jti: str,
    issued_at: datetime,
    expires_at: datetime,
    session: SessionRecord | None,
    act: dict[str, Any] | None = None,
    family_id: str | None = None,
) -> dict[str, Any]:
    """RFC 9068 §2.2 claims; `session` None means a client acting for itself
    (client_credentials): `sub` is then the client id and there are no ShotGrid claims.
    `fam` names the refresh family the token came from, so revoking that family makes
    the token inactive at introspection and userinfo (offline validators ignore it)."""
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "iat": epoch(issued_at),
        "exp": epoch(expires_at),
        "jti": jti,
        "client_id": client_id,
        "scope": scope,
    }
    if session is None:
        claims["sub"] = client_id
    else:
        claims.update(
            sub=str(session.user_id),
            sid=session.sid,
            auth_time=epoch(session.auth_time),
            email=session.email,
            name=session.name,
            sg_login=session.login,
            sg_user_id=session.user_id,
        )
    if act is not None:
        claims["act"] = act
    if family_id is not None:
        claims["fam"] = family_id
    return claims


def refresh_token_claims(
    *,
    issuer: str,
    token: RefreshTokenRecord,
    family: FamilyRecord,
    session: SessionRecord,
) -> dict[str, Any]:
    """Everything is derived from stored records, so re-signing a record gives the same
    token: that is how a repeated use within the reuse grace gets the same successor."""
    return {
        "iss": issuer,
        "aud": issuer,
        "sub": str(session.user_id),
        "jti": token.jti,
        "sid": session.sid,
        "fam": family.family_id,
        "client_id": family.client_id,
        "scope": family.scope,
        "iat": epoch(token.issued_at),
        "exp": epoch(token.expires_at),
    }


def at_hash(access_token: str, alg: str = "RS256") -> str:
    """OIDC Core §3.1.3.6: left half of the SHA-256 of the access token, base64url."""
    if alg not in ("RS256", "ES256", "PS256"):
        raise ValueError(f"at_hash for {alg} is not supported")
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).decode().rstrip("=")


def id_token_claims(
    *,
    issuer: str,
    client_id: str,
    session: SessionRecord,
    scope: str,
    issued_at: datetime,
    expires_at: datetime,
    nonce: str | None = None,
    access_token: str | None = None,
    alg: str = "RS256",
) -> dict[str, Any]:
    """OIDC Core §2 plus the scope's standard claims (§5.4)."""
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": str(session.user_id),
        "aud": client_id,
        "azp": client_id,
        "iat": epoch(issued_at),
        "exp": epoch(expires_at),
        "auth_time": epoch(session.auth_time),
        "sid": session.sid,
    }
    if nonce:
        claims["nonce"] = nonce
    if access_token:
        claims["at_hash"] = at_hash(access_token, alg)
    claims.update(user_claims(session, scope))
    return claims


def user_claims(session: SessionRecord, scope: str) -> dict[str, Any]:
    """Standard claims released for a scope (`/userinfo` and ID tokens)."""
    scopes = set(scope.split())
    claims: dict[str, Any] = {}
    if "profile" in scopes:
        claims["name"] = session.name
        claims["preferred_username"] = session.login
    if "email" in scopes:
        claims["email"] = session.email
        claims["email_verified"] = True
    return claims


def logout_token_claims(
    *, issuer: str, client_id: str, sid: str, user_id: int, jti: str, issued_at: datetime
) -> dict[str, Any]:
    """OIDC Back-Channel Logout 1.0 §2.4: `sid` and `sub` both, `events`, never `nonce`.
    `jti` is the outbox notice's id, the same on every delivery attempt of one notice."""
    iat = epoch(issued_at)
    return {
        "iss": issuer,
        "aud": client_id,
        "iat": iat,
        "exp": iat + LOGOUT_TOKEN_LIFETIME,
        "jti": jti,
        "sid": sid,
        "sub": str(user_id),
        "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
    }
