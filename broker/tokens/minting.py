"""What is issued: the access token (RFC 9068), the broker's refresh token, the ID token
(OIDC Core §2) and the token response (RFC 6749 §5.1) every grant returns.

Grants decide *whether* to issue; this module decides *what*, so the password, refresh,
code, device and exchange grants cannot drift apart on claims or lifetimes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from broker.clock import Clock, now_ms
from broker.store import FamilyRecord, RefreshTokenRecord, SessionRecord
from broker.tokens import claims as claims_mod
from broker.tokens.keys import ID_TOKEN_ALG, KeyManager
from broker.tokens.secrets import new_token_id


@dataclass(frozen=True, slots=True)
class IssuedAccessToken:
    token: str
    claims: dict[str, Any]
    expires_in: int


class TokenMinter:
    """Builds claims (pure, `claims.py`) and signs them with the current keys."""

    def __init__(
        self,
        issuer: str,
        keys: KeyManager,
        *,
        access_token_ttl: int,
        default_audience: str,
        clock: Clock,
    ) -> None:
        self.issuer = issuer
        self.keys = keys
        self.access_token_ttl = access_token_ttl
        self.default_audience = default_audience
        self.clock = clock

    def access_token(
        self,
        session: SessionRecord | None,
        client_id: str,
        scope: str,
        *,
        audience: str | None = None,
        act: dict[str, Any] | None = None,
        not_after: datetime | None = None,
        family_id: str | None = None,
    ) -> IssuedAccessToken:
        now = now_ms(self.clock)
        expires = now + timedelta(seconds=self.access_token_ttl)
        if not_after is not None and not_after < expires:
            expires = not_after
        claims = claims_mod.access_token_claims(
            issuer=self.issuer,
            audience=audience or self.default_audience,
            client_id=client_id,
            scope=scope,
            jti=new_token_id(),
            issued_at=now,
            expires_at=expires,
            session=session,
            act=act,
            family_id=family_id,
        )
        token = self.keys.sign(claims, claims_mod.ACCESS_TOKEN_TYP)
        return IssuedAccessToken(token, claims, max(0, int((expires - now).total_seconds())))

    def refresh_token(
        self, record: RefreshTokenRecord, family: FamilyRecord, session: SessionRecord
    ) -> str:
        claims = claims_mod.refresh_token_claims(
            issuer=self.issuer, token=record, family=family, session=session
        )
        return self.keys.sign_refresh(claims, claims_mod.REFRESH_TOKEN_TYP)

    def id_token(
        self,
        session: SessionRecord,
        client_id: str,
        scope: str,
        *,
        nonce: str | None = None,
        access_token: str | None = None,
    ) -> str:
        now = now_ms(self.clock)
        claims = claims_mod.id_token_claims(
            issuer=self.issuer,
            client_id=client_id,
            session=session,
            scope=scope,
            issued_at=now,
            expires_at=now + timedelta(seconds=self.access_token_ttl),
            nonce=nonce,
            access_token=access_token,
            alg=ID_TOKEN_ALG,
        )
        return self.keys.sign(claims, "JWT", alg=ID_TOKEN_ALG)

    def token_response(
        self,
        session: SessionRecord,
        client_id: str,
        scope: str,
        *,
        family: FamilyRecord | None,
        refresh: RefreshTokenRecord | None,
        nonce: str | None = None,
    ) -> dict[str, Any]:
        """RFC 6749 §5.1 body: access token, refresh token if any, ID token for `openid`."""
        at = self.access_token(
            session,
            client_id,
            scope,
            audience=family.audience if family else None,
            family_id=family.family_id if family else None,
        )
        body: dict[str, Any] = {
            "access_token": at.token,
            "token_type": "Bearer",
            "expires_in": at.expires_in,
            "scope": scope,
        }
        if family is not None and refresh is not None:
            body["refresh_token"] = self.refresh_token(refresh, family, session)
        if "openid" in scope.split():
            body["id_token"] = self.id_token(
                session, client_id, scope, nonce=nonce, access_token=at.token
            )
        return body
