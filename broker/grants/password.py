"""Resource Owner Password Credentials grant (RFC 6749 §4.3), first-party clients only.

The credentials are checked against ShotGrid's own token endpoint; the password lives on
the stack of this request and nowhere else. Upstream refusals become `invalid_grant` with
a description that tells the user what to do (RFC 6749 §5.2).
"""

from __future__ import annotations

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
from broker.grants import DEFAULT_SCOPE, TOKEN_HEADERS, GrantSpec, resolve_scope, user_scopes
from broker.throttle import Throttled
from broker.upstream import (
    InactiveUser,
    InvalidCredentials,
    LoginResult,
    SsoRequired,
    TwoFactorRequired,
    UpstreamUnavailable,
)

MESSAGES = {
    InvalidCredentials: (
        "Wrong ShotGrid username or password. Use your ShotGrid login and your Legacy Login "
        "password; on Autodesk Identity (cloud) sites that password works only once a "
        "Personal Access Token is bound to your account (Account Settings > Legacy Login "
        "and Personal Access Token)."
    ),
    InactiveUser: (
        "This ShotGrid account is disabled. Ask your ShotGrid administrator to reactivate it."
    ),
    TwoFactorRequired: (
        "This ShotGrid account requires two-factor authentication, which the password grant "
        "cannot carry. Sign in with 'token-broker login' (the device flow) or in the browser."
    ),
    SsoRequired: (
        "This ShotGrid account signs in through single sign-on only, so it has no password "
        "the broker can check. Use 'Sign in with ShotGrid' in the browser, or "
        "'token-broker login' (the device flow) for command-line tools."
    ),
}


class TwoFactorNeeded(InvalidGrantError):  # type: ignore[misc]
    """The password was right and the account needs a two-factor code: the login page goes
    on to its code step; the password grant answers `invalid_grant` (it cannot carry a
    code). Not a failed login for the throttle."""


def password_login(
    components: Components,
    username: str,
    password: str,
    *,
    client_id: str | None,
    ip: str | None,
) -> LoginResult:
    """Shared by the password grant and the login page: a throttle reservation (taken
    before ShotGrid is called, `broker.throttle`), then ShotGrid, with its errors mapped to
    OAuth errors and the reservation settled by what ShotGrid said. Synchronous: call it
    from a worker thread."""
    who: dict[str, Any] = {"client_id": client_id, "ip": ip}
    try:
        attempt = components.throttle.reserve(username, ip)
    except Throttled as exc:
        audit("login", outcome="throttled", login=username, limit=exc.limit, **who)
        raise
    with attempt:
        try:
            result = components.upstream.login(username, password)
        except UpstreamUnavailable:
            attempt.released()
            audit("login", outcome="unavailable", login=username, **who)
            raise TemporarilyUnavailableError(
                "ShotGrid is not reachable right now; nothing was changed. Try again shortly.",
                retry_after=5,
            ) from None
        except TwoFactorRequired:
            # The password was right (a wrong one is a plain refusal): not a guess that
            # failed. The code step reserves again and counts every wrong code.
            attempt.released()
            audit("login", outcome="two_factor_required", login=username, **who)
            raise TwoFactorNeeded(MESSAGES[TwoFactorRequired]) from None
        except (InvalidCredentials, InactiveUser, SsoRequired) as exc:
            attempt.failed()
            audit("login", outcome="failure", login=username, reason=type(exc).__name__, **who)
            raise InvalidGrantError(MESSAGES[type(exc)]) from None
        attempt.succeeded()
    audit("login", user_id=result.identity.user_id, login=result.identity.login, **who)
    return result


class PasswordGrant(grants.ResourceOwnerPasswordCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post"]

    scope: str
    login: LoginResult

    def validate_token_request(self) -> None:
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError("This client may not use the password grant.")
        form = self.request.form
        username, password = form.get("username"), form.get("password")
        if not username:
            raise InvalidRequestError("Missing 'username' in request.")
        if password is None or password == "":
            raise InvalidRequestError("Missing 'password' in request.")
        if len(username) > 256 or len(password) > 1024:
            raise InvalidRequestError("'username' or 'password' is too long.")
        self.request.client = client
        self.scope = resolve_scope(
            self.request.payload.scope, user_scopes(client.record.scopes), DEFAULT_SCOPE
        )
        self.login = password_login(
            self.server.components,
            username,
            password,
            client_id=client.client_id,
            ip=self.request.client_ip,
        )
        self.request.user = self.login.identity

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        parts: Components = self.server.components
        client = self.request.client
        session = parts.sessions.new_session(
            self.login.identity,
            auth_method="password",
            client_ip=self.request.client_ip,
            user_agent=self.request.headers.get("user-agent"),
            client_id=client.client_id,
        )
        parts.custody.keep(session, self.login.tokens)
        family = refresh = None
        if client.check_grant_type("refresh_token"):
            family, refresh = parts.sessions.start_family(session, client.client_id, self.scope)
        body = parts.minter.token_response(
            session, client.client_id, self.scope, family=family, refresh=refresh
        )
        return 200, body, TOKEN_HEADERS


SPEC = GrantSpec(PasswordGrant, parameters=("username", "password"))
