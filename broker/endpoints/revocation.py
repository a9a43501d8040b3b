"""Token revocation (RFC 7009) on Authlib's `RevocationEndpoint`.

- A refresh token revokes its whole family (every rotation of it, and the access tokens
  issued from it, which carry `fam`); when that was the session's last live family, the
  ShotGrid tokens kept for the session (custody strategy) are deleted too.
- An access token is denylisted by `jti` until its `exp`.
- `token_type_hint` only orders the lookup (§2.1: the server MUST extend its search);
  an unknown or garbage token answers 200 (§2.2), so revocation never tells a caller
  whether a string was a token.
- Public clients authenticate with their `client_id` (`none`), confidential ones with
  their secret. A client may revoke only tokens issued to it: per §2.1 the request of a
  foreign client "is refused", and Authlib reports that as 400 `invalid_grant`; nothing
  is revoked. (A holder of a foreign token learns nothing it did not already hold.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from authlib.oauth2.rfc6749 import InvalidClientError
from authlib.oauth2.rfc7009 import RevocationEndpoint

from broker.components import Components
from broker.errors import UnsupportedTokenTypeError
from broker.events import audit
from broker.server import BrokerRequest, OAuthClient
from broker.tokens.claims import ACCESS_TOKEN_TYP, epoch, issued_in_the_past
from broker.tokens.refresh import load_refresh_token

ACCESS, REFRESH = "access_token", "refresh_token"


@dataclass(frozen=True, slots=True)
class PresentedToken:
    """A token this broker issued, as far as signature and store can tell."""

    kind: str
    client_id: str
    jti: str
    expires_at: datetime
    family_id: str | None = None
    sid: str | None = None

    def check_client(self, client: OAuthClient) -> bool:
        return bool(self.client_id == client.get_client_id())


def lookup_order(hint: str | None) -> tuple[str, str]:
    return (REFRESH, ACCESS) if hint == REFRESH else (ACCESS, REFRESH)


def find_token(parts: Components, token: str, hint: str | None) -> PresentedToken | None:
    for kind in lookup_order(hint):
        found = _refresh(parts, token) if kind == REFRESH else _access(parts, token)
        if found is not None:
            return found
    return None


def _access(parts: Components, token: str) -> PresentedToken | None:
    try:
        claims = parts.keys.verify(token, use="sig", typ=ACCESS_TOKEN_TYP)
    except ValueError:
        return None
    jti, exp, client_id = claims.get("jti"), claims.get("exp"), claims.get("client_id")
    if claims.get("iss") != parts.issuer or not isinstance(jti, str) or not jti:
        return None
    if not isinstance(exp, int) or not isinstance(client_id, str):
        return None
    if not issued_in_the_past(claims, epoch(parts.now())):
        return None
    fam, sid = claims.get("fam"), claims.get("sid")
    return PresentedToken(
        ACCESS,
        client_id,
        jti,
        datetime.fromtimestamp(exp, UTC),
        family_id=str(fam) if fam else None,
        sid=str(sid) if sid else None,
    )


def _refresh(parts: Components, token: str) -> PresentedToken | None:
    found = load_refresh_token(parts.keys, parts.store, parts.issuer, parts.now(), token)
    if found is None:
        return None
    record, family, _session = found
    return PresentedToken(
        REFRESH, family.client_id, record.jti, record.expires_at, family.family_id, family.sid
    )


def authenticate_401(endpoint: Any, request: BrokerRequest) -> OAuthClient:
    """Client authentication where every failure is 401 `invalid_client` (RFC 6749 §5.2
    allows it; RFC 7662 §2.3 wants it), also for an unknown `client_id` in the body, which
    Authlib answers with 400."""
    try:
        client: OAuthClient = endpoint.server.authenticate_client(
            request, endpoint.CLIENT_AUTH_METHODS, endpoint.ENDPOINT_NAME
        )
        return client
    except InvalidClientError as exc:
        exc.status_code = 401
        raise


class BrokerRevocationEndpoint(RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

    def authenticate_endpoint_client(self, request: BrokerRequest) -> OAuthClient:
        request.client = client = authenticate_401(self, request)
        return client

    def check_params(self, request: BrokerRequest, client: OAuthClient) -> None:
        hint = request.form.get("token_type_hint")
        if hint and hint not in self.SUPPORTED_TOKEN_TYPES:
            raise UnsupportedTokenTypeError(
                "This server revokes only access_token and refresh_token."
            )
        super().check_params(request, client)

    def query_token(self, token_string: str, token_type_hint: str | None) -> PresentedToken | None:
        return find_token(self.server.components, token_string, token_type_hint)

    def revoke_token(self, token: PresentedToken, request: BrokerRequest) -> None:
        parts: Components = self.server.components
        store = parts.store
        now = parts.now()
        if token.kind == ACCESS:
            if token.expires_at > now:
                store.deny_access_token(token.jti, token.expires_at, at=now)
            audit("revoke", token_type=ACCESS, client_id=token.client_id, ip=request.client_ip)
            return
        assert token.family_id is not None and token.sid is not None
        parts.sessions.revoke_family(token.family_id, "revoked")
        live = [
            f
            for f in store.list_families(token.sid)
            if not f.revoked and f.expires_at > now and f.family_id != token.family_id
        ]
        if not live:
            parts.custody.forget(token.sid)
        audit(
            "revoke",
            token_type=REFRESH,
            client_id=token.client_id,
            family_id=token.family_id,
            sid=token.sid,
            ip=request.client_ip,
        )
