"""`GET /authorize` and `POST /authorize`: the authorization endpoint (RFC 6749 §4.1,
OIDC Core §3.1.2) and the hosted login page it renders.

GET validates the request, answers at once from a live SSO session (unless `prompt=login`
or `max_age` asks for a fresh login), returns `login_required` for `prompt=none`, and
otherwise renders the login form. The form posts the same authorization parameters back,
with the credentials and a CSRF token bound to exactly those parameters; POST validates the
request again, checks the token, throttles, asks ShotGrid, starts the SSO session and
redirects with a code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import InvalidGrantError
from authlib.oidc.core.errors import LoginRequiredError
from starlette.requests import Request
from starlette.responses import Response

from broker.components import Components
from broker.endpoints.authorization import (
    AuthorizationRequest,
    error_redirect,
    issue_code,
    validate,
)
from broker.errors import TemporarilyUnavailableError, TooManyRequestsError
from broker.events import audit
from broker.grants.password import MESSAGES, password_login
from broker.http import pages
from broker.http.middleware import note_outcome
from broker.http.oauth import client_ip
from broker.http.threads import components, run_sync
from broker.store import SessionRecord, StoreUnavailable
from broker.tokens.secrets import sha256_b64
from broker.upstream import TwoFactorRequired

log = logging.getLogger("broker.http.authorize")

CSRF_PURPOSE = "login"
MSG_CSRF = "This sign-in form has expired or did not come from this site. Please sign in again."
MSG_MISSING = "Enter your ShotGrid username and password."
MSG_STORE = "Sign-in is unavailable right now because the token store is not reachable."
MSG_TWO_FACTOR = (
    "This ShotGrid account requires two-factor authentication, which this sign-in page "
    "cannot ask for yet. Ask your ShotGrid administrator how to sign in."
)
#: The password grant's advice, where it would be wrong on this page (its two-factor
#: message sends people to the browser login: this page).
PAGE_MESSAGES = {MESSAGES[TwoFactorRequired]: MSG_TWO_FACTOR}


@dataclass(frozen=True, slots=True)
class Redirect:
    url: str
    session: SessionRecord | None = None
    cookie: str | None = None
    """A new SSO session's cookie value, set on the redirect."""


@dataclass(frozen=True, slots=True)
class LoginForm:
    request: AuthorizationRequest
    username: str = ""
    error: str | None = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    refusal: str | None = None
    """The OAuth error code of a refused submit, for the request's metrics: a refused
    sign-in is shown again with 200, and counts as the refusal it is."""


@dataclass(frozen=True, slots=True)
class BrowserRequest:
    """What the synchronous decision needs of the HTTP request, read on the event loop."""

    params: Mapping[str, str]
    method: str
    session_cookie: str | None
    csrf_cookie: str | None
    ip: str | None
    user_agent: str | None = None


Outcome = Redirect | LoginForm


async def authorize(request: Request) -> Response:
    parts = components(request)
    params = await pages.page_params(request, parts)
    if isinstance(params, Response):
        return params
    seen = BrowserRequest(
        params=params,
        method=request.method,
        session_cookie=request.cookies.get(pages.session_cookie_name(parts)),
        csrf_cookie=request.cookies.get(pages.csrf_cookie_name(parts)),
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
    )
    try:
        outcome = await run_sync(request, decide, parts, seen)
    except OAuth2Error as err:
        note_outcome(err.error)
        if err.redirect_uri:
            return pages.redirect(error_redirect(parts.issuer, err))
        return pages.error_page(parts, err.error, err.description or "Invalid request.")
    except StoreUnavailable:
        note_outcome("temporarily_unavailable")
        return pages.error_page(parts, "temporarily_unavailable", MSG_STORE, 503)
    if isinstance(outcome, LoginForm):
        if outcome.refusal is not None:
            note_outcome(outcome.refusal)
        return _login_page(request, parts, outcome)
    response = pages.redirect(outcome.url)
    if outcome.cookie is not None and outcome.session is not None:
        pages.set_session_cookie(parts, response, outcome.cookie, outcome.session)
    return response


def decide(parts: Components, seen: BrowserRequest) -> Outcome:
    """The whole authorization request, synchronously (the request's one hop): validate,
    answer from the SSO session, or check a submitted login and start the session."""
    areq = validate(seen.params, parts.store.get_client)
    session = pages.read_session(parts, seen.session_cookie)
    if seen.method == "POST":
        return _login_submit(parts, areq, seen)
    if session is not None and not areq.needs_fresh_login(session, parts.now().timestamp()):
        url = issue_code(parts.store, parts.issuer, parts.now(), areq, session)
        audit("sso", client_id=areq.client.client_id, sid=session.sid, ip=seen.ip)
        return Redirect(url)
    if "none" in areq.prompt:
        raise LoginRequiredError(
            "The user is not signed in.", state=areq.state, redirect_uri=areq.redirect_uri
        )
    return LoginForm(areq, username=areq.login_hint or "")


def _login_page(request: Request, parts: Components, form: LoginForm) -> Response:
    areq = form.request
    cookie = pages.csrf_cookie_value(parts, request)
    token = pages.csrf_token(parts, cookie, CSRF_PURPOSE, areq.raw)
    response = pages.page(
        parts,
        "login.html",
        {
            "client_name": areq.client.name or areq.client.client_id,
            "hidden": areq.raw,
            "csrf_token": token,
            "username": form.username,
            "error": form.error,
            "accent": parts.settings.accent_color,
        },
        status=form.status,
        form_targets=pages.form_targets_for(areq.redirect_uri),
        headers=form.headers,
    )
    pages.set_csrf_cookie(parts, response, cookie)
    return response


def _login_submit(parts: Components, areq: AuthorizationRequest, seen: BrowserRequest) -> Outcome:
    params = seen.params
    username = (params.get("username") or "").strip()
    password = params.get("password") or ""
    if not pages.csrf_ok(parts, seen.csrf_cookie, params.get("csrf_token"), CSRF_PURPOSE, areq.raw):
        audit("login_csrf", outcome="failure", client_id=areq.client.client_id)
        return LoginForm(areq, username, MSG_CSRF, 403, refusal="invalid_request")
    if not username or not password:
        return LoginForm(areq, username, MSG_MISSING, 400, refusal="invalid_request")
    if len(username) > 256 or len(password) > 1024:
        too_long = "That username or password is too long."
        return LoginForm(areq, "", too_long, 400, refusal="invalid_request")
    try:
        result = password_login(
            parts, username, password, client_id=areq.client.client_id, ip=seen.ip
        )
    except (TooManyRequestsError, TemporarilyUnavailableError) as err:
        # Throttled (429) or ShotGrid/store down (503): the form again, with the advice.
        return LoginForm(
            areq,
            username,
            err.description,
            err.status_code,
            {"Retry-After": str(err.retry_after or 5)},
            refusal=err.error,
        )
    except InvalidGrantError as err:
        # The form again, with 200 as login pages answer a refused sign-in.
        message = PAGE_MESSAGES.get(err.description, err.description)
        return LoginForm(areq, username, message, refusal=err.error)
    cookie = pages.new_session_cookie()
    session = parts.sessions.new_session(
        result.identity,
        cookie_hash=sha256_b64(cookie),
        client_ip=seen.ip,
        user_agent=seen.user_agent,
    )
    parts.custody.keep(session, result.tokens)
    url = issue_code(parts.store, parts.issuer, parts.now(), areq, session)
    return Redirect(url, session, cookie)
