"""FastAPI dependency: `require_token(scopes=...)` (RFC 6750 §3).

    validator = TokenValidator("https://broker.example", "dna-api")

    @app.get("/notes")
    async def notes(
        claims: Annotated[AccessTokenClaims, Depends(require_token(validator, scopes=["email"]))],
    ) -> ...

Without `validator` the dependency uses `request.app.state.broker_validator`. Missing
credentials: 401 with a bare `Bearer` challenge; a bad token: 401 `invalid_token`; a
valid token without the scopes: 403 `insufficient_scope`; broker unreachable: 503.
Only Starlette is imported, so FastAPI stays the application's choice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from starlette.exceptions import HTTPException
from starlette.requests import Request

from ..validator import TokenValidator
from ..verify import AccessTokenClaims
from .starlette import BearerError, authenticate_bearer, www_authenticate

__all__ = ["require_token"]


def require_token(
    validator: TokenValidator | None = None,
    *,
    scopes: Iterable[str] = (),
    realm: str | None = None,
) -> Callable[[Request], Awaitable[AccessTokenClaims]]:
    required = frozenset(scopes)

    async def dependency(request: Request) -> AccessTokenClaims:
        active = validator or getattr(request.app.state, "broker_validator", None)
        if not isinstance(active, TokenValidator):
            raise RuntimeError("require_token needs a validator or app.state.broker_validator")
        try:
            claims = await authenticate_bearer(active, request.headers, realm)
        except BearerError as exc:
            raise HTTPException(exc.status_code, exc.description, exc.headers) from exc
        if claims is None:
            raise HTTPException(
                401,
                "authentication required",
                {"WWW-Authenticate": www_authenticate(None, realm=realm)},
            )
        if not claims.has_scopes(required):
            description = "the access token lacks a required scope"
            challenge = www_authenticate(
                "insufficient_scope", description, scope=required, realm=realm
            )
            raise HTTPException(403, description, {"WWW-Authenticate": challenge})
        return claims

    return dependency
