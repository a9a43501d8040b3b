"""The App Session Launcher: password-less sign-in approved by a person in a browser.

Research §6 and §8.5 (toolkit's `app_session_launcher.py` and a live probe):

1. `POST /internal_api/app_session_request` (form or JSON `appName`, `machineId`; no auth)
   answers `{"sessionRequestId", "url"}`; 400 names the missing params; 403 when the site
   has the launcher off.
2. A person opens `url` and approves.
3. The client polls `PUT /internal_api/app_session_request/<id>`: `{"approved": false}`,
   then once `{"approved": true, "sessionToken", "userLogin"}`, then 404. Denied, expired
   (~300 s) and unknown requests are the same 404. Errors are `{"message": ...}`.

On a real site `url` first sends the browser through the site's sign-in (Autodesk Identity,
SSO, or a password), then shows an approve button. The emulator's page does both in one
form: login, password and, for two-factor users, their code. It stands in for every IdP,
so SSO-only users approve with their directory password too.
"""

from __future__ import annotations

import html
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from shotgrid_emulator.directory import HumanUser
from shotgrid_emulator.site import Site, sg_json

REQUEST_TTL_SECONDS = 300
"""A request nobody approves is forgotten after about five minutes (research §6: 404
after 305 s on a live site)."""

MAX_CODE_ATTEMPTS = 5
"""Wrong two-factor codes allowed after one good password, before the password is asked
for again (ASSUMED: keeps the 6-digit code from being guessed through one page)."""

_DISABLED = "The App Session Launcher is not enabled on this site"  # ASSUMED text
_NOT_FOUND = {"message": "Not Found"}


class NotPending(LookupError):
    """The request is unknown, expired, denied or already handed out."""


@dataclass(slots=True)
class AppSessionRequest:
    id: str
    app_name: str
    machine_id: str
    url: str
    created_at: datetime
    login: str | None = None
    """Set once approved; the session token waits for the next poll."""
    session_token: str | None = None
    two_factor_steps: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Opaque step token -> (login whose password was right, wrong codes so far)."""
    poll_times: list[float] = field(default_factory=list)
    """time.monotonic() of each poll, so tests can check a client's polling pace."""

    @property
    def approved(self) -> bool:
        return self.session_token is not None

    def snapshot(self) -> dict[str, Any]:
        return {
            "sessionRequestId": self.id,
            "appName": self.app_name,
            "machineId": self.machine_id,
            "url": self.url,
            "approved": self.approved,
            "polls": len(self.poll_times),
            "poll_times": list(self.poll_times),
        }


