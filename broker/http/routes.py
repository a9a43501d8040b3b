"""Routes of the token service: thin async handlers over the synchronous core."""

from __future__ import annotations

import logging
from typing import Any

from authlib.oauth2 import OAuth2Error
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from broker.core import Broker
from broker.endpoints.discovery import metadata
from broker.errors import error_body
from broker.http.oauth import BodyTooLarge, oauth_request, render
from broker.http.threads import run_sync
from broker.server import BrokerAuthorizationServer
from broker.store import StoreUnavailable

log = logging.getLogger("broker.http")

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _broker(request: Request) -> Broker:
    broker: Broker = request.app.state.broker
    return broker


def _server(request: Request) -> BrokerAuthorizationServer:
    server: BrokerAuthorizationServer = request.app.state.oauth_server
    return server


def oauth_error(error: OAuth2Error) -> Response:
    status, body, headers = error()
    return render((status, body, list(headers)))


def too_large() -> Response:
    return JSONResponse(
        error_body("invalid_request", "The request body is too large."),
        status_code=413,
        headers=NO_STORE,
    )


async def token(request: Request) -> Response:
    broker = _broker(request)
    try:
        oreq = await oauth_request(request, broker.issuer, "/token", broker.settings.max_body_bytes)
    except BodyTooLarge:
        return too_large()
    except OAuth2Error as err:
        return oauth_error(err)
    result = await run_sync(request, _server(request).create_token_response, oreq)
    return render(result)


async def jwks(request: Request) -> Response:
    broker = _broker(request)
    try:
        body = await run_in_threadpool(broker.keys.jwks)
    except StoreUnavailable:
        return JSONResponse(
            error_body("temporarily_unavailable", "The key store is not reachable."),
            status_code=503,
            headers={**NO_STORE, "Retry-After": "5"},
        )
    return JSONResponse(
        body,
        headers={"Cache-Control": f"public, max-age={broker.settings.jwks_max_age}"},
        media_type="application/jwk-set+json",
    )


def _metadata(request: Request) -> dict[str, Any]:
    broker = _broker(request)
    cached: dict[str, Any] | None = getattr(request.app.state, "metadata", None)
    if cached is None:
        cached = metadata(broker.issuer, signing_alg=broker.settings.signing_alg, openid=True)
        request.app.state.metadata = cached
    return cached


async def openid_configuration(request: Request) -> Response:
    return JSONResponse(_metadata(request), headers={"Cache-Control": "public, max-age=300"})


async def oauth_authorization_server(request: Request) -> Response:
    return JSONResponse(_metadata(request), headers={"Cache-Control": "public, max-age=300"})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def readyz(request: Request) -> Response:
    broker = _broker(request)

    def check() -> dict[str, Any]:
        checks: dict[str, Any] = {}
        try:
            broker.store.ping()
            checks["store"] = "ok"
        except StoreUnavailable:
            checks["store"] = "unavailable"
            return checks
        try:
            broker.keys.current()
            checks["signing_key"] = "ok"
        except Exception:
            checks["signing_key"] = "missing"
        return checks

    checks = await run_in_threadpool(check)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )


routes = [
    Route("/token", token, methods=["POST"]),
    Route("/jwks.json", jwks, methods=["GET"]),
    Route("/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
    Route("/.well-known/oauth-authorization-server", oauth_authorization_server, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]
