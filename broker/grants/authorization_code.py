"""Authorization Code grant (RFC 6749 §4.1.3) with PKCE (RFC 7636 §4.6, S256 only) and
OpenID Connect ID tokens (OIDC Core §3.1.3).

Codes are single use: `Store.redeem_code` marks one used atomically, so of two concurrent
redemptions exactly one wins. A replayed code fails with `invalid_grant` and revokes the
refresh family issued from it, which also makes its access tokens inactive at
introspection and userinfo (RFC 6749 §4.1.2, RFC 9700 §4.5). Every code grant therefore
starts a family, even for a client without the refresh_token grant (it then gets no
refresh token, but its access tokens still name the family).
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

from broker.events import audit
from broker.grants import TOKEN_HEADERS
from broker.store import AuthCodeRecord, SessionRecord
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
        broker = self.server.broker
        store = broker.store
        code_hash = sha256_b64(code)
        record, first_use = store.redeem_code(code_hash, broker.now())
        who = {"client_id": client.client_id, "ip": self.request.client_ip}
        if record is None:
            raise InvalidGrantError("The authorization code is invalid or expired.")
        if not first_use:
            if record.family_id:
                store.revoke_family(record.family_id, broker.now(), "code_replay")
            audit("code_replay", outcome="revoked", family_id=record.family_id, **who)
            raise InvalidGrantError(
                "This authorization code was already used; the tokens issued from it are "
                "revoked. Sign in again."
            )
        if record.client_id != client.client_id:
            audit("code_wrong_client", outcome="failure", **who)
            raise InvalidGrantError("The authorization code was issued to another client.")
        if form.get("redirect_uri") != record.redirect_uri:
            raise InvalidGrantError(
                "'redirect_uri' does not match the one of the authorization request."
            )
        if client.record.public and verifier is None:
            raise InvalidRequestError("Missing 'code_verifier' (PKCE is required).")
        if not pkce_ok(verifier, record):
            audit("pkce_failure", outcome="failure", **who)
            raise InvalidGrantError("PKCE verification failed: wrong 'code_verifier'.")
        session = store.get_session(record.sid)
        if session is None or session.revoked or session.expires_at <= broker.now():
            raise InvalidGrantError("The sign-in behind this code has ended; sign in again.")
        self.request.client = client
        self.request.extra["code"] = record
        self.request.extra["session"] = session

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        broker = self.server.broker
        client = self.request.client
        record: AuthCodeRecord = self.request.extra["code"]
        session: SessionRecord = self.request.extra["session"]
        family, refresh = broker.start_family(
            session, client.client_id, record.scope, code_hash=record.code_hash
        )
        broker.store.set_code_family(record.code_hash, family.family_id)
        if not client.check_grant_type("refresh_token"):
            refresh = None
        body = broker.token_response(
            session,
            client.client_id,
            record.scope,
            family=family,
            refresh=refresh,
            nonce=record.nonce,
        )
        audit(
            "code_redeemed",
            client_id=client.client_id,
            user_id=session.user_id,
            family_id=family.family_id,
            sid=session.sid,
        )
        return 200, body, TOKEN_HEADERS