class AppSessionLauncher:
    """The site's open requests. Thread-safe: test hooks approve from the test thread."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self._lock = threading.Lock()
        self._requests: dict[str, AppSessionRequest] = {}

    def create(self, app_name: str, machine_id: str, base_url: str) -> AppSessionRequest:
        request_id = secrets.token_hex(16)  # a bearer capability for the poll: unguessable
        url = f"{base_url}/app_session_request/{request_id}?sticky_id={request_id}"
        request = AppSessionRequest(request_id, app_name, machine_id, url, self.site.clock())
        with self._lock:
            self._purge()
            self._requests[request_id] = request
        return request

    def poll(self, request_id: str) -> dict[str, Any]:
        """One poll: `{"approved": false}`, or the token once; NotPending otherwise."""
        with self._lock:
            request = self._live(request_id)
            request.poll_times.append(time.monotonic())
            if request.session_token is None or request.login is None:
                return {"approved": False}
            del self._requests[request_id]  # handed out once (research §6)
            return {
                "approved": True,
                "sessionToken": request.session_token,
                "userLogin": request.login,
            }

    def get(self, request_id: str) -> AppSessionRequest:
        """A request still waiting for a person's decision."""
        with self._lock:
            request = self._live(request_id)
            if request.approved:
                raise NotPending(request_id)
            return request

    def approve(self, request_id: str, user: HumanUser) -> None:
        with self._lock:
            request = self._live(request_id)
            if request.approved:
                raise NotPending(request_id)
            request.login = user.login
            request.session_token = self.site.create_session(user)
            request.two_factor_steps.clear()

    def deny(self, request_id: str) -> None:
        with self._lock:
            request = self._live(request_id)
            if request.approved:
                raise NotPending(request_id)
            del self._requests[request_id]

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            self._purge()
            return [r.snapshot() for r in self._requests.values()]

    def start_two_factor(self, request_id: str, login: str) -> str:
        """Remember that `login`'s password was right for this request; the token the
        form carries so the code step need not ask for the password again."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._live(request_id).two_factor_steps[token] = (login, 0)
        return token

    def two_factor_login(self, request_id: str, token: str) -> str | None:
        with self._lock:
            step = self._live(request_id).two_factor_steps.get(token)
            return step[0] if step else None

    def wrong_code(self, request_id: str, token: str) -> bool:
        """Count a wrong code; False once the step is used up (the password is asked again)."""
        with self._lock:
            steps = self._live(request_id).two_factor_steps
            login, wrong = steps.get(token, ("", MAX_CODE_ATTEMPTS))
            if wrong + 1 >= MAX_CODE_ATTEMPTS:
                steps.pop(token, None)
                return False
            steps[token] = (login, wrong + 1)
            return True

    def _live(self, request_id: str) -> AppSessionRequest:
        self._purge()
        request = self._requests.get(request_id)
        if request is None:
            raise NotPending(request_id)
        return request

    def _purge(self) -> None:
        now = self.site.clock()
        for rid, request in list(self._requests.items()):
            if (now - request.created_at).total_seconds() >= REQUEST_TTL_SECONDS:
                del self._requests[rid]


# ---- HTTP -------------------------------------------------------------------------------


def _message(text: str, status: int) -> Response:
    return sg_json({"message": text}, status)


async def _params(request: Request) -> dict[str, str]:
    """Form or JSON body, as a live site takes both (research §8.5)."""
    body = await request.body()
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media == "application/json":
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): str(v) for k, v in data.items() if isinstance(v, str | int)}
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


def _create(asl: AppSessionLauncher) -> Callable[[Request], Any]:
    async def create(request: Request) -> Response:
        params = await _params(request)
        injected = await asl.site.enter(request, "asl", "asl:create")
        if injected is not None:
            return injected
        if not asl.site.directory.app_session_launcher_enabled:
            return _message(_DISABLED, 403)
        missing = [name for name in ("appName", "machineId") if not params.get(name)]
        if missing:
            return _message(f"Missing params: {', '.join(missing)}", 400)
        base = str(request.base_url).rstrip("/")
        created = asl.create(params["appName"], params["machineId"], base)
        return sg_json({"sessionRequestId": created.id, "url": created.url})

    return create


def _poll(asl: AppSessionLauncher) -> Callable[[Request], Any]:
    async def poll(request: Request) -> Response:
        injected = await asl.site.enter(request, "asl", "asl:poll")
        if injected is not None:
            return injected
        try:
            return sg_json(asl.poll(request.path_params["request_id"]))
        except NotPending:
            return sg_json(_NOT_FOUND, 404)

    return poll


# ---- the approval page ------------------------------------------------------------------

_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Approve sign-in - {site}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: sans-serif; max-width: 32rem; margin: 3rem auto; padding: 0 1rem; }}
#app-name {{ font-size: 2rem; font-weight: bold; letter-spacing: .05em; margin: .5rem 0; }}
label {{ display: block; margin: .75rem 0; }} input {{ display: block; width: 100%; }}
.error {{ color: #b00020; }}
</style></head>
<body><main>
<h1>{heading}</h1>
{body}
</main></body></html>
"""


def _page(site: Site, heading: str, body: str, status: int = 200) -> HTMLResponse:
    text = _PAGE.format(site=html.escape(site.directory.site_name), heading=heading, body=body)
    # The page holds a form for credentials: keep it out of caches and frames.
    headers = {"Cache-Control": "no-store", "X-Frame-Options": "DENY"}
    return HTMLResponse(text, status_code=status, headers=headers)


