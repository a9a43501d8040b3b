"""Starlette integration: an `AuthenticationBackend` and RFC 6750 §3 error responses.

    app.add_middleware(
        AuthenticationMiddleware, backend=BrokerAuthBackend(validator), on_error=on_auth_error
    )

A request without bearer credentials passes as Starlette's unauthenticated user (guard
endpoints with `starlette.authentication.requires`); a bad token gets 401 with
`WWW-Authenticate: Bearer error="invalid_token"`, and an unreachable broker 503.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response

from ..validator import TokenValidator
from ..verify import AccessTokenClaims, InvalidToken, JWKSUnavailable

__all__ = [
    "BearerError",
    "BrokerAuthBackend",
    "BrokerUser",
    "bearer_token",
    "on_auth_error",
    "www_authenticate",
]


class BearerError(AuthenticationError):
    """An RFC 6750 §3.1 error, with the status and challenge to answer it with."""

    def __init__(
        self,
        status_code: int,
        error: str | None,
        description: str | None = None,
        *,
        scope: Collection[str] = (),
        realm: str | None = None,
    ) -> None:
        super().__init__(description or error or "authentication required")
        self.status_code = status_code
        self.error = error
        self.description = description
        self.headers = {
            "WWW-Authenticate": www_authenticate(error, description, scope=scope, realm=realm)
        }
        if status_code == 503:
            self.headers["Retry-After"] = "5"


def _quote(value: str) -> str:
    # RFC 6750 §3: error_description and scope are %x20-21 / %x23-5B / %x5D-7E.
    clean = "".join(c for c in value if " " <= c <= "~" and c not in '"\\')
    return f'"{clean}"'


def www_authenticate(
    error: str | None,
    description: str | None = None,
    *,
    scope: Collection[str] = (),
    realm: str | None = None,
) -> str:
    params = []
    if realm is not None:
        params.append(f"realm={_quote(realm)}")
    if error is not None:
        params.append(f"error={_quote(error)}")
        if description:
            params.append(f"error_description={_quote(description)}")
    if scope:
        params.append(f"scope={_quote(' '.join(sorted(scope)))}")
    return "Bearer " + ", ".join(params) if params else "Bearer"


def bearer_token(headers: Mapping[str, str], realm: str | None = None) -> str | None:
    """The bearer token of an `Authorization` header (RFC 6750 §2.1); None if absent.

    Another scheme counts as absent (the request carries no bearer credentials);
    a malformed bearer header is `invalid_request` (400).
    """
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    if not token or " " in token:
        raise BearerError(400, "invalid_request", "malformed bearer credentials", realm=realm)
    return token


class BrokerUser(BaseUser):
    def __init__(self, claims: AccessTokenClaims) -> None:
        self.claims = claims

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.claims.name or self.claims.sg_login or self.claims.sub

    @property
    def identity(self) -> str:
        return self.claims.sub


async def authenticate_bearer(
    validator: TokenValidator, headers: Mapping[str, str], realm: str | None = None
) -> AccessTokenClaims | None:
    """Validate the request's bearer token, turning failures into `BearerError`s."""
    token = bearer_token(headers, realm)
    if token is None:
        return None
    try:
        return await validator.avalidate(token)
    except InvalidToken as exc:
        raise BearerError(401, exc.error, exc.description, realm=realm) from exc
    except JWKSUnavailable as exc:
        raise BearerError(
            503, "temporarily_unavailable", "cannot validate tokens right now", realm=realm
        ) from exc


class BrokerAuthBackend(AuthenticationBackend):
    def __init__(self, validator: TokenValidator, *, realm: str | None = None) -> None:
        self.validator = validator
        self.realm = realm

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        claims = await authenticate_bearer(self.validator, conn.headers, self.realm)
        if claims is None:
            return None
        return AuthCredentials(["authenticated", *sorted(claims.scopes)]), BrokerUser(claims)


def on_auth_error(conn: HTTPConnection, exc: AuthenticationError) -> Response:
    """`on_error` for `AuthenticationMiddleware`: RFC 6750 status, challenge and JSON."""
    if isinstance(exc, BearerError):
        body = {"error": exc.error, "error_description": exc.description}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
    return JSONResponse(
        {"error": "invalid_token", "error_description": str(exc)},
        status_code=401,
        headers={"WWW-Authenticate": www_authenticate("invalid_token")},
    )
