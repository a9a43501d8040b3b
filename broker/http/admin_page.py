"""`/admin`: the admin page, for people whose ShotGrid permission group is one of
`BROKER_ADMIN_PERMISSION_GROUPS`. Server-rendered with the login page's templates, styles
and CSP; no script.

Signing in is the broker's own (`broker/http/signin.py`, with `/admin` as the
continuation): a browser without an SSO session gets the login page, one with a session
uses it. Every load then builds the `Admin` principal from the session
(`admin_actions.admin_from_session`: the permission group as ShotGrid said it within
`BROKER_UPSTREAM_RECHECK` seconds) inside `admin_actions.perform`, so the page has the
API's rate limits and `broker_admin_actions_total`, and runs the API's very functions
(`broker.admin_actions`), audited as `admin=user:<login>`.

Pages: `/admin` (find a person: `?login=`; their live sessions, with links to end one or
all and to unlock), `/admin/clients`, `/admin/keys`. A change never happens from a list:
each link opens a confirmation page (GET, nothing changes) whose form posts back to the
same path with a CSRF token bound to that action and target; the POST acts and redirects
(303) to the listing, which says what was done. Refusals are pages: 400 or 404 with the
message beside the search, 403 (not an administrator, or a form that is not this
browser's) with a way to sign out, 409, 429 and 503 with `Retry-After`; never a 5xx.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from broker import admin as registry
from broker import admin_actions as actions
from broker.admin_actions import (
    Admin,
    AdminRefusal,
    Forbidden,
    RateLimited,
    SessionView,
    Unavailable,
)
from broker.components import Components
from broker.grants import ADMIN_SCOPE
from broker.http import logout, pages, signin
from broker.http.signin import BrowserRequest, Continuation, Outcome, Redirect, SignedIn
from broker.http.threads import components, run_sync
from broker.store import ClientRecord, KeyRecord, SessionRecord, StoreError

HOME = "/admin"
SIGNIN_PURPOSE = "login:/admin"
CSRF_PURPOSE = "admin"
MSG_STORE = "The admin page is unavailable right now because the token store is not reachable."
MSG_CSRF = (
    "This form has expired or did not come from this page. Nothing was changed: go back, "
    "reload the page and try again."
)
DONE = {
    "session_end": "The session was ended: its refresh tokens no longer work.",
    "sessions_end_all": "Every live session of this person was ended.",
    "user_unlock": "The person's failed sign-ins were cleared: they may sign in again.",
    "keys_rotate": "The keys were rotated: the next key now signs new tokens.",
}
"""What a listing says after a change (`?done=`); fixed text, never the request's."""
METHOD_TEXT = {
    "password": "Password",
    "two_factor": "Password and code",
    "shotgrid": "ShotGrid sign-in",
    "device": "Device",
}
MAX_AGENT_SHOWN = 80


class CsrfFailed(AdminRefusal):
    status = 403
    problem = "csrf"
    title = "Form refused"
    outcome = "csrf"


# --- what a request becomes -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class View:
    """An admin page to render."""

    template: str
    context: Mapping[str, Any]
    session: SessionRecord
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    form: tuple[tuple[str, str], ...] | None = None
    """What the confirmation form's CSRF token is bound to: its action and target."""


@dataclass(frozen=True, slots=True)
class Done:
    """A change was made: to the listing (303), which says so."""

    url: str


@dataclass(frozen=True, slots=True)
class Problem:
    """A refusal before any session is known to be an administrator's (the store down)."""

    message: str
    status: int
    retry_after: int | None = None


Answer = View | Done | Problem | Outcome


