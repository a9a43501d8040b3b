"""`GET|POST /logout`: OpenID Connect RP-Initiated Logout 1.0 (the `end_session_endpoint`).

When a valid `id_token_hint` (an ID token we signed; expired ones are accepted, §2) names
the browser's own session (its session cookie), that session ends at once: it is revoked
with every refresh family under it, so the access tokens of those families go inactive
too. In every other case (no hint, no session cookie, a hint for another session) the
user is asked to confirm on a page whose form carries a CSRF token (§2: the OP asks when
the hint is not for the current session), and confirming ends only the browser's own
session. An ID token alone never ends a session: it is not a secret (it sits in browser
history, logs and the RP's storage, and stays verifiable long after it expires), so
presenting one proves nothing about who is asking. `post_logout_redirect_uri` must be
registered for the client (loopback URIs: any port, RFC 8252 §7.3); an unregistered one
is an error page, never a redirect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from broker.components import Components
from broker.endpoints.authorization import with_query
from broker.events import audit
from broker.http import pages
from broker.http.oauth import client_ip
from broker.http.threads import components, run_sync
from broker.redirects import redirect_uri_allowed
from broker.store import ClientRecord, StoreUnavailable
from broker.tokens.claims import epoch, issued_in_the_past

CSRF_PURPOSE = "logout"


class LogoutError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True, slots=True)
class LogoutRequest:
    client: ClientRecord | None
    hint: dict[str, Any] | None
    redirect_uri: str | None
    state: str | None

    @property
    def hidden(self) -> tuple[tuple[str, str], ...]:
        """What the confirmation form carries through (only validated values)."""
        pairs = [
            ("client_id", self.client.client_id if self.client else None),
            ("post_logout_redirect_uri", self.redirect_uri),
            ("state", self.state),
        ]
        return tuple((k, v) for k, v in pairs if v)


@dataclass(frozen=True, slots=True)
class Decision:
    request: LogoutRequest
    done: bool
    """True: the browser's session ended (or it had none and confirmed); False: ask."""


def _verify_hint(parts: Components, hint: str) -> dict[str, Any] | None:
    try:
        claims = parts.keys.verify(hint, use="sig", typ="JWT")
    except ValueError:
        return None
    if claims.get("iss") != parts.issuer or not isinstance(claims.get("aud"), str):
        return None
    if not issued_in_the_past(claims, epoch(parts.now())):
        return None
    return claims


def resolve(parts: Components, params: dict[str, str]) -> LogoutRequest:
    """Validate the logout request (synchronous: key and store reads)."""
    store = parts.store
    hint_text = params.get("id_token_hint")
    hint = _verify_hint(parts, hint_text) if hint_text else None
    client_id = params.get("client_id") or None
    if hint is not None:
        if client_id is not None and client_id != hint["aud"]:
            raise LogoutError("invalid_request", "'client_id' does not match the ID token.")
        client_id = hint["aud"]
    client = store.get_client(client_id) if client_id and len(client_id) <= 200 else None
    if client_id is not None and client is None:
        raise LogoutError("invalid_client", "Unknown client.")
    redirect_uri = params.get("post_logout_redirect_uri") or None
    if redirect_uri is not None:
        if client is None:
            raise LogoutError(
                "invalid_request",
                "'post_logout_redirect_uri' needs 'client_id' or 'id_token_hint'.",
            )
        if not redirect_uri_allowed(redirect_uri, client.post_logout_redirect_uris):
            raise LogoutError(
                "invalid_request",
                "The 'post_logout_redirect_uri' is not registered for this client.",
            )
    state = params.get("state") or None
    if state is not None and len(state) > 1024:
        raise LogoutError("invalid_request", "'state' is too long.")
    return LogoutRequest(client, hint, redirect_uri, state)


def end_session(parts: Components, sid: str, why: str) -> None:
    if parts.sessions.end_session(sid, "logout"):
        parts.custody.forget(sid)
        audit("logout", sid=sid, reason=why)


def decide(
    parts: Components,
    params: dict[str, str],
    method: str,
    session_cookie: str | None,
    csrf_cookie: str | None,
) -> Decision:
    """The logout request, synchronously (the request's one hop)."""
    lreq = resolve(parts, params)
    session = pages.read_session(parts, session_cookie)
    if lreq.hint is not None and session is not None and lreq.hint.get("sid") == session.sid:
        end_session(parts, session.sid, "id_token_hint")
        return Decision(lreq, True)
    confirmed = method == "POST" and params.get("confirm") == "yes"
    if confirmed and pages.csrf_ok(
        parts, csrf_cookie, params.get("csrf_token"), CSRF_PURPOSE, lreq.hidden
    ):
        if session is not None:
            end_session(parts, session.sid, "confirmed")
        return Decision(lreq, True)
    return Decision(lreq, False)


def _done(parts: Components, lreq: LogoutRequest) -> Response:
    if lreq.redirect_uri:
        response: Response = pages.redirect(with_query(lreq.redirect_uri, {"state": lreq.state}))
    else:
        response = pages.page(parts, "logged_out.html", {})
    pages.clear_session_cookie(parts, response)
    return response


async def logout(request: Request) -> Response:
    parts = components(request)
    params = await pages.page_params(request, parts)
    if isinstance(params, Response):
        return params
    try:
        decision = await run_sync(
            request,
            decide,
            parts,
            params,
            request.method,
            request.cookies.get(pages.session_cookie_name(parts)),
            request.cookies.get(pages.csrf_cookie_name(parts)),
        )
    except LogoutError as err:
        return pages.error_page(parts, err.error, err.description)
    except StoreUnavailable:
        return pages.error_page(
            parts, "temporarily_unavailable", "The token store is not reachable.", 503
        )
    lreq = decision.request
    if decision.done:
        return _done(parts, lreq)
    cookie = pages.csrf_cookie_value(parts, request)
    token = pages.csrf_token(parts, cookie, CSRF_PURPOSE, lreq.hidden)
    response = pages.page(
        parts,
        "logout.html",
        {
            "client_name": (lreq.client.name or lreq.client.client_id) if lreq.client else None,
            "hidden": lreq.hidden,
            "csrf_token": token,
        },
        form_targets=pages.form_targets_for(lreq.redirect_uri),
    )
    pages.set_csrf_cookie(parts, response, cookie)
    audit("logout_confirm_shown", ip=client_ip(request))
    return response
