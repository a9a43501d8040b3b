"""`GET /authorize` and `POST /authorize`: the authorization endpoint (RFC 6749 §4.1,
OIDC Core §3.1.2) and the hosted login page it renders.

GET validates the request, answers at once from a live SSO session (unless `prompt=login`
or `max_age` asks for a fresh login), returns `login_required` for `prompt=none`, and
otherwise renders the login page (`broker/http/signin.py`). Its forms post the same
authorization parameters back, with a CSRF token bound to exactly those parameters; POST
validates the request again, runs the sign-in step the form names (password, two-factor
code, ShotGrid sign-in), and once a session started, redirects with a code.
"""

from __future__ import annotations

from authlib.oauth2 import OAuth2Error
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
from broker.events import audit
from broker.http import pages, signin
from broker.http.middleware import note_outcome
from broker.http.signin import BrowserRequest, Outcome, Redirect, SignedIn
from broker.http.threads import components, run_sync
from broker.store import StoreUnavailable

CSRF_PURPOSE = "login"
MSG_STORE = signin.MSG_STORE

__all__ = ["CSRF_PURPOSE", "BrowserRequest", "authorize", "continuation_for", "decide"]


async def authorize(request: Request) -> Response:
    parts = components(request)
    seen = await signin.read_browser_request(request, parts)
    if isinstance(seen, Response):
        return seen
    try:
        outcome = await run_sync(request, decide, parts, seen)
    except OAuth2Error as err:
        note_outcome(err.error)
        if err.redirect_uri:
            return pages.redirect(error_redirect(parts.issuer, err))
        return pages.error_page(parts, err.error, err.description or "Invalid request.")
    except StoreUnavailable:
        note_outcome("temporarily_unavailable")
        return signin.signin_error_page(parts, seen, MSG_STORE)
    return signin.respond(request, parts, seen, outcome)


def continuation_for(areq: AuthorizationRequest) -> signin.Continuation:
    return signin.Continuation(
        action="/authorize",
        params=areq.raw,
        purpose=CSRF_PURPOSE,
        client_name=areq.client.name or areq.client.client_id,
        client_id=areq.client.client_id,
        form_targets=tuple(pages.form_targets_for(areq.redirect_uri)),
    )


def decide(parts: Components, seen: BrowserRequest) -> Outcome:
    """The whole authorization request, synchronously (the request's one hop): validate,
    answer from the SSO session, or run a submitted sign-in step and, once it started a
    session, issue the code."""
    areq = validate(seen.params, parts.store.get_client)
    continuation = continuation_for(areq)
    if seen.method == "POST":
        outcome = signin.submit(parts, seen, continuation)
        if isinstance(outcome, SignedIn):
            url = issue_code(parts.store, parts.issuer, parts.now(), areq, outcome.session)
            return Redirect(url, outcome)
        return outcome
    session = pages.read_session(parts, seen.session_cookie)
    if session is not None and not areq.needs_fresh_login(session, parts.now().timestamp()):
        url = issue_code(parts.store, parts.issuer, parts.now(), areq, session)
        audit("sso", client_id=areq.client.client_id, sid=session.sid, ip=seen.ip)
        return Redirect(url)
    if "none" in areq.prompt:
        raise LoginRequiredError(
            "The user is not signed in.", state=areq.state, redirect_uri=areq.redirect_uri
        )
    if signin.wants_shotgrid_link(seen):
        return signin.start_by_link(parts, seen, continuation)
    return signin.login_page(parts, continuation, username=areq.login_hint or "")