def _form(
    site: Site,
    request: AppSessionRequest,
    *,
    username: str = "",
    error: str = "",
    step_token: str = "",
    status: int = 200,
) -> HTMLResponse:
    esc = html.escape
    parts = [
        f"<p>An application asks to sign in to <b>{esc(site.directory.site_name)}</b> "
        "as you. It calls itself:</p>",
        f'<p id="app-name">{esc(request.app_name)}</p>',
        "<p>Approve only if this is exactly what the application shows you.</p>",
    ]
    if error:
        parts.append(f'<p class="error" role="alert">{esc(error)}</p>')
    parts.append(f'<form method="post" action="/app_session_request/{esc(request.id)}">')
    parts.append(
        f'<label>Login <input name="username" value="{esc(username)}" '
        'autocomplete="username"></label>'
    )
    # On the code step the password was already right: it may be left empty (or typed
    # again), and it is never echoed back.
    hint = " (checked: leave empty)" if step_token else ""
    parts.append(
        f'<label>Password{hint} <input type="password" name="password" '
        'autocomplete="current-password"></label>'
    )
    if step_token:
        parts.append(
            '<label>Two-factor code <input name="code" inputmode="numeric" '
            'autocomplete="one-time-code" autofocus></label>'
        )
        parts.append(f'<input type="hidden" name="step" value="{esc(step_token)}">')
    parts.append('<button type="submit" name="action" value="approve">Approve</button>')
    parts.append('<button type="submit" name="action" value="deny">Deny</button>')
    parts.append("</form>")
    return _page(site, "Approve sign-in", "\n".join(parts), status)


def _gone(site: Site) -> HTMLResponse:
    return _page(
        site,
        "Request not found",
        "<p>This sign-in request is unknown, expired or already answered. "
        "Start the sign-in again from the application.</p>",
        404,
    )


def _approval_page(asl: AppSessionLauncher) -> Callable[[Request], Any]:
    site = asl.site

    async def page(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        injected = await site.enter(request, "asl", "asl:page")
        if injected is not None:
            return injected
        request_id = request.path_params["request_id"]
        try:
            pending = asl.get(request_id)
            if request.method == "GET":
                return _form(site, pending)
            return _decide(asl, pending, form)
        except NotPending:
            return _gone(site)

    return page


def _decide(asl: AppSessionLauncher, request: AppSessionRequest, form: dict[str, str]) -> Response:
    site = asl.site
    action = form.get("action", "")
    if action == "deny":
        # ASSUMED: denying grants nothing, so it asks for no credentials.
        asl.deny(request.id)
        return _page(site, "Sign-in denied", "<p>The application was not signed in.</p>")
    if action != "approve":
        return _form(site, request, error="Choose Approve or Deny.", status=400)
    username = form.get("username", "").strip()
    password = form.get("password", "")
    code = form.get("code", "").strip()
    step = form.get("step", "")
    user: HumanUser | None
    if step and asl.two_factor_login(request.id, step) == username and not password:
        user = site.directory.user(username)  # password checked on the previous step
    else:
        step = ""
        if not username or not password:
            return _form(
                site,
                request,
                username=username,
                error="Enter your login and password.",
                status=400,
            )
        user = site.directory.check_password(username, password)
    if user is None:
        return _form(site, request, username=username, error="Wrong login or password.", status=401)
    if not user.active:
        return _form(
            site, request, username=username, error="This account is disabled.", status=403
        )
    if user.two_factor:
        if not code:
            token = step or asl.start_two_factor(request.id, user.login)
            return _form(
                site,
                request,
                username=username,
                error="Enter the code from your authenticator app.",
                step_token=token,
            )
        if not site.check_totp(user, code):
            token = step or asl.start_two_factor(request.id, user.login)
            if step and not asl.wrong_code(request.id, step):
                return _form(
                    site,
                    request,
                    username=username,
                    error="Too many wrong codes. Enter your password again.",
                    status=401,
                )
            return _form(
                site,
                request,
                username=username,
                error="Wrong two-factor code.",
                step_token=token,
                status=401,
            )
    asl.approve(request.id, user)
    return _page(
        site,
        "Sign-in approved",
        f"<p>{html.escape(request.app_name)} is signed in as {html.escape(user.login)}. "
        "You can close this window.</p>",
    )


def routes(asl: AppSessionLauncher) -> list[BaseRoute]:
    return [
        Route("/internal_api/app_session_request", _create(asl), methods=["POST"]),
        Route("/internal_api/app_session_request/{request_id}", _poll(asl), methods=["PUT"]),
        Route("/app_session_request/{request_id}", _approval_page(asl), methods=["GET", "POST"]),
    ]
