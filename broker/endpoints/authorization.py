"""The authorization endpoint's protocol logic (RFC 6749 §4.1.1-§4.1.2, RFC 7636 §4.3,
OIDC Core §3.1.2), framework-free: validate a request, decide whether the SSO session can
answer it, issue a code, build the redirect.

Errors come in two kinds (RFC 6749 §4.1.2.1): before the client and its redirect URI are
known to be genuine, nothing may be sent to that URI, so the HTTP layer shows an error page
(`redirectable=False`); after, the error goes back to the client's redirect URI.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode, urlsplit, urlunsplit

from broker.core import Broker
from broker.grants import DEFAULT_SCOPE
from broker.redirects import redirect_uri_allowed
from broker.store import AuthCodeRecord, ClientRecord, SessionRecord
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


class AuthorizeError(Exception):
    """An authorization error. `redirectable` says whether it may go to the redirect URI."""

    def __init__(
        self,
        error: str,
        description: str,
        *,
        redirectable: bool,
        request: AuthorizationRequest | None = None,
    ) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.redirectable = redirectable
        self.request = request


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
    """Check an authorization request; raise AuthorizeError. `get_client(client_id)` reads
    the store (call this from the threadpool)."""
    client_id = params.get("client_id") or ""
    if not client_id:
        raise AuthorizeError("invalid_request", "Missing 'client_id'.", redirectable=False)
    client: ClientRecord | None = get_client(client_id) if len(client_id) <= 200 else None
    if client is None:
        raise AuthorizeError("invalid_client", "Unknown client.", redirectable=False)
    redirect_uri = params.get("redirect_uri") or ""
    if not redirect_uri:
        raise AuthorizeError("invalid_request", "Missing 'redirect_uri'.", redirectable=False)
    if not redirect_uri_allowed(redirect_uri, client.redirect_uris):
        raise AuthorizeError(
            "invalid_request",
            "The 'redirect_uri' is not registered for this client.",
            redirectable=False,
        )
    state = params.get("state") or None

    def fail(error: str, description: str) -> AuthorizeError:
        partial = AuthorizationRequest(
            client, redirect_uri, "", state, None, None, None, frozenset(), None, None, ()
        )
        return AuthorizeError(error, description, redirectable=True, request=partial)

    for name, limit in _MAX_LEN.items():
        if len(params.get(name) or "") > limit:
            raise fail("invalid_request", f"'{name}' is too long.")
    if "request" in params:
        raise fail("request_not_supported", "Request objects are not supported.")
    if "request_uri" in params:
        raise fail("request_uri_not_supported", "'request_uri' is not supported.")
    if "authorization_code" not in client.grant_types:
        raise fail("unauthorized_client", "This client may not use the authorization code flow.")
    response_type = params.get("response_type")
    if not response_type:
        raise fail("invalid_request", "Missing 'response_type'.")
    if response_type != "code":
        raise fail("unsupported_response_type", "Only 'response_type=code' is supported.")
    response_mode = params.get("response_mode")
    if response_mode not in (None, "", "query"):
        raise fail("invalid_request", "Only 'response_mode=query' is supported.")
    requested = params.get("scope")
    wanted = list(dict.fromkeys((requested or "").split()))
    if any(s not in client.scopes for s in wanted):
        raise fail("invalid_scope", "The requested scope is not allowed for this client.")
    scope = (
        " ".join(wanted)
        if wanted
        else " ".join(s for s in DEFAULT_SCOPE.split() if s in client.scopes)
    )
    challenge = params.get("code_challenge") or None
    method = params.get("code_challenge_method") or None
    if challenge is None:
        if method is not None:
            raise fail("invalid_request", "'code_challenge_method' without 'code_challenge'.")
        if client.public:
            raise fail("invalid_request", "PKCE is required: send 'code_challenge' (S256).")
    else:
        if method != "S256":
            raise fail(
                "invalid_request", "Only 'code_challenge_method=S256' is supported (not plain)."
            )
        if not _PKCE.match(challenge):
            raise fail("invalid_request", "Malformed 'code_challenge'.")
    prompt = frozenset((params.get("prompt") or "").split())
    if prompt - PROMPTS:
        raise fail("invalid_request", "Unsupported 'prompt' value.")
    if "none" in prompt and len(prompt) > 1:
        raise fail("invalid_request", "'prompt=none' cannot be combined with other values.")
    max_age: int | None = None
    raw_max_age = params.get("max_age")
    if raw_max_age not in (None, ""):
        assert raw_max_age is not None
        if not raw_max_age.isdigit() or len(raw_max_age) > 10:
            raise fail("invalid_request", "'max_age' must be a non-negative integer.")
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


def error_redirect(issuer: str, err: AuthorizeError) -> str:
    assert err.request is not None
    return with_query(
        err.request.redirect_uri,
        {
            "error": err.error,
            "error_description": err.description,
            "state": err.request.state,
            "iss": issuer,
        },
    )


def session_usable(session: SessionRecord | None, broker: Broker) -> bool:
    return session is not None and not session.revoked and session.expires_at > broker.now()


def issue_code(broker: Broker, request: AuthorizationRequest, session: SessionRecord) -> str:
    """Store a fresh single-use code (hashed) and return the success redirect URL."""
    code = secrets.token_urlsafe(32)
    now = broker.now()
    broker.store.create_code(
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
    return with_query(
        request.redirect_uri, {"code": code, "state": request.state, "iss": broker.issuer}
    )
