"""HTML pages the broker shows a person (login, errors, logout) and what they share:
the Jinja2 environment, security headers, cookies and CSRF tokens.

CSRF (OWASP double-submit, signed): a random value in an HttpOnly cookie, and in the
form an HMAC over that value, an expiry and the exact request the form belongs to, keyed
from the broker's secret key so every process can check a form another rendered.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from authlib.oauth2 import OAuth2Error
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from broker.components import Components
from broker.http.oauth import BodyTooLarge, parse_pairs, read_form, reject_duplicates
from broker.redirects import origin_of, private_use_scheme
from broker.settings import decode_key
from broker.store import SessionRecord
from broker.tokens.secrets import sha256_b64

HERE = Path(__file__).parent
TEMPLATES = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
STATIC = HERE / "static"


def secure(parts: Components) -> bool:
    return parts.issuer.startswith("https://")


def session_cookie_name(parts: Components) -> str:
    """`__Host-` whenever the issuer is https (the prefix needs Secure, Path=/, no Domain)."""
    return "__Host-broker_session" if secure(parts) else "broker_session"


def csrf_cookie_name(parts: Components) -> str:
    return "__Host-broker_csrf" if secure(parts) else "broker_csrf"


def security_headers(form_targets: Iterable[str] = (), *, scripts: bool = False) -> dict[str, str]:
    """Headers of every page. `form_targets` are origins a form on the page may end up at:
    Chromium applies `form-action` to the redirects after a submit too, so the client's
    redirect origin must be listed for the login form to complete. `scripts`: the page
    loads the broker's own static script, which may call back to the broker (no inline
    script, no other origin), as the login page does when it offers ShotGrid sign-in."""
    targets = " ".join(["'self'", *sorted(set(form_targets))])
    script = "script-src 'self'; connect-src 'self'; " if scripts else ""
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; {script}style-src 'self'; img-src 'self' https: data:; "
            f"form-action {targets}; frame-ancestors 'none'; base-uri 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
        "Pragma": "no-cache",
    }


def page(
    parts: Components,
    template: str,
    context: Mapping[str, Any],
    *,
    status: int = 200,
    form_targets: Iterable[str] = (),
    headers: Mapping[str, str] | None = None,
    scripts: bool = False,
) -> HTMLResponse:
    settings = parts.settings
    html = TEMPLATES.get_template(template).render(
        issuer=parts.issuer,
        site_name=settings.site_name,
        logo_url=settings.logo_url,
        pat_help_url=settings.pat_help_url,
        **context,
    )
    all_headers = security_headers(form_targets, scripts=scripts)
    all_headers.update(headers or {})
    return HTMLResponse(html, status_code=status, headers=all_headers)


def error_page(parts: Components, error: str, description: str, status: int = 400) -> HTMLResponse:
    return page(
        parts,
        "error.html",
        {"error": error, "description": description},
        status=status,
    )


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(
        url, status_code=302, headers={"Cache-Control": "no-store", "Pragma": "no-cache"}
    )


def form_targets_for(uri: str | None) -> list[str]:
    """CSP `form-action` sources for a redirect URI: its origin, or for a native app's
    private-use URI (RFC 8252 §7.1) its scheme (`com.example.app:`)."""
    if not uri:
        return []
    origin = origin_of(uri)
    if origin:
        return [origin]
    scheme = private_use_scheme(uri)
    return [f"{scheme}:"] if scheme else []


# --- SSO session cookie ----------------------------------------------------------------------
def new_session_cookie() -> str:
    return secrets.token_urlsafe(32)


def read_session(parts: Components, cookie: str | None) -> SessionRecord | None:
    """The live SSO session named by the cookie value, else None. Synchronous (store read):
    call it from a worker thread."""
    if not cookie or len(cookie) > 256:
        return None
    session = parts.store.get_session_by_cookie(sha256_b64(cookie))
    return session if parts.sessions.live(session) else None


def set_session_cookie(
    parts: Components, response: Response, value: str, session: SessionRecord
) -> None:
    max_age = max(0, int((session.expires_at - parts.now()).total_seconds()))
    response.set_cookie(
        session_cookie_name(parts),
        value,
        max_age=max_age,
        path="/",
        secure=secure(parts),
        httponly=True,
        samesite="lax",
    )


def clear_session_cookie(parts: Components, response: Response) -> None:
    response.delete_cookie(
        session_cookie_name(parts),
        path="/",
        secure=secure(parts),
        httponly=True,
        samesite="lax",
    )


# --- CSRF ------------------------------------------------------------------------------------
def _csrf_key(parts: Components) -> bytes:
    assert parts.settings.secret_key is not None
    return hmac.new(decode_key(parts.settings.secret_key), b"broker csrf v1", "sha256").digest()


def _binding(purpose: str, params: Iterable[tuple[str, str]]) -> bytes:
    return json.dumps([purpose, sorted(params)], separators=(",", ":")).encode()


def browser_binding(cookie: str, purpose: str, params: Iterable[tuple[str, str]]) -> str:
    """What ties server-side state to one browser and one page: a hash over the browser's
    CSRF cookie and what its CSRF tokens are bound to (the sign-in's sealed two-factor
    state and App Session Launcher requests use it)."""
    return sha256_b64(cookie + "|" + _binding(purpose, params).decode())


def csrf_cookie_value(parts: Components, request: Request) -> str:
    """The browser's CSRF cookie if it has a sane one (kept so two open tabs both work)."""
    value = request.cookies.get(csrf_cookie_name(parts), "")
    if 20 <= len(value) <= 64 and value.replace("-", "").replace("_", "").isalnum():
        return value
    return secrets.token_urlsafe(24)


