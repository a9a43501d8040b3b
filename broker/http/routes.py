"""Routes of the token service: thin async handlers over the synchronous core."""

from __future__ import annotations

import logging
from typing import Any

from authlib.oauth2 import OAuth2Error
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from broker.endpoints.discovery import metadata
from broker.errors import error_body
from broker.http.documents import PreparedDocument
from broker.http.middleware import note, note_oauth_result
from broker.http.oauth import BodyTooLarge, oauth_request, render
from broker.http.threads import components, run_sync
from broker.server import BrokerAuthorizationServer
from broker.store import StoreError, StoreUnavailable

log = logging.getLogger("broker.http")

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def store_unavailable() -> JSONResponse:
    """The 503 of a page that needs the store while it cannot be reached: never a 500."""
    return JSONResponse(
        error_body(
            "temporarily_unavailable",
            "The token store is not reachable right now. Try again shortly.",
        ),
        status_code=503,
        headers={**NO_STORE, "Retry-After": "5"},
    )


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
    parts = components(request)
    try:
        oreq = await oauth_request(request, parts.issuer, "/token", parts.settings.max_body_bytes)
    except BodyTooLarge:
        return too_large()
    except OAuth2Error as err:
        note_oauth_result(err.status_code, {"error": err.error})
        return oauth_error(err)
    note(grant_type=oreq.form.get("grant_type") or "")
    result = await run_sync(request, _server(request).create_token_response, oreq)
    note_oauth_result(result[0], result[1])
    return render(result)


def _documents(request: Request) -> tuple[PreparedDocument, PreparedDocument]:
    """The app's prepared JWKS and discovery documents (made at the first request)."""
    state = request.app.state
    documents: tuple[PreparedDocument, PreparedDocument] | None = getattr(state, "documents", None)
    if documents is None:
        max_age = components(request).settings.jwks_max_age
        documents = (
            PreparedDocument("application/jwk-set+json", f"public, max-age={max_age}"),
            PreparedDocument("application/json", "public, max-age=300"),
        )
        state.documents = documents
    return documents


async def jwks(request: Request) -> Response:
    """The key set as last loaded, with no thread hop: only a request that finds the set
    older than the reload interval (once a minute by default) waits for the reload."""
    keys = components(request).keys
    if keys.reload_due():
        try:
            await run_sync(request, keys.maybe_reload)
        except StoreUnavailable:
            # Keys change rarely: the last set loaded is still right; never a 500.
            from broker import metrics

            metrics.store_error("jwks")
    published = keys.published()
    if not published.get("keys"):
        return store_unavailable()
    return _documents(request)[0].response(published)


def _metadata(request: Request) -> dict[str, Any]:
    parts = components(request)
    cached: dict[str, Any] | None = getattr(request.app.state, "metadata", None)
    if cached is None:
        cached = metadata(parts.issuer, signing_alg=parts.settings.signing_alg, openid=True)
        request.app.state.metadata = cached
    return cached


async def openid_configuration(request: Request) -> Response:
    return _documents(request)[1].response(_metadata(request))


async def oauth_authorization_server(request: Request) -> Response:
    return _documents(request)[1].response(_metadata(request))


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


async def readyz(request: Request) -> Response:
    parts = components(request)

    def check() -> dict[str, Any]:
        checks: dict[str, Any] = {}
        try:
            parts.store.ping()
            checks["store"] = "ok"
        except StoreError:
            checks["store"] = "unavailable"
            return checks
        try:
            parts.keys.current()
            checks["signing_key"] = "ok"
        except StoreError:
            checks["signing_key"] = "unavailable"
        except Exception:
            checks["signing_key"] = "missing"
        return checks

    checks = await run_sync(request, check)
    ready = all(v == "ok" for v in checks.values())
    body: dict[str, Any] = {"status": "ready" if ready else "unavailable", "checks": checks}
    # ShotGrid is reported, never a reason to be unready (see broker/upstream/probe.py).
    probe = getattr(request.app.state, "upstream_probe", None)
    body["upstream"] = await probe.report() if probe is not None else {"status": "unknown"}
    return JSONResponse(
        body,
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
