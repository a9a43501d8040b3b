"""The sign-in of the broker's pages, for any page that needs a signed-in person: the
authorization endpoint (`/authorize`), the device verification page (`/device`), and any
page after them. A page names its `Continuation` (where its forms post, the parameters
they carry, whom the person signs in for); this module renders the login page for it and
handles the sign-in forms posted back, in three ways:

- **Sign in with ShotGrid** (App Session Launcher, `broker.signin.launcher`): the link
  `#shotgrid-sign-in` starts a request at the site; ShotGrid's approval page opens (a new
  tab via `static/signin.js`, a plain link on the next page without JavaScript) and the
  page continues by itself once approved (the script checks every
  `BROKER_SHOTGRID_SIGNIN_POLL_INTERVAL`; without it a Continue button). The page shows
  the code in the request's name beside "approve only that", since an approval link is
  worth a sign-in to whoever started it. A link rather than a second form, so the page
  carries its hidden fields once and has one submit button (clients that post every
  hidden input with the credentials must not post a parameter twice).
- **Legacy Login password**, and for two-factor accounts a second step asking for the
  code, with the first step carried sealed (`broker.signin.twofactor`).

Every form carries a CSRF token bound to the continuation; the script's checks are the
same forms, answered in JSON when they ask for it. Everything here but `render` and
`respond` is synchronous and runs inside the page's one hop to the worker threads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlencode

from authlib.oauth2.rfc6749 import InvalidGrantError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.components import Components
from broker.errors import TemporarilyUnavailableError, TooManyRequestsError
from broker.events import audit
from broker.grants.password import MESSAGES, TwoFactorNeeded, password_login
from broker.http import pages
from broker.http.middleware import note_outcome
from broker.http.oauth import client_ip
from broker.signin.launcher import Approved, Ended, Started, Waiting
from broker.signin.twofactor import (
    MalformedCode,
    StateExpired,
    TwoFactorStateError,
)
from broker.store import SessionRecord
from broker.tokens.secrets import sha256_b64
from broker.upstream import (
    AppSessionLauncherDisabled,
    InactiveUser,
    InvalidTwoFactorCode,
    LoginResult,
    SsoRequired,
    UnknownUser,
    UpstreamTokenRejected,
    UpstreamUnavailable,
)

Step = Literal["password", "code", "shotgrid"]

MSG_CSRF = "This sign-in form has expired or did not come from this site. Please sign in again."
MSG_MISSING = "Enter your ShotGrid username and password."
MSG_TOO_LONG = "That username or password is too long."
MSG_STORE = "Sign-in is unavailable right now because the token store is not reachable."
MSG_UNAVAILABLE = "ShotGrid is not reachable right now; nothing was changed. Try again shortly."
MSG_CODE_FORMAT = "Enter the 6-digit code from your authenticator app."
MSG_CODE_WRONG = "That code is not right, or was already used. Enter the current code."
MSG_CODE_RESTART = "This sign-in step has expired or was already used. Sign in again."
MSG_SHOTGRID_OFF = (
    "ShotGrid sign-in is not enabled on this site. Use your Legacy Login password instead."
)
MSG_WAITING = "Waiting for your approval in ShotGrid…"
MSG_NOT_YET = "Not approved yet. Approve the request in ShotGrid, then continue."
ENDINGS = {
    "denied": "The ShotGrid sign-in request was denied. Start again if that was a mistake.",
    "expired": "The ShotGrid sign-in request expired before it was approved. Start again.",
    "completed": "This sign-in was already completed, perhaps in another tab.",
    "unknown": "This sign-in request is not known here. Start again.",
    "refused": (
        "ShotGrid approved the request but refused the account (disabled, or no longer "
        "allowed to sign in). Ask your ShotGrid administrator."
    ),
}


@dataclass(frozen=True, slots=True)
class Continuation:
    """The page a sign-in belongs to, and where it goes on once the person is signed in."""

    action: str
    """Path the sign-in forms post to (the page's own path): `/authorize`, `/device`."""
    params: tuple[tuple[str, str], ...]
    """The page's parameters, carried by every form and bound into its CSRF token."""
    purpose: str
    """The CSRF purpose of the page's sign-in forms."""
    client_name: str
    """Whom the person signs in for ("to continue to ...")."""
    client_id: str | None = None
    form_targets: tuple[str, ...] = ()
    """Origins the page's forms may end up at (the CSP's form-action)."""

    @property
    def path(self) -> str:
        """The page again (GET): where "start again" goes, and where a local page
        continues after sign-in."""
        return f"{self.action}?{urlencode(self.params)}" if self.params else self.action


@dataclass(frozen=True, slots=True)
class BrowserRequest:
    """What a page's synchronous decision needs of the HTTP request, read on the loop."""

    params: Mapping[str, str]
    method: str
    session_cookie: str | None
    csrf_cookie: str | None
    ip: str | None
    user_agent: str | None = None
    wants_json: bool = False
    """The page's script asks (fetch with `Accept: application/json`), not a navigation."""


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A new broker session, and the SSO cookie value to set with the next response."""

    session: SessionRecord
    cookie: str


@dataclass(frozen=True, slots=True)
class Redirect:
    """Where the browser goes next (with a new session's cookie, if it just signed in)."""

    url: str
    signed_in: SignedIn | None = None


@dataclass(frozen=True, slots=True)
class SignInPage:
    """The login page in one of its steps."""

    continuation: Continuation
    step: Step = "password"
    username: str = ""
    error: str | None = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    shotgrid_offered: bool = False
    state: str | None = None
    """The sealed two-factor state (code step)."""
    launch: Started | None = None
    """The App Session Launcher request (ShotGrid step)."""
    notice: str | None = None
    refusal: str | None = None
    """The OAuth error code of a refused step, for the request's metrics (a refusal shown
    again with 200 still counts as the refusal it is)."""


@dataclass(frozen=True, slots=True)
class SignInStatus:
    """An answer to the page's script (JSON)."""

    status: str
    """started, pending, unavailable, denied, expired, completed, unknown, refused, error."""
    message: str | None = None
    http_status: int = 200
    retry_after: float | None = None
    launch: Started | None = None
    refusal: str | None = None


Outcome = Redirect | SignInPage | SignInStatus


# --- reading the request (event loop) ----------------------------------------------------------
async def read_browser_request(request: Request, parts: Components) -> BrowserRequest | Response:
    params = await pages.page_params(request, parts)
    if isinstance(params, Response):
        return params
    return BrowserRequest(
        params=params,
        method=request.method,
        session_cookie=request.cookies.get(pages.session_cookie_name(parts)),
        csrf_cookie=request.cookies.get(pages.csrf_cookie_name(parts)),
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
        wants_json=request.method == "POST"
        and "application/json" in request.headers.get("accept", ""),
    )


# --- the synchronous core ------------------------------------------------------------------------
def login_page(parts: Components, continuation: Continuation, username: str = "") -> SignInPage:
    """The login page's first step (asks ShotGrid, cached, whether to offer its sign-in)."""
    return SignInPage(continuation, username=username, shotgrid_offered=parts.launcher.offered())


def submit(
    parts: Components, seen: BrowserRequest, continuation: Continuation
) -> Outcome | SignedIn:
    """A sign-in form posted to the page: the step it names, after its CSRF check."""
    params = seen.params
    step = params.get("signin") or ("code" if "signin_state" in params else "password")
    if not pages.csrf_ok(
        parts, seen.csrf_cookie, params.get("csrf_token"), continuation.purpose, continuation.params
    ):
        audit("login_csrf", outcome="failure", client_id=continuation.client_id)
        username = (params.get("username") or "").strip()[:256]
        return _problem(parts, seen, continuation, MSG_CSRF, 403, username=username)
    binding = pages.browser_binding(
        seen.csrf_cookie or "", continuation.purpose, continuation.params
    )
    if step == "password":
        return _password(parts, seen, continuation, binding)
    if step == "code":
        return _code(parts, seen, continuation, binding)
    if step == "shotgrid":
        return _shotgrid_start(parts, seen, continuation, binding)
    if step == "shotgrid_check":
        return _shotgrid_check(parts, seen, continuation, binding)
    return _problem(parts, seen, continuation, "Unknown sign-in step.", 400)


SHOTGRID_LINK = ("signin", "shotgrid")
"""The query parameter of the login page's "Sign in with ShotGrid" link."""


def start_by_link(
    parts: Components, seen: BrowserRequest, continuation: Continuation
) -> SignInPage | SignInStatus:
    """The "Sign in with ShotGrid" link followed without the page's script (a GET): start
    the request and show the page that links to ShotGrid. Only a browser that holds the
    login page's CSRF cookie gets one (the request is bound to it); anyone else, a crawler
    say, gets the login page and starts nothing."""
    if not seen.csrf_cookie:
        return login_page(parts, continuation)
    binding = pages.browser_binding(seen.csrf_cookie, continuation.purpose, continuation.params)
    return _shotgrid_start(parts, seen, continuation, binding)


def wants_shotgrid_link(seen: BrowserRequest) -> bool:
    return seen.method == "GET" and seen.params.get(SHOTGRID_LINK[0]) == SHOTGRID_LINK[1]


def start_session(
    parts: Components, result: LoginResult, method: str, seen: BrowserRequest
) -> SignedIn:
    cookie = pages.new_session_cookie()
    session = parts.sessions.new_session(
        result.identity,
        cookie_hash=sha256_b64(cookie),
        auth_method=method,
        client_ip=seen.ip,
        user_agent=seen.user_agent,
    )
    parts.custody.keep(session, result.tokens)
    return SignedIn(session, cookie)


def _problem(
    parts: Components,
    seen: BrowserRequest,
    continuation: Continuation,
    message: str,
    status: int,
    *,
    username: str = "",
    json_status: str = "error",
    retry_after: int | None = None,
    refusal: str = "invalid_request",
) -> SignInPage | SignInStatus:
    """An error on the first step: the login page again, or the script's answer."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    if seen.wants_json:
        return SignInStatus(json_status, message, status, retry_after, refusal=refusal)
    return SignInPage(
        continuation,
        username=username,
        error=message,
        status=status,
        headers=headers,
        shotgrid_offered=parts.launcher.offered(),
        refusal=refusal,
    )


def _password(
    parts: Components, seen: BrowserRequest, continuation: Continuation, binding: str
) -> SignInPage | SignInStatus | SignedIn:
    username = (seen.params.get("username") or "").strip()
    password = seen.params.get("password") or ""
    if not username or not password:
        return _problem(parts, seen, continuation, MSG_MISSING, 400, username=username)
    if len(username) > 256 or len(password) > 1024:
        return _problem(parts, seen, continuation, MSG_TOO_LONG, 400)
    try:
        result = password_login(
            parts, username, password, client_id=continuation.client_id, ip=seen.ip
        )
    except TwoFactorNeeded:
        state = parts.two_factor.seal(username, password, binding)
        return SignInPage(continuation, step="code", username=username, state=state)
    except (TooManyRequestsError, TemporarilyUnavailableError) as err:
        # Throttled (429) or ShotGrid/store down (503): the form again, with the advice.
        retry = err.retry_after or 5
        return _problem(
            parts,
            seen,
            continuation,
            err.description,
            err.status_code,
            username=username,
            retry_after=retry,
            refusal=err.error,
        )
    except InvalidGrantError as err:
        return _problem(
            parts, seen, continuation, err.description, 200, username=username, refusal=err.error
        )
    finally:
        del password
    return start_session(parts, result, "password", seen)


def _code(
    parts: Components, seen: BrowserRequest, continuation: Continuation, binding: str
) -> SignInPage | SignInStatus | SignedIn:
    state = seen.params.get("signin_state") or ""
    two_factor = parts.two_factor

    def again(
        message: str, status: int, refusal: str, headers: Mapping[str, str] | None = None
    ) -> SignInPage:
        return SignInPage(
            continuation,
            step="code",
            username=two_factor.username(state, binding),
            error=message,
            status=status,
            headers=headers or {},
            state=state,
            refusal=refusal,
        )

    try:
        try:
            result = two_factor.verify(
                state,
                binding,
                seen.params.get("code") or "",
                ip=seen.ip,
                client_id=continuation.client_id,
            )
        except MalformedCode:
            return again(MSG_CODE_FORMAT, 400, "invalid_request")
        except InvalidTwoFactorCode:
            return again(MSG_CODE_WRONG, 200, "invalid_grant")
        except UpstreamUnavailable:
            return again(MSG_UNAVAILABLE, 503, "temporarily_unavailable", {"Retry-After": "5"})
    except StateExpired:
        return _problem(parts, seen, continuation, MSG_CODE_RESTART, 400)
    except TwoFactorStateError:
        return _problem(parts, seen, continuation, MSG_CODE_RESTART, 400)
    except TooManyRequestsError as err:
        return _problem(
            parts, seen, continuation, err.description, 429, retry_after=err.retry_after
        )
    except (InactiveUser, SsoRequired, UnknownUser, UpstreamTokenRejected) as exc:
        message = MESSAGES.get(type(exc), ENDINGS["refused"])
        return _problem(parts, seen, continuation, message, 200, refusal="invalid_grant")
    return start_session(parts, result, "two_factor", seen)


def _shotgrid_start(
    parts: Components, seen: BrowserRequest, continuation: Continuation, binding: str
) -> SignInPage | SignInStatus:
    try:
        started = parts.launcher.start(binding)
    except AppSessionLauncherDisabled:
        parts.launcher.forget_site_info()
        return _problem(parts, seen, continuation, MSG_SHOTGRID_OFF, 400)
    except UpstreamUnavailable:
        return _problem(
            parts,
            seen,
            continuation,
            MSG_UNAVAILABLE,
            503,
            json_status="unavailable",
            retry_after=5,
            refusal="temporarily_unavailable",
        )
    audit("shotgrid_signin_started", client_id=continuation.client_id, ip=seen.ip)
    if seen.wants_json:
        return SignInStatus("started", MSG_WAITING, launch=started)
    return SignInPage(continuation, step="shotgrid", launch=started, notice=MSG_WAITING)


def _shotgrid_check(
    parts: Components, seen: BrowserRequest, continuation: Continuation, binding: str
) -> SignInPage | SignInStatus | SignedIn:
    handle = seen.params.get("signin_handle") or ""
    launcher = parts.launcher

    def waiting(
        message: str, status: int = 200, retry: float | None = None
    ) -> SignInPage | SignInStatus:
        state = "pending" if status == 200 else "unavailable"
        refusal = None if status == 200 else "temporarily_unavailable"
        if seen.wants_json:
            return SignInStatus(state, message, status, retry, refusal=refusal)
        headers = {"Retry-After": str(round(retry or 5))} if status != 200 else {}
        return SignInPage(
            continuation,
            step="shotgrid",
            launch=launcher.view(handle, binding),
            notice=message if status == 200 else None,
            error=message if status != 200 else None,
            status=status,
            headers=headers,
            refusal=refusal,
        )

    try:
        check = launcher.check(handle, binding)
    except UpstreamUnavailable:
        return waiting(MSG_UNAVAILABLE, 503, 5.0)
    if isinstance(check, Waiting):
        return waiting(MSG_WAITING if seen.wants_json else MSG_NOT_YET, retry=check.retry_after)
    if isinstance(check, Ended):
        return _ended(parts, seen, continuation, check.reason)
    assert isinstance(check, Approved)
    if not launcher.complete(handle):
        return _ended(parts, seen, continuation, "completed")
    identity = check.result.identity
    audit(
        "login",
        user_id=identity.user_id,
        login=identity.login,
        client_id=continuation.client_id,
        ip=seen.ip,
        method="shotgrid",
    )
    return start_session(parts, check.result, "shotgrid", seen)


def _ended(
    parts: Components, seen: BrowserRequest, continuation: Continuation, reason: str
) -> SignInPage | SignInStatus:
    status = 400 if reason in ("completed", "unknown") else 200
    refusal = {"denied": "access_denied", "expired": "invalid_grant", "refused": "invalid_grant"}
    return _problem(
        parts,
        seen,
        continuation,
        ENDINGS[reason],
        status,
        json_status=reason,
        refusal=refusal.get(reason, "invalid_request"),
    )


# --- rendering (event loop) ----------------------------------------------------------------------
def render(request: Request, parts: Components, page: SignInPage) -> Response:
    """The login page: its step, a CSRF token bound to the continuation, and the script
    (CSP `script-src 'self'`) only where ShotGrid sign-in is offered or under way."""
    continuation = page.continuation
    cookie = pages.csrf_cookie_value(parts, request)
    token = pages.csrf_token(parts, cookie, continuation.purpose, continuation.params)
    scripts = page.shotgrid_offered or page.step == "shotgrid"
    poll_ms = int(parts.settings.shotgrid_signin_poll_interval * 1000)
    shotgrid_href = f"{continuation.action}?{urlencode([*continuation.params, SHOTGRID_LINK])}"
    response = pages.page(
        parts,
        "login.html",
        {
            "client_name": continuation.client_name,
            "action": continuation.action,
            "hidden": continuation.params,
            "restart": continuation.path,
            "csrf_token": token,
            "step": page.step,
            "username": page.username,
            "error": page.error,
            "notice": page.notice,
            "state": page.state,
            "launch": page.launch,
            "shotgrid_offered": page.shotgrid_offered,
            "scripts": scripts,
            "poll_ms": poll_ms,
            "shotgrid_href": shotgrid_href,
        },
        status=page.status,
        form_targets=continuation.form_targets,
        headers=page.headers,
        scripts=scripts,
    )
    pages.set_csrf_cookie(parts, response, cookie)
    return response


def render_status(
    parts: Components, status: SignInStatus, *, redirect: Redirect | None = None
) -> Response:
    body: dict[str, Any] = {"status": status.status}
    if status.message:
        body["message"] = status.message
    if status.retry_after is not None:
        body["retry_after"] = round(status.retry_after, 3)
    if status.launch is not None:
        body.update(
            app_name=status.launch.app_name, url=status.launch.url, handle=status.launch.handle
        )
    if redirect is not None:
        body["redirect"] = redirect.url
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if status.http_status == 503:
        headers["Retry-After"] = str(round(status.retry_after or 5))
    response = JSONResponse(body, status_code=status.http_status, headers=headers)
    if redirect is not None and redirect.signed_in is not None:
        signed = redirect.signed_in
        pages.set_session_cookie(parts, response, signed.cookie, signed.session)
    return response


def respond(
    request: Request, parts: Components, seen: BrowserRequest, outcome: Outcome
) -> Response:
    """Any outcome of a page's sign-in as the HTTP answer: a redirect (in JSON for the
    page's script, with the new session's cookie either way), the login page, or JSON."""
    if isinstance(outcome, SignInPage | SignInStatus) and outcome.refusal is not None:
        note_outcome(outcome.refusal)
    if isinstance(outcome, SignInPage):
        return render(request, parts, outcome)
    if isinstance(outcome, SignInStatus):
        return render_status(parts, outcome)
    if seen.wants_json:
        return render_status(parts, SignInStatus("approved"), redirect=outcome)
    response = pages.redirect(outcome.url)
    if outcome.signed_in is not None:
        signed = outcome.signed_in
        pages.set_session_cookie(parts, response, signed.cookie, signed.session)
    return response


def signin_error_page(parts: Components, seen: BrowserRequest, description: str) -> Response:
    """The store was unreachable: for the script, JSON; for a navigation, the error page."""
    note_outcome("temporarily_unavailable")
    if seen.wants_json:
        return render_status(parts, SignInStatus("unavailable", description, 503, 5))
    return pages.error_page(parts, "temporarily_unavailable", description, 503)


__all__ = [
    "MSG_STORE",
    "BrowserRequest",
    "Continuation",
    "Outcome",
    "Redirect",
    "SignInPage",
    "SignInStatus",
    "SignedIn",
    "login_page",
    "read_browser_request",
    "render",
    "respond",
    "start_by_link",
    "start_session",
    "submit",
    "wants_shotgrid_link",
]
