"""OAuth 2.0 Token Exchange (RFC 8693) for services that share one login.

A confidential client allowed the grant presents a user's broker access token as the
`subject_token` (type `urn:ietf:params:oauth:token-type:access_token`) and gets either

- a broker access token for another audience it may call (`audience` or `resource`,
  RFC 8693 §2.1 / RFC 8707), whose `act` claim names the calling client, nested per
  §4.1 when the subject already had an actor; scope only narrows, the lifetime never
  exceeds the subject's remaining lifetime (plus the client's `max_exchange_lifetime`),
  and `sid`/`fam` are kept so logging out or revoking the subject's family makes the
  exchanged token inactive too; or
- with `requested_token_type=urn:shotgrid:params:oauth:token-type:access_token`, a
  ShotGrid REST bearer token acting as the subject's user, through the configured
  upstream strategy (`sudo`: the broker's script with `sudo_as_login`; `custody`: the
  user's kept ShotGrid refresh token), one upstream call per user at a time.

Errors follow §2.2.2: an unusable subject token is `invalid_request`, a target the client
may not reach is `invalid_target`; a ShotGrid sign-in that can no longer be renewed is
`invalid_grant`, telling the user to sign in again.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from authlib.oauth2.rfc6749 import (
    InvalidGrantError,
    InvalidRequestError,
    UnauthorizedClientError,
    grants,
)

from broker.components import Components
from broker.errors import TemporarilyUnavailableError
from broker.events import audit
from broker.grants import TOKEN_HEADERS, GrantSpec, resolve_audience, resolve_scope
from broker.store import SessionRecord
from broker.tokens.access import InactiveToken, validate_access_token
from broker.upstream import (
    InactiveUser,
    SudoRefused,
    UnknownUser,
    UpstreamTokenRejected,
    UpstreamTokens,
    UpstreamUnavailable,
)

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
SHOTGRID_TOKEN_TYPE = "urn:shotgrid:params:oauth:token-type:access_token"

SIGN_IN_AGAIN = (
    "ShotGrid no longer accepts this user's sign-in (its ShotGrid refresh token expired or "
    "was revoked); the user must sign in again."
)
UPSTREAM_MESSAGES: dict[type[Exception], str] = {
    UpstreamTokenRejected: SIGN_IN_AGAIN,
    UnknownUser: "This user no longer exists in ShotGrid; the user must sign in again.",
    InactiveUser: (
        "This user's ShotGrid account is disabled; ask the ShotGrid administrator to "
        "reactivate it, then sign in again."
    ),
    SudoRefused: (
        "ShotGrid refuses to let the broker act as this user (the user's "
        "'can_impersonate_this_user' is off, or the broker's script may not sudo)."
    ),
}


class TokenExchangeGrant(grants.BaseGrant, grants.TokenEndpointMixin):  # type: ignore[misc]
    GRANT_TYPE = GRANT_TYPE
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    subject: dict[str, Any]
    session: SessionRecord
    requested: str
    scope: str
    audience: str

    def validate_token_request(self) -> None:
        # Public clients fail here with 401 invalid_client: they cannot authenticate with
        # a secret, and RFC 8693 §2.1 needs an authenticated actor to name in `act`.
        client = self.authenticate_token_endpoint_client()
        if client.record.public or not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError("This client may not use token exchange.")
        self.request.client = client
        form = self.request.form
        subject, subject_type = form.get("subject_token"), form.get("subject_token_type")
        if not subject:
            raise InvalidRequestError("Missing 'subject_token'.")
        if not subject_type:
            raise InvalidRequestError("Missing 'subject_token_type'.")
        if subject_type != ACCESS_TOKEN_TYPE:
            raise InvalidRequestError(
                f"Unsupported 'subject_token_type': only {ACCESS_TOKEN_TYPE} (a broker access "
                "token) can be exchanged."
            )
        if form.get("actor_token") or form.get("actor_token_type"):
            raise InvalidRequestError(
                "'actor_token' is not supported: the authenticated client is the actor."
            )
        requested = form.get("requested_token_type") or ACCESS_TOKEN_TYPE
        if requested not in (ACCESS_TOKEN_TYPE, SHOTGRID_TOKEN_TYPE):
            raise InvalidRequestError(
                f"Unsupported 'requested_token_type': use {ACCESS_TOKEN_TYPE} or "
                f"{SHOTGRID_TOKEN_TYPE}."
            )
        parts: Components = self.server.components
        try:
            claims = validate_access_token(
                parts.keys, parts.store, parts.issuer, parts.now(), subject
            )
        except InactiveToken as exc:
            audit(
                "token_exchange",
                outcome="inactive_subject",
                reason=exc.reason,
                client_id=client.client_id,
                ip=self.request.client_ip,
            )
            raise InvalidRequestError(
                "The 'subject_token' is expired, revoked, or not an access token of this broker."
            ) from None
        sid = claims.get("sid")
        session = parts.store.get_session(str(sid)) if sid else None
        if session is None:
            raise InvalidRequestError("The 'subject_token' must represent a signed-in user.")
        subject_scope = str(claims.get("scope") or "")
        self.subject, self.session, self.requested = claims, session, requested
        self.scope = resolve_scope(
            self.request.payload.scope, tuple(subject_scope.split()), subject_scope
        )
        if requested == SHOTGRID_TOKEN_TYPE:
            if not client.record.may_exchange_shotgrid:
                raise UnauthorizedClientError("This client may not obtain ShotGrid tokens.")
            return
        subject_aud = claims.get("aud")
        default = (
            subject_aud
            if isinstance(subject_aud, str) and subject_aud in client.record.audiences
            else None
        )
        self.audience = resolve_audience(form, client.record.audiences, default)

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        if self.requested == SHOTGRID_TOKEN_TYPE:
            return self._shotgrid_token()
        return self._broker_token()

    def _broker_token(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        parts: Components = self.server.components
        client = self.request.client
        subject, scope = self.subject, self.scope
        act: dict[str, Any] = {"sub": client.client_id}
        if isinstance(subject.get("act"), dict):
            act["act"] = subject["act"]
        not_after = datetime.fromtimestamp(subject["exp"], UTC)
        extra = client.record.max_exchange_lifetime
        if extra is not None:
            not_after += timedelta(seconds=extra)
        fam = subject.get("fam")
        at = parts.minter.access_token(
            self.session,
            client.client_id,
            scope,
            audience=self.audience,
            act=act,
            not_after=not_after,
            family_id=str(fam) if fam else None,
        )
        audit(
            "token_exchange",
            client_id=client.client_id,
            audience=self.audience,
            user_id=subject.get("sg_user_id"),
            sid=subject.get("sid"),
            ip=self.request.client_ip,
        )
        body: dict[str, Any] = {
            "access_token": at.token,
            "issued_token_type": ACCESS_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": at.expires_in,
            "scope": scope,
        }
        return 200, body, TOKEN_HEADERS

    def _shotgrid_token(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        parts: Components = self.server.components
        client = self.request.client
        session = self.session
        strategy = parts.custody.strategy
        who = {
            "client_id": client.client_id,
            "user_id": session.user_id,
            "sid": session.sid,
            "strategy": strategy,
            "ip": self.request.client_ip,
        }
        try:
            tokens: UpstreamTokens = parts.custody.tokens_for(session)
        except UpstreamUnavailable:
            audit("token_exchange_shotgrid", outcome="unavailable", **who)
            raise TemporarilyUnavailableError(
                "ShotGrid is not reachable right now; try again shortly.", retry_after=5
            ) from None
        except (UpstreamTokenRejected, UnknownUser, InactiveUser, SudoRefused) as exc:
            audit("token_exchange_shotgrid", outcome="refused", reason=type(exc).__name__, **who)
            raise InvalidGrantError(UPSTREAM_MESSAGES[type(exc)]) from None
        audit("token_exchange_shotgrid", **who)
        expires_in = int((tokens.expires_at - parts.now()).total_seconds())
        body: dict[str, Any] = {
            "access_token": tokens.access_token,
            "issued_token_type": SHOTGRID_TOKEN_TYPE,
            "token_type": "Bearer",
            "expires_in": max(0, expires_in),
        }
        return 200, body, TOKEN_HEADERS


SPEC = GrantSpec(
    TokenExchangeGrant,
    parameters=(
        "subject_token",
        "subject_token_type",
        "requested_token_type",
        "audience",
        "resource",
        "actor_token",
        "actor_token_type",
    ),
    confidential_only=True,
)
