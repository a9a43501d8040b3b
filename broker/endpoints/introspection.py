"""Token introspection (RFC 7662), with JWT responses (RFC 9701).

Only confidential clients allowed `may_introspect` may call it: no or bad client
authentication is 401 `invalid_client` (§2.3), a confidential client without the
permission gets 400 `unauthorized_client`. Any token string, however bad, answers 200:
`{"active": false}` for expired, revoked (jti denylist, family or session revoked,
logged out), used-past-grace refresh tokens, tokens signed by a key no longer known,
another issuer's tokens and garbage (§2.2). An active answer carries the RFC's fields
(`active`, `scope`, `client_id`, `username`, `token_type`, `exp`, `iat`, `sub`, `aud`,
`iss`, `jti`) plus the broker's own claims (`sid`, `fam`, `act`, `sg_login`, ...).
`token_type` is always there: `Bearer` (the access token's type, RFC 6749 §7.1) for access
tokens, `refresh_token` for refresh tokens, so a resource server that checks it cannot
take a refresh token for an access token.

`token_type_hint` only orders the lookup; an unknown hint is ignored (§2.1), never an
error. With `Accept: application/token-introspection+jwt` the answer is a JWT signed with
the current signing key (RFC 9701 §5): `iss`, `aud` = the calling client, `iat`, and the
response object under `token_introspection`.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import InvalidRequestError, UnauthorizedClientError
from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from broker.components import Components
from broker.endpoints.revocation import REFRESH, authenticate_401, lookup_order
from broker.server import BrokerRequest
from broker.tokens.access import InactiveToken, validate_access_token
from broker.tokens.claims import epoch
from broker.tokens.refresh import load_refresh_token
from broker.tokens.rotation import chain_problem

JWT_RESPONSE_TYPE = "application/token-introspection+jwt"
JWT_RESPONSE_TYP = "token-introspection+jwt"
INACTIVE: dict[str, Any] = {"active": False}
ACCESS_TOKEN_TYPE = "Bearer"
REFRESH_TOKEN_TYPE = "refresh_token"

HEADERS = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]


def wants_jwt(accept: str | None) -> bool:
    if not accept:
        return False
    types = [part.split(";", 1)[0].strip().lower() for part in accept.split(",")]
    return JWT_RESPONSE_TYPE in types


def introspect(parts: Components, token: str, hint: str | None) -> dict[str, Any]:
    """The RFC 7662 §2.2 response object for any string."""
    for kind in lookup_order(hint):
        found = _refresh(parts, token) if kind == REFRESH else _access(parts, token)
        if found is not None:
            return found
    return dict(INACTIVE)


def _access(parts: Components, token: str) -> dict[str, Any] | None:
    """Claims of an active access token; None when the string is not one at all."""
    try:
        claims = validate_access_token(parts.keys, parts.store, parts.issuer, parts.now(), token)
    except InactiveToken:
        return None
    body: dict[str, Any] = {"active": True, **claims, "token_type": ACCESS_TOKEN_TYPE}
    if "sg_login" in claims:
        body["username"] = claims["sg_login"]
    return body


def _refresh(parts: Components, token: str) -> dict[str, Any] | None:
    found = load_refresh_token(parts.keys, parts.store, parts.issuer, parts.now(), token)
    if found is None:
        return None
    record, family, session = found
    now = parts.now()
    if chain_problem(found, now) is not None:
        return None
    grace = parts.sessions.lifetimes.reuse_grace
    if record.used_at is not None and now - record.used_at > grace:
        return None
    return {
        "active": True,
        "token_type": REFRESH_TOKEN_TYPE,
        "scope": family.scope,
        "client_id": family.client_id,
        "username": session.login,
        "sub": str(session.user_id),
        "aud": parts.issuer,
        "iss": parts.issuer,
        "jti": record.jti,
        "iat": epoch(record.issued_at),
        "exp": epoch(record.expires_at),
        "sid": session.sid,
        "fam": family.family_id,
    }


class BrokerIntrospectionEndpoint(IntrospectionEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def create_endpoint_response(
        self, request: BrokerRequest
    ) -> tuple[int, Any, list[tuple[str, str]]]:
        request.client = client = authenticate_401(self, request)
        if client.record.public or not client.record.may_introspect:
            raise UnauthorizedClientError("This client may not introspect tokens.")
        token = request.form.get("token")
        if token is None:
            raise InvalidRequestError("Missing 'token'.")
        parts: Components = self.server.components
        body = introspect(parts, token, request.form.get("token_type_hint"))
        if not wants_jwt(request.headers.get("Accept")):
            return 200, body, [("Content-Type", "application/json"), *HEADERS]
        claims = {
            "iss": parts.issuer,
            "aud": client.client_id,
            "iat": epoch(parts.now()),
            "token_introspection": body,
        }
        signed = parts.keys.sign(claims, JWT_RESPONSE_TYP)
        return 200, signed, [("Content-Type", JWT_RESPONSE_TYPE), *HEADERS]

    # Authlib's abstract hooks: unused, `create_endpoint_response` does the whole job.
    def query_token(self, token_string: str, token_type_hint: str | None) -> None:
        raise NotImplementedError

    def check_permission(self, token: Any, client: Any, request: Any) -> bool:
        raise NotImplementedError

    def introspect_token(self, token: Any) -> dict[str, Any]:
        raise NotImplementedError
