"""CORS (Fetch standard §3.2) for the endpoints a browser app calls: token, userinfo,
revocation, JWKS and discovery.

Only origins derived from registered clients are allowed: the origin of each registered
redirect URI (for a loopback redirect URI, the same scheme and host on any port, since
RFC 8252 §7.3 lets a native or local app listen on any port) and each client's explicit
`allowed_origins`. No credentials mode: these endpoints never read cookies, so
`Access-Control-Allow-Credentials` is never sent. The allowlist is keyed on path names,
not on route objects, so it covers routes other modules add (e.g. `/revoke`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.components import Components
from broker.http.threads import run_on
from broker.redirects import LOOPBACK_HOSTS, host_of, is_loopback, origin_of, split_uri
from broker.store import ClientRecord, StoreError

CORS_PATHS = frozenset(
    {
        "/token",
        "/userinfo",
        "/revoke",
        "/jwks.json",
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    }
)
ALLOWED_METHODS = "GET, POST"
ALLOWED_HEADERS = frozenset({"authorization", "content-type", "accept", "accept-language", "dpop"})
EXPOSED_HEADERS = "WWW-Authenticate, Retry-After"
_EXPOSED_HEADERS = EXPOSED_HEADERS.encode("latin-1")
PREFLIGHT_MAX_AGE = "600"
CACHE_SECONDS = 10.0
"""How long the origin allowlist read from the store is reused (client edits show up
within this many seconds in every process)."""


class Allowlist:
    """Exact origins plus loopback (scheme, host) pairs that match on any port."""

    def __init__(self, clients: Iterable[ClientRecord]) -> None:
        exact: set[str] = set()
        loopback: set[tuple[str, str]] = set()
        for client in clients:
            for uri in client.redirect_uris:
                parts = split_uri(uri)
                if parts is not None and is_loopback(uri):
                    loopback.add((parts.scheme, host_of(parts)))
                origin = origin_of(uri)
                if origin:
                    exact.add(origin)
            exact.update(o.rstrip("/") for o in client.allowed_origins)
        self.exact = frozenset(exact)
        self.loopback = frozenset(loopback)

    def allows(self, origin: str) -> bool:
        if origin in self.exact:
            return True
        if len(origin) > 300 or origin == "null":
            return False
        parts = split_uri(origin)
        if parts is None or parts.path or parts.query:
            return False
        host = host_of(parts)
        return host in LOOPBACK_HOSTS and (parts.scheme, host) in self.loopback


class CorsMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._cached: tuple[float, Allowlist] | None = None

    async def _allowlist(self, scope: Scope) -> Allowlist | None:
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < CACHE_SECONDS:
            return self._cached[1]
        state = scope["app"].state
        parts: Components | None = getattr(state, "components", None)
        if parts is None:
            return None
        try:
            clients = await run_on(state, parts.store.list_clients)
        except StoreError:
            return self._cached[1] if self._cached else None
        allowlist = Allowlist(clients)
        self._cached = (now, allowlist)
        return allowlist

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in CORS_PATHS:
            await self.app(scope, receive, send)
            return
        # One pass over the raw headers (ASGI names are lower case): most requests here
        # come from servers, with no Origin at all.
        origin: str | None = None
        asks_preflight = False
        for name, value in scope["headers"]:
            if name == b"origin" and origin is None:
                origin = value.decode("latin-1")
            elif name == b"access-control-request-method":
                asks_preflight = True
        allowed = False
        if origin is not None:
            allowlist = await self._allowlist(scope)
            allowed = allowlist is not None and allowlist.allows(origin)
        if scope["method"] == "OPTIONS" and asks_preflight:
            headers = Headers(scope=scope)
            await self._preflight(origin if allowed else None, headers, scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = message.get("headers")
                if type(raw) is not list:
                    message["headers"] = raw = list(raw or ())
                if any(name == b"vary" for name, _ in raw):
                    MutableHeaders(scope=message).add_vary_header("Origin")
                else:
                    raw.append((b"vary", b"Origin"))
                if allowed and origin is not None:
                    raw.append((b"access-control-allow-origin", origin.encode("latin-1")))
                    raw.append((b"access-control-expose-headers", _EXPOSED_HEADERS))
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(
        self, origin: str | None, headers: Headers, scope: Scope, receive: Receive, send: Send
    ) -> None:
        vary = {"Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"}
        method = headers["access-control-request-method"].upper()
        requested = {
            h.strip().lower()
            for h in headers.get("access-control-request-headers", "").split(",")
            if h.strip()
        }
        if origin is None or method not in ("GET", "POST") or requested - ALLOWED_HEADERS:
            response = Response(status_code=403, headers=vary)
        else:
            response = Response(
                status_code=204,
                headers={
                    **vary,
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Methods": ALLOWED_METHODS,
                    "Access-Control-Allow-Headers": ", ".join(sorted(requested))
                    or "authorization, content-type",
                    "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
                },
            )
        await response(scope, receive, send)
