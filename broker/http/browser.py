"""Routes of the browser flows: authorization endpoint and login page, the device
verification page, userinfo, logout, and the pages' assets: the stylesheet (served by the
broker so the CSP can stay `style-src 'self'`, with colours derived from the accent colour
setting), the login page's script (`script-src 'self'`, no inline script) and the icon
(`/favicon.ico`, where browsers look unasked, and an SVG the pages link)."""

from __future__ import annotations

import functools

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from broker.contrast import accent_colors
from broker.http.authorize import authorize
from broker.http.device import device
from broker.http.logout import logout
from broker.http.pages import STATIC
from broker.http.threads import components
from broker.http.userinfo import userinfo

_CSS = (STATIC / "login.css").read_text(encoding="utf-8")
_CSS_DEFAULTS = "--accent: #2563eb;\n  --on-accent: #ffffff;\n  --accent-text: #2563eb;"
_FAVICON_ICO = (STATIC / "favicon.ico").read_bytes()
_FAVICON_SVG = (STATIC / "favicon.svg").read_bytes()
_ASSET_HEADERS = {"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"}


@functools.cache
def stylesheet(accent: str) -> str:
    colors = accent_colors(accent)
    return _CSS.replace(
        _CSS_DEFAULTS,
        f"--accent: {colors.accent};\n  --on-accent: {colors.on_accent};\n"
        f"  --accent-text: {colors.accent_text};",
    )


_SIGNIN_JS = (STATIC / "signin.js").read_bytes()


async def login_css(request: Request) -> Response:
    return Response(
        stylesheet(components(request).settings.accent_color),
        media_type="text/css",
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


async def favicon_ico(request: Request) -> Response:
    return Response(_FAVICON_ICO, media_type="image/x-icon", headers=_ASSET_HEADERS)


async def favicon_svg(request: Request) -> Response:
    # An SVG opened on its own is a document: it gets no right to run or load anything.
    headers = {**_ASSET_HEADERS, "Content-Security-Policy": "default-src 'none'"}
    return Response(_FAVICON_SVG, media_type="image/svg+xml", headers=headers)


async def signin_js(request: Request) -> Response:
    """The login page's only script (ShotGrid sign-in), a static same-origin file so the
    pages' CSP never needs inline script."""
    return Response(
        _SIGNIN_JS,
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"},
    )


browser_routes = [
    Route("/authorize", authorize, methods=["GET", "POST"]),
    Route("/device", device, methods=["GET", "POST"]),
    Route("/userinfo", userinfo, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["GET", "POST"]),
    Route("/static/login.css", login_css, methods=["GET"]),
    Route("/static/favicon.svg", favicon_svg, methods=["GET"]),
    Route("/favicon.ico", favicon_ico, methods=["GET"]),
    Route("/static/signin.js", signin_js, methods=["GET"]),
]
