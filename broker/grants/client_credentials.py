"""Client Credentials grant (RFC 6749 §4.4): a confidential service calling another with
no user behind it. The token's `sub` is the client id and it carries no ShotGrid claims;
no refresh token is issued (§4.4.3). Allowed per client (`grant_types`).

This is also the only way to the `admin` scope (a client given the admin right asking for
it): such a token's audience is the admin API (`admin_audience`) and nothing else."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import UnauthorizedClientError, grants

from broker.components import Components
from broker.events import audit
from broker.grants import (
    ADMIN_SCOPE,
    TOKEN_HEADERS,
    GrantSpec,
    admin_audience,
    resolve_audience,
    resolve_scope,
)

#: Scopes that only make sense with a user: an ID token or a refresh token.
USER_ONLY_SCOPES = ("openid", "offline_access")


class ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    scope: str
    audience: str

    def validate_token_request(self) -> None:
        client = self.authenticate_token_endpoint_client()
        if client.record.public or not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError("This client may not use the client_credentials grant.")
        self.request.client = client
        allowed = tuple(s for s in client.record.scopes if s not in USER_ONLY_SCOPES)
        self.scope = resolve_scope(self.request.payload.scope, allowed, "")
        parts: Components = self.server.components
        if ADMIN_SCOPE in self.scope.split():
            target = admin_audience(parts.issuer)
            self.audience = resolve_audience(self.request.form, (target,), target)
        else:
            self.audience = resolve_audience(
                self.request.form, client.record.audiences, parts.settings.default_audience
            )

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        parts: Components = self.server.components
        client = self.request.client
        at = parts.minter.access_token(None, client.client_id, self.scope, audience=self.audience)
        audit("client_credentials", client_id=client.client_id, ip=self.request.client_ip)
        body: dict[str, Any] = {
            "access_token": at.token,
            "token_type": "Bearer",
            "expires_in": at.expires_in,
        }
        if self.scope:
            body["scope"] = self.scope
        return 200, body, TOKEN_HEADERS


SPEC = GrantSpec(
    ClientCredentialsGrant, parameters=("audience", "resource"), confidential_only=True
)
