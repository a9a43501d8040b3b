"""`GET|POST /userinfo` (OIDC Core §5.3): the signed-in user's claims for a bearer access
token (RFC 6750 §2.1 header only), released by the token's scope (§5.4).

The token is checked with the store (`validate_access_token`), so a token whose session
ended or whose refresh family was revoked (logout, reuse, revocation) is refused here even
before it expires. Errors follow RFC 6750 §3.1: 401 with `WWW-Authenticate` for a missing
or inactive token, 403 `insufficient_scope` without `openid`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from broker.components import Components
from broker.errors import error_body
from broker.http.threads import components, run_sync
from broker.store import StoreUnavailable
from broker.tokens.access import InactiveToken, validate_access_token
from broker.tokens.claims import user_claims

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _challenge(issuer: str, error: str | None = None, description: str | None = None) -> str:
    fields = [f'realm="{issuer}"']
    if error:
        fields.append(f'error="{error}"')
    if description:
        fields.append(f'error_description="{description}"')
    if error == "insufficient_scope":
        fields.append('scope="openid"')
    return "Bearer " + ", ".join(fields)


def _error(
    parts: Components, status: int, error: str, description: str, *, bare: bool = False
) -> Response:
    headers = dict(NO_STORE)
    headers["WWW-Authenticate"] = _challenge(
        parts.issuer, None if bare else error, None if bare else description
    )
    return JSONResponse(error_body(error, description), status_code=status, headers=headers)


def _claims(parts: Components, token: str) -> dict[str, Any]:
    claims = validate_access_token(parts.keys, parts.store, parts.issuer, parts.now(), token)
    scope = str(claims.get("scope") or "")
    if "openid" not in scope.split():
        raise PermissionError
    sid = claims.get("sid")
    session = parts.store.get_session(str(sid)) if sid else None
    if session is None:
        raise InactiveToken("no user session")
    body: dict[str, Any] = {"sub": str(session.user_id)}
    body.update(user_claims(session, scope))
    return body


async def userinfo(request: Request) -> Response:
    parts = components(request)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if not header:
        # RFC 6750 §3.1: no credentials at all -> a bare challenge, no error code in it.
        return _error(parts, 401, "invalid_token", "An access token is required.", bare=True)
    if scheme.lower() != "bearer" or not token or " " in token:
        return _error(
            parts,
            400,
            "invalid_request",
            "Send the access token as 'Authorization: Bearer <token>'.",
        )
    try:
        body = await run_sync(request, _claims, parts, token)
    except InactiveToken:
        return _error(
            parts, 401, "invalid_token", "The access token is expired, revoked or invalid."
        )
    except PermissionError:
        return _error(
            parts, 403, "insufficient_scope", "The access token was not issued for 'openid'."
        )
    except StoreUnavailable:
        return JSONResponse(
            error_body("temporarily_unavailable", "The token store is not reachable."),
            status_code=503,
            headers={**NO_STORE, "Retry-After": "5"},
        )
    return JSONResponse(body, headers=NO_STORE)
