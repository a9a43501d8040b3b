"""Refresh Token grant (RFC 6749 §6) with rotation and reuse detection (RFC 9700 §4.14.2).

Every use rotates. The chain (token, family, session) is read once; the rules of
`broker.tokens.rotation` judge it, and the rotation is one compare-and-swap in the store
(`RefreshStore.claim_refresh`), never Authlib's read → issue → revoke sequence, so
concurrent uses of one token across threads and processes yield exactly one successor:
within the reuse grace a repeated use gets that same successor back, later reuse revokes
the whole family. At most every `upstream_recheck` seconds the user is re-read in ShotGrid
so a deactivated user loses the family at the next refresh.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from authlib.oauth2.rfc6749 import InvalidGrantError, grants

from broker.components import Components
from broker.errors import TemporarilyUnavailableError
from broker.events import audit
from broker.grants import TOKEN_HEADERS, GrantSpec
from broker.server import OAuthClient
from broker.store import RefreshChain, SessionRecord
from broker.tokens.refresh import load_refresh_token
from broker.tokens.rotation import RotationResult, RotationStatus
from broker.upstream import (
    InactiveUser,
    UnknownUser,
    UpstreamTokenRejected,
    UpstreamUnavailable,
)

log = logging.getLogger("broker.grants.refresh_token")


class RefreshCredential:
    """Authlib's view of a presented refresh token (its TokenMixin subset) over the
    records the store read for it."""

    def __init__(self, chain: RefreshChain) -> None:
        self.chain = chain
        self.record, self.family, self.session = chain

    def check_client(self, client: OAuthClient) -> bool:
        return bool(self.family.client_id == client.get_client_id())

    def get_scope(self) -> str:
        return self.family.scope


class RefreshTokenGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post"]
    INCLUDE_NEW_REFRESH_TOKEN = True

    rotation: RotationResult

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshCredential | None:
        parts: Components = self.server.components
        found = load_refresh_token(
            parts.keys, parts.store, parts.issuer, parts.now(), refresh_token
        )
        return RefreshCredential(found) if found is not None else None

    def authenticate_user(self, credential: RefreshCredential) -> SessionRecord:
        return credential.session

    def revoke_old_credential(self, credential: RefreshCredential) -> None:
        """Nothing: the rotation compare-and-swap already consumed the parent."""

    def validate_token_request(self) -> None:
        client = self._validate_request_client()
        self.request.client = client
        credential: RefreshCredential = self._validate_request_token(client)
        self._validate_token_scope(credential)
        self.request.refresh_token = credential
        parts: Components = self.server.components
        chain = credential.chain
        result = parts.sessions.rotate(chain, before_claim=lambda: self._recheck_upstream(chain))
        who = {
            "family_id": credential.family.family_id,
            "client_id": client.client_id,
            "user_id": credential.session.user_id,
            "ip": self.request.client_ip,
        }
        if result.status is RotationStatus.INVALID:
            if result.problem == "revoked":
                raise InvalidGrantError("This refresh token has been revoked; sign in again.")
            raise InvalidGrantError("This sign-in has expired; sign in again.")
        if result.status is RotationStatus.REUSED:
            audit("refresh_reuse_detected", outcome="revoked", **who)
            raise InvalidGrantError(
                "This refresh token was already used; for safety the sign-in is revoked. "
                "Sign in again."
            )
        self.rotation = result
        audit("refresh", outcome=result.status.value, **who)

    def _recheck_upstream(self, chain: RefreshChain) -> None:
        """At most every `upstream_recheck` seconds, re-read the user in ShotGrid; a user
        gone or disabled there ends the session here."""
        parts: Components = self.server.components
        settings = parts.settings
        session = chain.session
        now = parts.now()
        interval = timedelta(seconds=settings.upstream_recheck)
        if now - session.last_checked_at < interval:
            return
        try:
            identity = parts.custody.check_user(session)
        except (UnknownUser, InactiveUser, UpstreamTokenRejected) as exc:
            if isinstance(exc, UpstreamTokenRejected):
                # Without a script key the user's own upstream token is our only probe;
                # a rejected one means the user must sign in again.
                reason, message = (
                    "upstream_token_rejected",
                    "ShotGrid no longer accepts this sign-in; sign in again.",
                )
            else:
                reason, message = ("upstream_inactive", INACTIVE_MESSAGE)
            parts.sessions.end_session(session.sid, reason)
            audit("session_revoked", outcome=reason, sid=session.sid, user_id=session.user_id)
            raise InvalidGrantError(message) from None
        except UpstreamUnavailable:
            overdue = now - session.last_checked_at - interval
            if overdue > timedelta(seconds=settings.upstream_recheck_max_stale):
                raise TemporarilyUnavailableError(
                    "ShotGrid has not been reachable for too long to renew this sign-in; "
                    "try again shortly.",
                    retry_after=30,
                ) from None
            return
        if identity is None:
            return
        if not identity.active:
            parts.sessions.end_session(session.sid, "upstream_inactive")
            raise InvalidGrantError(INACTIVE_MESSAGE)
        parts.store.mark_session_checked(session.sid, now)

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        parts: Components = self.server.components
        credential: RefreshCredential = self.request.refresh_token
        scope = self.request.payload.scope or credential.family.scope
        scope = " ".join(dict.fromkeys(scope.split()))
        body = parts.minter.token_response(
            credential.session,
            credential.family.client_id,
            scope,
            family=self.rotation.family or credential.family,
            refresh=self.rotation.successor,
        )
        return 200, body, TOKEN_HEADERS


INACTIVE_MESSAGE = (
    "Your ShotGrid account is no longer active; sign in again or ask your ShotGrid administrator."
)

SPEC = GrantSpec(RefreshTokenGrant, parameters=("refresh_token",))