# --- view models ------------------------------------------------------------------------------
def when(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def person_path(login: str, **extra: str) -> str:
    return f"{HOME}?{urlencode({'login': login, **extra})}"


def end_path(sid: str) -> str:
    return f"{HOME}/sessions/{quote(sid, safe='')}/end"


def end_all_path(login: str) -> str:
    return f"{HOME}/users/{quote(login, safe='')}/end-sessions"


def unlock_path(login: str) -> str:
    return f"{HOME}/users/{quote(login, safe='')}/unlock"


def rotate_path(_target: str = "") -> str:
    return f"{HOME}/keys/rotate"


def session_row(view: SessionView, admin: Admin) -> dict[str, Any]:
    s = view.session
    agent = s.user_agent or ""
    return {
        "sid": s.sid,
        "login": s.login,
        "name": s.name,
        "created": when(s.auth_time),
        "last_used": when(view.last_used_at),
        "expires": when(s.expires_at),
        "method": METHOD_TEXT.get(s.auth_method, s.auth_method),
        "ip": s.client_ip or "",
        "agent": agent if len(agent) <= MAX_AGENT_SHOWN else agent[:MAX_AGENT_SHOWN] + "…",
        "agent_full": agent,
        "clients": list(view.clients),
        "this_browser": s.sid == admin.sid,
        "end_href": end_path(s.sid),
    }


def client_row(record: ClientRecord) -> dict[str, Any]:
    return {
        "client_id": record.client_id,
        "name": record.name,
        "confidential": not record.public,
        "grant_types": [g.rsplit(":", 1)[-1] for g in record.grant_types],
        "redirect_uris": list(record.redirect_uris),
        "scopes": [s for s in record.scopes if s != ADMIN_SCOPE],
        "audiences": list(record.audiences),
        "admin": registry.is_admin_client(record),
        "may_introspect": record.may_introspect,
        "may_exchange_shotgrid": record.may_exchange_shotgrid,
    }


def key_row(record: KeyRecord) -> dict[str, Any]:
    return {
        "kid": record.kid,
        "alg": record.alg,
        "state": record.state.value,
        "created": when(record.created_at),
        "activated": when(record.activated_at),
        "retired": when(record.retired_at),
    }


# --- the pages (synchronous, inside the one hop) ----------------------------------------------
@dataclass(frozen=True, slots=True)
class Seen:
    """The request as a page reads it."""

    browser: BrowserRequest
    path: Mapping[str, str]

    @property
    def params(self) -> Mapping[str, str]:
        return self.browser.params


def _done_notice(seen: Seen) -> str | None:
    return DONE.get(seen.params.get("done") or "")


def home(parts: Components, admin: Admin, session: SessionRecord, seen: Seen) -> View:
    login = (seen.params.get("login") or "").strip()
    context: dict[str, Any] = {"login": login, "notice": _done_notice(seen), "rows": None}
    if login:
        views = actions.user_sessions(parts, admin, login)
        context.update(
            rows=[session_row(v, admin) for v in views],
            unlock_href=unlock_path(login),
            end_all_href=end_all_path(login),
        )
    return View("admin_home.html", context, session)


def clients(parts: Components, admin: Admin, session: SessionRecord, seen: Seen) -> View:
    rows = [client_row(c) for c in actions.list_clients(parts, admin)]
    return View("admin_clients.html", {"clients": rows}, session)


def keys(parts: Components, admin: Admin, session: SessionRecord, seen: Seen) -> View:
    records = actions.list_keys(parts, admin)
    context = {"keys": [key_row(k) for k in records], "notice": _done_notice(seen)}
    return View("admin_keys.html", context, session)


@dataclass(frozen=True, slots=True)
class Change:
    """A state-changing action of the page: its confirmation and its doing."""

    action: str
    """The admin action (`broker_admin_actions_total`'s label, the audit's `action`)."""
    target: Callable[[Seen], str]
    path: Callable[[str], str]
    """The page's path for a target: the confirmation's GET and its form's POST."""
    confirm: Callable[[Components, Admin, str], dict[str, Any]]
    """The confirmation page's context; raises NotFound for an unknown target."""
    run: Callable[[Components, Admin, str], str]
    """Does it; returns where the browser goes next."""


def _confirm_session_end(parts: Components, admin: Admin, sid: str) -> dict[str, Any]:
    row = session_row(actions.session_view(parts, admin, sid), admin)
    return {
        "title": f"End this session of {row['login']}?",
        "explain": (
            "Its refresh tokens stop working at once (invalid_grant) and its access tokens "
            "are refused at introspection and userinfo; services that validate offline "
            "accept them until they expire."
        ),
        "session": row,
        "button": "End session",
        "cancel": person_path(row["login"]),
    }


def _confirm_end_all(parts: Components, admin: Admin, login: str) -> dict[str, Any]:
    rows = [session_row(v, admin) for v in actions.user_sessions(parts, admin, login)]
    return {
        "title": f"End every session of {login}?",
        "explain": (
            f"{len(rows)} live session(s) end at once, on every device: for a lost or "
            "stolen computer. The person signs in again."
        ),
        "rows": rows,
        "button": "End all sessions" if rows else None,
        "nothing": None if rows else f"{login} has no live session: there is nothing to end.",
        "cancel": person_path(login),
    }


def _confirm_unlock(parts: Components, admin: Admin, login: str) -> dict[str, Any]:
    actions.require_user(parts, admin, login)
    return {
        "title": f"Unlock {login}?",
        "explain": (
            "Their failed sign-ins are forgotten, from every address, so their next sign-in "
            "is judged afresh. The addresses' own counts stay."
        ),
        "button": "Unlock",
        "cancel": person_path(login),
    }


def _confirm_rotate(parts: Components, admin: Admin, _target: str) -> dict[str, Any]:
    rows = [key_row(k) for k in actions.list_keys(parts, admin)]
    return {
        "title": "Rotate the signing keys now?",
        "explain": (
            "Each algorithm's next key starts signing and a new next key is published. Tokens "
            "signed before keep verifying until they expire. For a suspected leak; rotation "
            "also runs on its own schedule."
        ),
        "keys": [r for r in rows if r["state"] != "retired"],
        "button": "Rotate keys",
        "cancel": f"{HOME}/keys",
    }


def _end_session(parts: Components, admin: Admin, sid: str) -> str:
    ended = actions.end_session(parts, admin, sid)
    return person_path(ended.login, done="session_end")


def _end_all(parts: Components, admin: Admin, login: str) -> str:
    actions.end_user_sessions(parts, admin, login)
    return person_path(login, done="sessions_end_all")


def _unlock(parts: Components, admin: Admin, login: str) -> str:
    actions.unlock_user(parts, admin, login)
    return person_path(login, done="user_unlock")


def _rotate(parts: Components, admin: Admin, _target: str) -> str:
    actions.rotate_keys(parts, admin)
    return f"{HOME}/keys?done=keys_rotate"


CHANGES = {
    change.action: change
    for change in (
        Change(
            "session_end", lambda s: s.path["sid"], end_path, _confirm_session_end, _end_session
        ),
        Change(
            "sessions_end_all",
            lambda s: s.path["login"],
            end_all_path,
            _confirm_end_all,
            _end_all,
        ),
        Change("user_unlock", lambda s: s.path["login"], unlock_path, _confirm_unlock, _unlock),
        Change("keys_rotate", lambda s: "", rotate_path, _confirm_rotate, _rotate),
    )
}


def changing(what: Change) -> Page:
    """The page of a change: GET confirms (nothing changes), POST with the confirmation
    form's CSRF token does it."""

    def page(parts: Components, admin: Admin, session: SessionRecord, seen: Seen) -> View | Done:
        target = what.target(seen)
        binding = (("action", what.action), ("target", target))
        if seen.browser.method == "POST":
            token = seen.params.get("csrf_token")
            if not pages.csrf_ok(parts, seen.browser.csrf_cookie, token, CSRF_PURPOSE, binding):
                raise CsrfFailed(MSG_CSRF)
            return Done(what.run(parts, admin, target))
        context = {**what.confirm(parts, admin, target), "form_path": what.path(target)}
        return View("admin_confirm.html", context, session, form=binding)

    return page


# --- one request, start to end ----------------------------------------------------------------
Page = Callable[[Components, Admin, SessionRecord, Seen], View | Done]


def continuation_for(params: Mapping[str, str]) -> Continuation:
    """Sign-in comes back to `/admin` (with the person searched for, if any)."""
    login = (params.get("login") or "").strip()[: actions.MAX_LOGIN]
    return Continuation(
        action=HOME,
        params=(("login", login),) if login else (),
        purpose=SIGNIN_PURPOSE,
        client_name="Token broker administration",
    )


def metric_action(action: str, seen: Seen) -> str:
    """The label a load counts under: the API's action for the same read or change; a
    confirmation page, which changes nothing, as `<action>_confirm`."""
    if action == "page_home":
        return "sessions_list" if (seen.params.get("login") or "").strip() else action
    if action in CHANGES and seen.browser.method != "POST":
        return f"{action}_confirm"
    return action


def serve(parts: Components, seen: Seen, action: str, page: Page) -> Answer:
    """The page's one hop: sign in (the forms posted to `/admin`), or as the session's
    administrator, the page or the change; a refusal is a page."""
    browser = seen.browser
    signing_in = action == "page_home"
    continuation = continuation_for(browser.params if signing_in else {})
    if signing_in and browser.method == "POST":
        outcome = signin.submit(parts, browser, continuation)
        if isinstance(outcome, SignedIn):
            return Redirect(parts.issuer + continuation.path, outcome)
        return outcome
    session = pages.read_session(parts, browser.session_cookie)
    if session is None:
        if signing_in and signin.wants_shotgrid_link(browser):
            return signin.start_by_link(parts, browser, continuation)
        return signin.login_page(parts, continuation)
    try:
        return actions.perform(
            parts,
            metric_action(action, seen),
            lambda: actions.admin_from_session(parts, session, browser.ip),
            lambda admin: page(parts, admin, session, seen),
            ip=browser.ip,
        )
    except AdminRefusal as refusal:
        return refused(session, refusal, seen if signing_in else None)


def refused(session: SessionRecord, refusal: AdminRefusal, search: Seen | None) -> View:
    """A refusal as a page: a search's bad or unknown login beside the search box, the
    rest on the error page (which has a way home and the sign-out)."""
    if search is not None and refusal.status in (400, 404):
        login = (search.params.get("login") or "").strip()
        search_context = {"login": login, "rows": None, "error": refusal.detail}
        return View("admin_home.html", search_context, session, refusal.status)
    headers: dict[str, str] = {}
    if isinstance(refusal, RateLimited | Unavailable):
        headers["Retry-After"] = str(refusal.retry_after)
    context: dict[str, Any] = {
        "title": refusal.title,
        "message": refusal.detail,
        "status": refusal.status,
        "admin": not isinstance(refusal, Forbidden),
    }
    return View("admin_error.html", context, session, refusal.status, headers)


# --- HTTP (event loop) ------------------------------------------------------------------------
def render(request: Request, parts: Components, view: View) -> Response:
    """An admin page: every one carries the sign-out form (`/logout`'s own, with its CSRF
    token), a confirmation page also its own form's token."""
    cookie = pages.csrf_cookie_value(parts, request)
    context = dict(view.context)
    if view.form is not None:
        context["csrf_token"] = pages.csrf_token(parts, cookie, CSRF_PURPOSE, view.form)
    response = pages.page(
        parts,
        view.template,
        {
            **context,
            "admin_name": view.session.name or view.session.login,
            "admin_login": view.session.login,
            "logout_token": pages.csrf_token(parts, cookie, logout.CSRF_PURPOSE, ()),
        },
        status=view.status,
        headers=view.headers,
    )
    pages.set_csrf_cookie(parts, response, cookie)
    return response


def problem_page(parts: Components, problem: Problem) -> Response:
    headers = {"Retry-After": str(problem.retry_after)} if problem.retry_after else {}
    return pages.page(
        parts,
        "admin_unavailable.html",
        {"message": problem.message, "status": problem.status},
        status=problem.status,
        headers=headers,
    )


def _route(path: str, action: str, page: Page, methods: list[str]) -> Route:
    async def endpoint(request: Request) -> Response:
        parts = components(request)
        browser = await signin.read_browser_request(request, parts)
        if isinstance(browser, Response):
            return browser
        seen = Seen(browser, dict(request.path_params))
        try:
            answer = await run_sync(request, serve, parts, seen, action, page)
        except StoreError:
            if browser.wants_json:
                return signin.signin_error_page(parts, browser, signin.MSG_STORE)
            answer = Problem(MSG_STORE, 503, 5)
        if isinstance(answer, View):
            return render(request, parts, answer)
        if isinstance(answer, Done):
            return RedirectResponse(
                parts.issuer + answer.url,
                status_code=303,
                headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
            )
        if isinstance(answer, Problem):
            return problem_page(parts, answer)
        return signin.respond(request, parts, browser, answer)

    endpoint.__name__ = f"admin_page_{action}"
    return Route(path, endpoint, methods=methods, name=f"admin_page_{action}")


admin_page_routes = [
    _route(HOME, "page_home", home, ["GET", "POST"]),
    _route(f"{HOME}/clients", "clients_list", clients, ["GET"]),
    _route(f"{HOME}/keys", "keys_list", keys, ["GET"]),
    *(
        _route(f"{HOME}{path}", name, changing(CHANGES[name]), ["GET", "POST"])
        for name, path in (
            ("session_end", "/sessions/{sid}/end"),
            ("sessions_end_all", "/users/{login}/end-sessions"),
            ("user_unlock", "/users/{login}/unlock"),
            ("keys_rotate", "/keys/rotate"),
        )
    ),
]
