"""Routes of the browser flows: authorization endpoint and login page, userinfo, logout,
and the login page's stylesheet (served by the broker so the CSP can stay `style-src
'self'`, with the accent colour setting filled in)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from broker.http.authorize import authorize
from broker.http.logout import logout
from broker.http.pages import STATIC
from broker.http.threads import components
from broker.http.userinfo import userinfo

_CSS = (STATIC / "login.css").read_text(encoding="utf-8")


async def login_css(request: Request) -> Response:
    accent = components(request).settings.accent_color
    return Response(
        _CSS.replace("--accent: #2563eb;", f"--accent: {accent};"),
        media_type="text/css",
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


browser_routes = [
    Route("/authorize", authorize, methods=["GET", "POST"]),
    Route("/userinfo", userinfo, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["GET", "POST"]),
    Route("/static/login.css", login_css, methods=["GET"]),
]
