"""`GET /revocations`: the revocation feed for offline validators (REVOCATION_FORMATS.md;
discovery's `revocation_feed_endpoint`). No authentication: it reveals only random
identifiers.

The handler negotiates the representation (JSON by default, the signed JWT for
`Accept: application/jwt`), takes the page from the feed's cache on the event loop when it
is there (most polls), else makes its one hop to `RevocationFeed.read` (at most one store
read per second per process), and answers 304 when `If-None-Match` names the page's
current validator.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from broker import metrics
from broker.http.routes import store_unavailable
from broker.http.threads import components, run_sync
from broker.revocation.feed import CACHE_SECONDS
from broker.store import StoreUnavailable

_JSON_RANGES = frozenset({"application/json", "application/*", "*/*"})


def wants_jwt(accept: str | None) -> bool:
    """True when `Accept` prefers `application/jwt` (RFC 9110 §12.5.1 q-values) to JSON;
    JSON on a tie with a wildcard, on anything unparseable, and by default."""
    if not accept:
        return False
    jwt_q, json_q = 0.0, 0.0
    for part in accept.split(","):
        media, *params = part.split(";")
        media = media.strip().lower()
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if media == "application/jwt":
            jwt_q = max(jwt_q, q)
        elif media in _JSON_RANGES:
            json_q = max(json_q, q if media == "application/json" else q - 0.001)
    return jwt_q > 0 and jwt_q >= json_q


def etag_matches(header: str | None, etag: str) -> bool:
    """`If-None-Match` (RFC 9110 §13.1.2): weak comparison against any listed tag, or `*`."""
    if not header:
        return False
    ours = etag.removeprefix("W/")
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == ours:
            return True
    return False


async def revocations(request: Request) -> Response:
    parts = components(request)
    signed = wants_jwt(request.headers.get("accept"))
    since = request.query_params.get("since")
    page = parts.feed.cached(since, signed)
    try:
        if page is None:
            page = await run_sync(request, parts.feed.read, since, signed)
    except StoreUnavailable:
        metrics.store_error("revocations")
        return store_unavailable()
    headers = {
        "ETag": page.etag,
        "Cache-Control": f"public, max-age={int(CACHE_SECONDS)}",
        "Vary": "Accept",
    }
    if etag_matches(request.headers.get("if-none-match"), page.etag):
        return Response(status_code=304, headers=headers)
    return Response(page.body, media_type=page.content_type, headers=headers)


routes = [Route("/revocations", revocations, methods=["GET"])]
