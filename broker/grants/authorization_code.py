"""Authorization Code grant (RFC 6749 §4.1.3) with PKCE (RFC 7636 §4.6, S256 only) and
OpenID Connect ID tokens (OIDC Core §3.1.3).

Codes are single use: `CodeStore.redeem_code` marks one used and starts its refresh family
in one atomic step, so of two concurrent redemptions exactly one wins and the other always
finds the family to revoke. A replayed code fails with `invalid_grant` and revokes the
refresh family issued from it, which also makes its access tokens inactive at
introspection and userinfo (RFC 6749 §4.1.2, RFC 9700 §4.5). Every code grant therefore
starts a family, even for a client without the refresh_token grant (it then gets no
refresh token, but its access tokens still name the family). A redemption that fails a
later check (wrong client, redirect URI or PKCE verifier) burns the code and revokes the
family it started; no token is issued from it.
"""

from __future__ import annotations

import hmac
from typing import Any

from authlib.oauth2.rfc6749 import (
    InvalidGrantError,
    InvalidRequestError,
    UnauthorizedClientError,
    grants,
)
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from broker.components import Components
from broker.events import audit
from broker.grants import TOKEN_HEADERS, GrantSpec
from broker.store import AuthCodeRecord, FamilyRecord, RefreshTokenRecord, SessionRecord
from broker.tokens.secrets import sha256_b64

_VERIFIER_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def pkce_ok(verifier: str | None, record: AuthCodeRecord) -> bool:
    """RFC 7636 §4.6, plus the downgrade rule of RFC 9700 §4.8.2: a verifier sent for a
    code issued without a challenge is refused too."""
    if record.code_challenge is None:
        return verifier is None
    if verifier is None or not 43 <= len(verifier) <= 128 or set(verifier) - _VERIFIER_CHARS:
        return False
    if record.code_challenge_method != "S256":
        return False
    return hmac.compare_digest(create_s256_code_challenge(verifier), record.code_challenge)


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post"]

    # Authlib's authorization-endpoint half is not used: broker/http/authorize.py and
    # broker/endpoints/authorization.py issue codes. These satisfy the abstract interface.
    def save_authorization_code(self, code: str, request: Any) -> None:
        raise NotImplementedError

    def query_authorization_code(self, code: str, client: Any) -> None:
        raise NotImplementedError

    def delete_authorization_code(self, authorization_code: Any) -> None:
        """Nothing: redemption already marked the code used."""

    def authenticate_user(self, authorization_code: Any) -> None:
        raise NotImplementedError

    code: AuthCodeRecord
    session: SessionRecord
    family: FamilyRecord
    first: RefreshTokenRecord

    def validate_token_request(self) -> None:
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError("This client may not use the authorization code grant.")
        form = self.request.form
        code = form.get("code")
        if not code:
            raise InvalidRequestError("Missing 'code' in request.")
        if len(code) > 512:
            raise InvalidGrantError("Invalid 'code' in request.")
        verifier = form.get("code_verifier")
        parts: Components = self.server.components
        store, sessions = parts.store, parts.sessions
        code_hash = sha256_b64(code)
        who = {"client_id": client.client_id, "ip": self.request.client_ip}
        started: list[tuple[FamilyRecord, RefreshTokenRecord]] = []

        def start_family(record: AuthCodeRecord) -> tuple[FamilyRecord, RefreshTokenRecord]:
            started.append(sessions.family_for_code(record))
            return started[-1]

        now = parts.now()
        record, first_use = store.redeem_code(
            code_hash, now, start_family, feed_until=sessions.feed_until(now)
        )
        if record is None:
            raise InvalidGrantError("The authorization code is invalid or expired.")
        if not first_use or not started:
            if record.family_id:
                sessions.revoke_family(record.family_id, "code_replay")
            audit("code_replay", outcome="revoked", family_id=record.family_id, **who)
            raise InvalidGrantError(
                "This authorization code was already used; the tokens issued from it are "
                "revoked. Sign in again."
            )
        family, first = started[-1]

        def refuse(description: str, event: str | None = None) -> InvalidGrantError:
            sessions.revoke_family(family.family_id, "code_refused")
            if event:
                audit(event, outcome="failure", **who)
            return InvalidGrantError(description)

        if record.client_id != client.client_id:
            raise refuse(
                "The authorization code was issued to another client.", "code_wrong_client"
            )
        if form.get("redirect_uri") != record.redirect_uri:
            raise refuse("'redirect_uri' does not match the one of the authorization request.")
        if client.record.public and verifier is None:
            sessions.revoke_family(family.family_id, "code_refused")
            raise InvalidRequestError("Missing 'code_verifier' (PKCE is required).")
        if not pkce_ok(verifier, record):
            raise refuse("PKCE verification failed: wrong 'code_verifier'.", "pkce_failure")
        session = store.get_session(record.sid)
        if not sessions.live(session):
            raise refuse("The sign-in behind this code has ended; sign in again.")
        assert session is not None
        self.request.client = client
        self.code, self.session, self.family, self.first = record, session, family, first

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        parts: Components = self.server.components
        client = self.request.client
        refresh = self.first if client.check_grant_type("refresh_token") else None
        body = parts.minter.token_response(
            self.session,
            client.client_id,
            self.code.scope,
            family=self.family,
            refresh=refresh,
            nonce=self.code.nonce,
        )
        audit(
            "code_redeemed",
            client_id=client.client_id,
            user_id=self.session.user_id,
            family_id=self.family.family_id,
            sid=self.session.sid,
        )
        return 200, body, TOKEN_HEADERS


SPEC = GrantSpec(AuthorizationCodeGrant, parameters=("code", "redirect_uri", "code_verifier"))
