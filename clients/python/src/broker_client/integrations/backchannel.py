"""Back-channel logout receiver for Starlette and FastAPI (OIDC Back-Channel Logout 1.0).

    validator = TokenValidator("https://broker.example", "dna-api")
    app.add_route(
        "/auth/backchannel-logout",
        backchannel_logout_endpoint(validator, client_id="dna-backend"),
        methods=["POST"],
    )

and register the URL with the broker:

    token-broker clients update dna-backend \\
        --backchannel-logout-uri https://dna.example.com/auth/backchannel-logout

The broker POSTs `logout_token` (form-encoded) when a session the client signed into
ends. The token is checked against the validator's own key set (§2.6, `logout.py`); a
valid one adds a `sid` entry to the validator's revocation set for `session_lifetime`
seconds (default 1 h; it must be at least the broker's longest access-token lifetime),
so the session's access tokens are refused at once, without waiting for the feed.
Answers (§2.8): 200 on success; 400 `invalid_request` for a bad request or token; 503
`temporarily_unavailable` with `Retry-After` when the key set cannot be had (the token
may well be good: the broker may retry). Always `Cache-Control: no-store`. The form is
parsed here, not with `request.form()`, so python-multipart is not needed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..logout import InvalidLogoutToken, LogoutTokenVerifier
from ..validator import TokenValidator
from ..verify import InvalidToken, JWKSUnavailable, UnknownKey

__all__ = ["backchannel_logout_endpoint", "backchannel_logout_route"]

_NO_STORE = {"Cache-Control": "no-store"}
_MAX_BODY = 16 * 1024

ValidatorSource = TokenValidator | Callable[[], TokenValidator]


def _bad(description: str) -> JSONResponse:
    return JSONResponse(
        {"error": "invalid_request", "error_description": description},
        status_code=400,
        headers=_NO_STORE,
    )


def backchannel_logout_endpoint(
    validator: ValidatorSource,
    client_id: str | Collection[str],
    *,
    session_lifetime: float = 3600.0,
    max_age: float = 300.0,
    replay_capacity: int = 10_000,
) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint (POST) receiving logout tokens for `client_id`.

    `validator` may be a zero-argument callable returning it, for applications that
    build their validator lazily (DNA's `get_auth_provider()`).
    """
    verifiers: dict[int, LogoutTokenVerifier] = {}

    def resolve() -> tuple[TokenValidator, LogoutTokenVerifier]:
        active = validator if isinstance(validator, TokenValidator) else validator()
        verifier = verifiers.get(id(active))
        if verifier is None:
            verifier = verifiers[id(active)] = LogoutTokenVerifier(
                active.issuer,
                client_id,
                leeway=active.leeway,
                max_age=max_age,
                replay_capacity=replay_capacity,
            )
        return active, verifier

    async def endpoint(request: Request) -> Response:
        if request.method != "POST":
            return JSONResponse(
                {"error": "invalid_request", "error_description": "use POST"},
                status_code=405,
                headers={**_NO_STORE, "Allow": "POST"},
            )
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            return _bad("the body must be application/x-www-form-urlencoded")
        body = await request.body()
        if len(body) > _MAX_BODY:
            return _bad("the request body is too large")
        try:
            form = parse_qs(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError):
            return _bad("the body is not a valid form")
        tokens = form.get("logout_token", [])
        if len(tokens) != 1 or not tokens[0]:
            return _bad("exactly one logout_token is required")
        active, verifier = resolve()
        try:
            claims = await _verify(active, verifier, tokens[0])
        except InvalidToken as exc:
            return _bad(exc.description)
        except JWKSUnavailable as exc:
            return JSONResponse(
                {
                    "error": "temporarily_unavailable",
                    "error_description": "cannot verify logout tokens right now",
                },
                status_code=503,
                headers={**_NO_STORE, "Retry-After": str(exc.retry_after)},
            )
        if active.revocations is None:
            raise RuntimeError("the validator keeps no revocation set (revocations=False)")
        now = active.now()
        active.revocations.add("sid", claims["sid"], now + session_lifetime, now)
        return Response(status_code=200, headers=_NO_STORE)

    return endpoint


async def _verify(
    validator: TokenValidator, verifier: LogoutTokenVerifier, token: str
) -> dict[str, Any]:
    """Verify with the validator's key set, waiting (without blocking) as it does."""
    now = validator.now()
    try:
        return verifier.verify(token, await validator.akeys_for(), now)
    except UnknownKey as exc:
        keys = await validator.akeys_for(exc.kid)
    try:
        return verifier.verify(token, keys, now)
    except UnknownKey as exc:
        raise InvalidLogoutToken("the logout token was signed by an unknown key") from exc


def backchannel_logout_route(
    validator: ValidatorSource,
    client_id: str | Collection[str],
    path: str = "/auth/backchannel-logout",
    *,
    session_lifetime: float = 3600.0,
    max_age: float = 300.0,
    replay_capacity: int = 10_000,
) -> Route:
    """The endpoint as a Starlette `Route` (POST only), for `routes=[...]` lists."""
    endpoint = backchannel_logout_endpoint(
        validator,
        client_id,
        session_lifetime=session_lifetime,
        max_age=max_age,
        replay_capacity=replay_capacity,
    )
    return Route(path, endpoint, methods=["POST"])
