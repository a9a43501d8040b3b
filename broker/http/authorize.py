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

from authlib.oauth2.rfc6749 import InvalidGrantError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from broker.core import Broker
from broker.endpoints.authorization import (
    AuthorizationRequest,
    AuthorizeError,
    error_redirect,
    issue_code,
    validate,
)
from broker.errors import TemporarilyUnavailableError, TooManyRequestsError
from broker.events import audit
from broker.grants.password import password_login
from broker.http import pages
from broker.http.oauth import client_ip
from broker.store import SessionRecord, StoreUnavailable
from broker.tokens.secrets import sha256_b64
from broker.upstream import LoginResult

log = logging.getLogger("broker.http.authorize")

CSRF_PURPOSE = "login"
MSG_CSRF = "This sign-in form has expired or did not come from this site. Please sign in again."
MSG_MISSING = "Enter your ShotGrid username and password."
MSG_STORE = "Sign-in is unavailable right now because the token store is not reachable."


def _broker(request: Request) -> Broker:
    broker: Broker = request.app.state.broker
    return broker


async def authorize(request: Request) -> Response:
    broker = _broker(request)
    params = await pages.page_params(request, broker)
    if isinstance(params, Response):
        return params
    try:
        areq = await run_in_threadpool(validate, params, broker.store.get_client)
        session = await run_in_threadpool(pages.read_session, broker, request)
        if request.method == "POST":
            return await _login_submit(request, broker, areq, params)
        if session is not None and not areq.needs_fresh_login(session, time_of(broker)):
            url = await run_in_threadpool(issue_code, broker, areq, session)
            audit("sso", client_id=areq.client.client_id, sid=session.sid, ip=client_ip(request))
            return pages.redirect(url)
        if "none" in areq.prompt:
            raise AuthorizeError(
                "login_required",
                "The user is not signed in.",
                redirectable=True,
                request=areq,
            )
        return _login_page(request, broker, areq, username=areq.login_hint or "")
    except AuthorizeError as err:
        if err.redirectable:
            return pages.redirect(error_redirect(broker.issuer, err))
        return pages.error_page(broker, err.error, err.description)
    except StoreUnavailable:
        return pages.error_page(broker, "temporarily_unavailable", MSG_STORE, 503)


def time_of(broker: Broker) -> float:
    return broker.now().timestamp()


def _login_page(
    request: Request,
    broker: Broker,
    areq: AuthorizationRequest,
    *,
    username: str = "",
    error: str | None = None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    cookie = pages.csrf_cookie_value(broker, request)
    token = pages.csrf_token(broker, cookie, CSRF_PURPOSE, areq.raw)
    response = pages.page(
        broker,
        "login.html",
        {
            "client_name": areq.client.name or areq.client.client_id,
            "hidden": areq.raw,
            "csrf_token": token,
            "username": username,
            "error": error,
            "accent": broker.settings.accent_color,
        },
        status=status,
        form_targets=pages.form_targets_for(areq.redirect_uri),
        headers=headers,
    )
    pages.set_csrf_cookie(broker, response, cookie)
    return response


def _start_sso(broker: Broker, result: LoginResult) -> tuple[SessionRecord, str]:
    cookie = pages.new_session_cookie()
    session = broker.new_session(result.identity, cookie_hash=sha256_b64(cookie))
    broker.keep_upstream_tokens(session, result.tokens)
    return session, cookie


async def _login_submit(
    request: Request, broker: Broker, areq: AuthorizationRequest, params: Mapping[str, str]
) -> Response:
    username = (params.get("username") or "").strip()
    password = params.get("password") or ""
    if not pages.csrf_ok(broker, request, params.get("csrf_token"), CSRF_PURPOSE, areq.raw):
        audit("login_csrf", outcome="failure", client_id=areq.client.client_id)
        return _login_page(request, broker, areq, username=username, error=MSG_CSRF, status=403)
    if not username or not password:
        return _login_page(request, broker, areq, username=username, error=MSG_MISSING, status=400)
    if len(username) > 256 or len(password) > 1024:
        return _login_page(
            request, broker, areq, error="That username or password is too long.", status=400
        )
    try:
        result: LoginResult = await run_in_threadpool(
            password_login,
            broker,
            username,
            password,
            client_id=areq.client.client_id,
            ip=client_ip(request),
        )
    except (TooManyRequestsError, TemporarilyUnavailableError) as err:
        # Throttled (429) or ShotGrid/store down (503): the form again, with the advice.
        return _login_page(
            request,
            broker,
            areq,
            username=username,
            error=err.description,
            status=err.status_code,
            headers={"Retry-After": str(err.retry_after or 5)},
        )
    except InvalidGrantError as err:
        return _login_page(request, broker, areq, username=username, error=err.description)
    session, cookie = await run_in_threadpool(_start_sso, broker, result)
    url = await run_in_threadpool(issue_code, broker, areq, session)
    response = pages.redirect(url)
    pages.set_session_cookie(broker, response, cookie, session)
    return response
