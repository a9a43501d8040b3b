"""The authorization endpoint's protocol logic (RFC 6749 §4.1.1-§4.1.2, RFC 7636 §4.3,
OIDC Core §3.1.2), framework-free: validate a request, decide whether the SSO session can
answer it, issue a code, build the redirect.

Errors are Authlib's OAuth2Error classes, as at the token endpoint, and come in two kinds
(RFC 6749 §4.1.2.1): before the client and its redirect URI are known to be genuine,
nothing may be sent to that URI, so the HTTP layer shows an error page (the error carries
no `redirect_uri`); after, the error carries the client's `redirect_uri` and `state` and
goes back there.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode, urlsplit, urlunsplit

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import (
    InvalidClientError,
    InvalidRequestError,
    InvalidScopeError,
    UnauthorizedClientError,
    UnsupportedResponseTypeError,
)
from authlib.oidc.core.errors import RequestNotSupportedError, RequestURINotSupportedError

from broker.grants import DEFAULT_SCOPE, resolve_scope, user_scopes
from broker.redirects import redirect_uri_allowed
from broker.store import AuthCodeRecord, ClientRecord, CodeStore, SessionRecord
from broker.tokens.secrets import sha256_b64

CODE_TTL = 60
"""Seconds an authorization code lives (RFC 6749 §4.1.2 recommends at most 10 minutes)."""

#: Parameters of an authorization request the broker understands; the login form carries
#: them through as hidden fields so POST /authorize re-validates exactly the same request.
PARAMS = (
    "client_id",
    "redirect_uri",
    "response_type",
    "response_mode",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "prompt",
    "max_age",
    "login_hint",
)

PROMPTS = frozenset({"none", "login", "consent", "select_account"})
_PKCE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
_MAX_LEN = {"state": 1024, "nonce": 512, "login_hint": 256, "scope": 512}


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    client: ClientRecord
    redirect_uri: str
    scope: str
    state: str | None
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    prompt: frozenset[str]
    max_age: int | None
    login_hint: str | None
    raw: tuple[tuple[str, str], ...]
    """The understood parameters as received, to carry through the login form."""

    def needs_fresh_login(self, session: SessionRecord, now_epoch: float) -> bool:
        """`prompt=login`, or `max_age` exceeded by the session (OIDC Core §3.1.2.1)."""
        if "login" in self.prompt:
            return True
        if self.max_age is not None:
            return now_epoch - session.auth_time.timestamp() > self.max_age
        return False


def validate(
    params: Mapping[str, str], get_client: Callable[[str], ClientRecord | None]
) -> AuthorizationRequest:
    """Check an authorization request; raise OAuth2Error (with `redirect_uri` set once the
    error may go back to the client). `get_client(client_id)` reads the store (call this
    from a worker thread)."""
    client_id = params.get("client_id") or ""
    if not client_id:
        raise InvalidRequestError("Missing 'client_id'.")
    client: ClientRecord | None = get_client(client_id) if len(client_id) <= 200 else None
    if client is None:
        raise InvalidClientError("Unknown client.")
    redirect_uri = params.get("redirect_uri") or ""
    if not redirect_uri:
        raise InvalidRequestError("Missing 'redirect_uri'.")
    if not redirect_uri_allowed(redirect_uri, client.redirect_uris):
        raise InvalidRequestError("The 'redirect_uri' is not registered for this client.")
    state = params.get("state") or None

    def fail(error: type[OAuth2Error], description: str) -> OAuth2Error:
        return error(description, state=state, redirect_uri=redirect_uri)

    for name, limit in _MAX_LEN.items():
        if len(params.get(name) or "") > limit:
            raise fail(InvalidRequestError, f"'{name}' is too long.")
    if "request" in params:
        raise fail(RequestNotSupportedError, "Request objects are not supported.")
    if "request_uri" in params:
        raise fail(RequestURINotSupportedError, "'request_uri' is not supported.")
    if "authorization_code" not in client.grant_types:
        raise fail(UnauthorizedClientError, "This client may not use the authorization code flow.")
    response_type = params.get("response_type")
    if not response_type:
        raise fail(InvalidRequestError, "Missing 'response_type'.")
    if response_type != "code":
        raise fail(UnsupportedResponseTypeError, "Only 'response_type=code' is supported.")
    response_mode = params.get("response_mode")
    if response_mode not in (None, "", "query"):
        raise fail(InvalidRequestError, "Only 'response_mode=query' is supported.")
    try:
        scope = resolve_scope(params.get("scope"), user_scopes(client.scopes), DEFAULT_SCOPE)
    except InvalidScopeError:
        raise fail(
            InvalidScopeError, "The requested scope is not allowed for this client."
        ) from None
    challenge = params.get("code_challenge") or None
    method = params.get("code_challenge_method") or None
    if challenge is None:
        if method is not None:
            raise fail(InvalidRequestError, "'code_challenge_method' without 'code_challenge'.")
        if client.public:
            raise fail(InvalidRequestError, "PKCE is required: send 'code_challenge' (S256).")
    else:
        if method != "S256":
            raise fail(
                InvalidRequestError, "Only 'code_challenge_method=S256' is supported (not plain)."
            )
        if not _PKCE.match(challenge):
            raise fail(InvalidRequestError, "Malformed 'code_challenge'.")
    prompt = frozenset((params.get("prompt") or "").split())
    if prompt - PROMPTS:
        raise fail(InvalidRequestError, "Unsupported 'prompt' value.")
    if "none" in prompt and len(prompt) > 1:
        raise fail(InvalidRequestError, "'prompt=none' cannot be combined with other values.")
    max_age: int | None = None
    raw_max_age = params.get("max_age")
    if raw_max_age not in (None, ""):
        assert raw_max_age is not None
        if not raw_max_age.isdigit() or len(raw_max_age) > 10:
            raise fail(InvalidRequestError, "'max_age' must be a non-negative integer.")
        max_age = int(raw_max_age)
    raw = tuple((k, params[k]) for k in PARAMS if params.get(k))
    return AuthorizationRequest(
        client=client,
        redirect_uri=redirect_uri,
        scope=scope,
        state=state,
        nonce=params.get("nonce") or None,
        code_challenge=challenge,
        code_challenge_method=method,
        prompt=prompt,
        max_age=max_age,
        login_hint=params.get("login_hint") or None,
        raw=raw,
    )


def with_query(uri: str, params: Mapping[str, str | None]) -> str:
    """Append parameters to a redirect URI, keeping the query it already has
    (RFC 6749 §3.1.2: the registered query component must be retained)."""
    parts = urlsplit(uri)
    extra = urlencode({k: v for k, v in params.items() if v is not None})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def error_redirect(issuer: str, err: OAuth2Error) -> str:
    """The redirect of an error raised with a `redirect_uri` (RFC 6749 §4.1.2.1, RFC 9207)."""
    assert err.redirect_uri is not None
    return with_query(
        err.redirect_uri,
        {
            "error": err.error,
            "error_description": err.description,
            "state": err.state,
            "iss": issuer,
        },
    )


def issue_code(
    codes: CodeStore,
    issuer: str,
    now: datetime,
    request: AuthorizationRequest,
    session: SessionRecord,
) -> str:
    """Store a fresh single-use code (hashed) and return the success redirect URL."""
    code = secrets.token_urlsafe(32)
    codes.create_code(
        AuthCodeRecord(
            code_hash=sha256_b64(code),
            client_id=request.client.client_id,
            redirect_uri=request.redirect_uri,
            scope=request.scope,
            sid=session.sid,
            auth_time=session.auth_time,
            expires_at=now + timedelta(seconds=CODE_TTL),
            nonce=request.nonce,
            code_challenge=request.code_challenge,
            code_challenge_method=request.code_challenge_method,
        )
    )
    return with_query(request.redirect_uri, {"code": code, "state": request.state, "iss": issuer})