def csrf_token(
    parts: Components, cookie: str, purpose: str, params: Iterable[tuple[str, str]]
) -> str:
    expires = int(parts.now().timestamp()) + parts.settings.login_form_ttl
    mac = hmac.new(_csrf_key(parts), digestmod=hashlib.sha256)
    mac.update(f"{cookie}|{expires}|".encode())
    mac.update(_binding(purpose, params))
    sig = base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")
    return f"{expires}.{sig}"


def csrf_ok(
    parts: Components,
    cookie: str | None,
    token: str | None,
    purpose: str,
    params: Iterable[tuple[str, str]],
) -> bool:
    """`cookie` is the browser's CSRF cookie value (`csrf_cookie_name`)."""
    if not cookie or not token or "." not in token or len(token) > 200:
        return False
    expires_text, sig = token.split(".", 1)
    if not expires_text.isdigit() or int(expires_text) < parts.now().timestamp():
        return False
    mac = hmac.new(_csrf_key(parts), digestmod=hashlib.sha256)
    mac.update(f"{cookie}|{expires_text}|".encode())
    mac.update(_binding(purpose, params))
    expected = base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")
    return hmac.compare_digest(expected, sig)


def set_csrf_cookie(parts: Components, response: Response, value: str) -> None:
    response.set_cookie(
        csrf_cookie_name(parts),
        value,
        max_age=parts.settings.login_form_ttl,
        path="/",
        secure=secure(parts),
        httponly=True,
        samesite="lax",
    )


async def page_params(request: Request, parts: Components) -> dict[str, str] | Response:
    """The parameters of a browser page request (query for GET, form for POST), or the
    error page to show: malformed, repeated or oversized parameters never reach a client
    redirect, because nothing about them can be trusted yet."""
    try:
        if request.method == "POST":
            pairs = await read_form(request, parts.settings.max_body_bytes)
        else:
            pairs = parse_pairs(request.url.query, what="query string")
            reject_duplicates(pairs)
    except BodyTooLarge:
        return error_page(parts, "invalid_request", "The request is too large.", 413)
    except OAuth2Error as err:
        return error_page(parts, err.error, err.description or "Malformed request.")
    return dict(pairs)
