"""`GET|POST /device`: the verification page of the device authorization grant
(RFC 8628 §3.3), where a person approves or denies a command-line tool or plug-in.

The person signs in first with any of the login page's ways (`broker/http/signin.py`, with
this page as its continuation; an SSO session is reused), then sees which application asks
and for which scopes, the user code (pre-filled from `verification_uri_complete`, to
compare with the device), "only continue if you started this yourself", and Approve /
Deny buttons (`name="action"`). A pre-filled code is never approved by following the link:
only the CSRF-protected POST of a signed-in person's choice decides (§5.4).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response

from broker.components import Components
from broker.endpoints.device_verification import PendingDevice, UnknownUserCode, decide, lookup
from broker.errors import TooManyRequestsError
from broker.http import pages, signin
from broker.http.signin import BrowserRequest, Continuation, Outcome, Redirect, SignedIn
from broker.http.threads import components, run_sync
from broker.store import SessionRecord, StoreUnavailable

CSRF_PURPOSE = "device"
SIGNIN_PURPOSE = "login:/device"
MSG_UNKNOWN = (
    "No device is waiting with this code. Check the code on your device: codes expire after "
    "10 minutes and work once."
)
MSG_CHOOSE = "Choose Approve or Deny."

SCOPE_TEXT = {
    "openid": "Know who you are (your ShotGrid user id)",
    "profile": "Your name and ShotGrid login",
    "email": "Your email address",
    "offline_access": "Stay signed in (renew its access without asking again)",
}


@dataclass(frozen=True, slots=True)
class DevicePage:
    """The verification page for a signed-in person."""

    session: SessionRecord
    user_code: str = ""
    pending: PendingDevice | None = None
    prefilled: bool = False
    error: str | None = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    done: Literal["approved", "denied"] | None = None


async def device(request: Request) -> Response:
    parts = components(request)
    seen = await signin.read_browser_request(request, parts)
    if isinstance(seen, Response):
        return seen
    try:
        outcome = await run_sync(request, verify, parts, seen)
    except StoreUnavailable:
        return signin.signin_error_page(parts, seen, signin.MSG_STORE)
    if isinstance(outcome, DevicePage):
        return _render(request, parts, outcome)
    return signin.respond(request, parts, seen, outcome)


def continuation_for(params: Mapping[str, str]) -> Continuation:
    typed = (params.get("user_code") or "").strip()[:64]
    return Continuation(
        action="/device",
        params=(("user_code", typed),) if typed else (),
        purpose=SIGNIN_PURPOSE,
        client_name="device sign-in",
    )


def verify(parts: Components, seen: BrowserRequest) -> DevicePage | Outcome:
    """The page's one hop: sign in (forms without `action`), show the code's request, or
    record the person's decision."""
    continuation = continuation_for(seen.params)
    if seen.method == "POST" and "action" not in seen.params:
        outcome = signin.submit(parts, seen, continuation)
        if isinstance(outcome, SignedIn):
            return Redirect(parts.issuer + continuation.path, outcome)
        return outcome
    session = pages.read_session(parts, seen.session_cookie)
    if session is None:
        if signin.wants_shotgrid_link(seen):
            return signin.start_by_link(parts, seen, continuation)
        return signin.login_page(parts, continuation)
    typed = (seen.params.get("user_code") or "").strip()[:64]
    if seen.method == "GET":
        if not typed:
            return DevicePage(session)
        return _show(parts, seen, session, typed)
    if not pages.csrf_ok(parts, seen.csrf_cookie, seen.params.get("csrf_token"), CSRF_PURPOSE, ()):
        return DevicePage(session, typed, error=signin.MSG_CSRF, status=403)
    action = seen.params.get("action")
    if action not in ("approve", "deny"):
        return DevicePage(session, typed, error=MSG_CHOOSE, status=400)
    try:
        pending = decide(parts, typed, approve=action == "approve", session=session, ip=seen.ip)
    except UnknownUserCode:
        return DevicePage(session, typed, error=MSG_UNKNOWN, status=400)
    except TooManyRequestsError as err:
        return _throttled(session, typed, err)
    return DevicePage(
        session, pending.user_code, pending, done="approved" if action == "approve" else "denied"
    )


def _show(
    parts: Components, seen: BrowserRequest, session: SessionRecord, typed: str
) -> DevicePage:
    try:
        pending = lookup(parts, typed, seen.ip)
    except UnknownUserCode:
        return DevicePage(session, typed, error=MSG_UNKNOWN, status=400)
    except TooManyRequestsError as err:
        return _throttled(session, typed, err)
    return DevicePage(session, pending.user_code, pending, prefilled=True)


def _throttled(session: SessionRecord, typed: str, err: TooManyRequestsError) -> DevicePage:
    return DevicePage(
        session,
        typed,
        error=err.description,
        status=429,
        headers={"Retry-After": str(err.retry_after)},
    )


def _render(request: Request, parts: Components, view: DevicePage) -> Response:
    cookie = pages.csrf_cookie_value(parts, request)
    pending = view.pending
    response = pages.page(
        parts,
        "device.html",
        {
            "csrf_token": pages.csrf_token(parts, cookie, CSRF_PURPOSE, ()),
            "user_name": view.session.name or view.session.login,
            "login": view.session.login,
            "user_code": view.user_code,
            "prefilled": view.prefilled,
            "client_name": (pending.client.name or pending.client.client_id) if pending else "",
            "scopes": [SCOPE_TEXT.get(s, s) for s in pending.scopes] if pending else [],
            "error": view.error,
            "done": view.done,
        },
        status=view.status,
        headers=view.headers,
    )
    pages.set_csrf_cookie(parts, response, cookie)
    return response
