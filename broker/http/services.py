"""Routes of the service endpoints: `/revoke` (RFC 7009), `/introspect` (RFC 7662), and
the endpoints grants declare in the registry (`GrantSpec.endpoints`, e.g. the device
authorization endpoint of RFC 8628).

Same shape as `/token`: read the bounded form body here, then run the Authlib endpoint
on a worker thread (it reads the store) and render its answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from authlib.oauth2 import OAuth2Error
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from broker.grants.registry import GRANTS
from broker.http.middleware import note_oauth_result
from broker.http.oauth import BodyTooLarge, oauth_request, render
from broker.http.routes import _server, oauth_error, too_large
from broker.http.threads import components, run_sync


async def _endpoint(request: Request, name: str, path: str) -> Response:
    parts = components(request)
    try:
        oreq = await oauth_request(request, parts.issuer, path, parts.settings.max_body_bytes)
    except BodyTooLarge:
        return too_large()
    except OAuth2Error as err:
        note_oauth_result(err.status_code, {"error": err.error})
        return oauth_error(err)
    result = await run_sync(request, _server(request).create_endpoint_response, name, oreq)
    note_oauth_result(result[0], result[1])
    return render(result)


async def revoke(request: Request) -> Response:
    return await _endpoint(request, "revocation", "/revoke")


async def introspect(request: Request) -> Response:
    return await _endpoint(request, "introspection", "/introspect")


def grant_endpoint(name: str, path: str) -> Callable[[Request], Awaitable[Response]]:
    async def handler(request: Request) -> Response:
        return await _endpoint(request, name, path)

    handler.__name__ = name
    return handler


routes = [
    Route("/revoke", revoke, methods=["POST"]),
    Route("/introspect", introspect, methods=["POST"]),
    *(
        Route(path, grant_endpoint(endpoint.ENDPOINT_NAME, path), methods=["POST"])
        for spec in GRANTS
        for path, endpoint in spec.endpoints
    ),
]
