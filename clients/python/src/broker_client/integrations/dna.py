"""DNA adapter: `BrokerAuthProvider` speaks DNA's `AuthProviderBase` interface.

DNA picks its provider in `dna.auth_providers.auth_provider_base.get_auth_provider()`
from `AUTH_PROVIDER`; one more branch wires the broker in:

    elif provider == "broker":
        from broker_client.integrations.dna import BrokerAuthProvider

        return BrokerAuthProvider.from_env()

`validate_token` returns every claim of the token (`email`, `sub`, `name`, `sg_login`,
`sg_user_id`, `scope`, `sid`, `fam`, `aud`, `exp`, ...) and raises `ValueError`
subclasses (`InvalidToken`, `TokenRevoked`) for tokens to refuse, as DNA's interface
asks. When the broker's keys cannot be had (or, fail-closed, its revocations) it raises
`BrokerUnavailable`: Starlette's `HTTPException` (so FastAPI answers 503 with
`Retry-After` by itself) and a `JWKSUnavailable`, never a `ValueError` and never a 500.

The validator checks the broker's revocation feed (`BROKER_REVOCATION_POLL` seconds,
default 5) and does all its network work on a background thread: DNA's async
dependency calls the sync `validate_token`, which then only reads memory.
`user_shotgrid(claims)` gives a shotgun_api3 connection acting as the token's user.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx

from ..shotgrid import SudoConnectionPool
from ..validator import TokenValidator
from ..verify import REQUIRED_CLAIMS, AccessTokenClaims, InvalidClaim, JWKSUnavailable

__all__ = [
    "ENV_AUDIENCE",
    "ENV_FAIL_CLOSED",
    "ENV_ISSUER",
    "ENV_LEEWAY",
    "ENV_REVOCATION_POLL",
    "ENV_SHOTGRID_API_KEY",
    "ENV_SHOTGRID_SCRIPT_NAME",
    "ENV_SHOTGRID_URL",
    "BrokerAuthProvider",
    "BrokerUnavailable",
]

ENV_ISSUER = "BROKER_ISSUER"
ENV_AUDIENCE = "BROKER_AUDIENCE"
ENV_LEEWAY = "BROKER_LEEWAY"
ENV_REVOCATION_POLL = "BROKER_REVOCATION_POLL"
ENV_FAIL_CLOSED = "BROKER_REVOCATION_FAIL_CLOSED"
# DNA's own names for its ShotGrid script credentials (its ShotGrid provider reads them).
ENV_SHOTGRID_URL = "SHOTGRID_URL"
ENV_SHOTGRID_SCRIPT_NAME = "SHOTGRID_SCRIPT_NAME"
ENV_SHOTGRID_API_KEY = "SHOTGRID_API_KEY"

if TYPE_CHECKING:
    _Base = object

    class _HTTPException(Exception):
        def __init__(
            self, status_code: int, detail: Any = None, headers: dict[str, str] | None = None
        ) -> None: ...

else:  # inside DNA, be a real subclass so isinstance checks and type hints agree
    try:
        from dna.auth_providers.auth_provider_base import AuthProviderBase as _Base
    except ImportError:
        _Base = object
    try:
        # FastAPI's HTTPException subclasses this one; FastAPI handles both alike.
        from starlette.exceptions import HTTPException as _HTTPException
    except ImportError:

        class _HTTPException(Exception):
            """Without Starlette: the same attributes, for the application to map."""

            def __init__(self, status_code, detail=None, headers=None):
                super().__init__(detail)
                self.status_code = status_code
                self.detail = detail
                self.headers = headers


class BrokerUnavailable(_HTTPException, JWKSUnavailable):
    """The broker's keys (or, fail-closed, its revocations) cannot be had: 503.

    An HTTP exception that Starlette/FastAPI answer as 503 with `Retry-After`, and a
    `JWKSUnavailable` for code that catches that; never a `ValueError`, so DNA's
    `except ValueError` (its 401) does not swallow it.
    """

    def __init__(self, cause: JWKSUnavailable) -> None:
        retry_after = cause.retry_after
        headers = {"Retry-After": str(retry_after)}
        _HTTPException.__init__(self, 503, "authentication is temporarily unavailable", headers)
        self.retry_after = retry_after
        self.cause = cause

    def __str__(self) -> str:
        return f"503: {self.cause}"


def _number(env: Mapping[str, str], name: str, default: str) -> float:
    try:
        value = float(env.get(name, "").strip() or default)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds") from None
    if value < 0:
        raise ValueError(f"{name} must be a number of seconds") from None
    return value


class BrokerAuthProvider(_Base):
    def __init__(
        self, validator: TokenValidator, *, shotgrid: SudoConnectionPool | None = None
    ) -> None:
        self.validator = validator
        self._shotgrid = shotgrid
        self._shotgrid_env: Mapping[str, str] = {}
        self._shotgrid_lock = threading.Lock()

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        http_client: httpx.Client | None = None,
        ready_timeout: float | None = None,
    ) -> BrokerAuthProvider:
        """Build from the environment (README: "DNA") and wait, at most the validator's
        `startup_wait`, for the first key set and revocation feed read: DNA builds its
        provider in a threadpool dependency, so the wait blocks no event loop.

        BROKER_ISSUER (required), BROKER_AUDIENCE (default dna-api), BROKER_LEEWAY
        (seconds, default 30), BROKER_REVOCATION_POLL (seconds, default 5),
        BROKER_REVOCATION_FAIL_CLOSED (1/true: refuse every token while the feed is
        unreadable; default off); SHOTGRID_URL, SHOTGRID_SCRIPT_NAME, SHOTGRID_API_KEY
        for `user_shotgrid`.
        """
        env = os.environ if environ is None else environ
        issuer = env.get(ENV_ISSUER, "").strip()
        if not issuer:
            raise ValueError(f"{ENV_ISSUER} must be set to the broker's issuer URL")
        audience = env.get(ENV_AUDIENCE, "").strip() or "dna-api"
        leeway = _number(env, ENV_LEEWAY, "30")
        poll = _number(env, ENV_REVOCATION_POLL, "5")
        if poll <= 0:
            raise ValueError(f"{ENV_REVOCATION_POLL} must be a number of seconds above 0")
        fail_closed = env.get(ENV_FAIL_CLOSED, "").strip().lower() in ("1", "true", "yes", "on")
        validator = TokenValidator(
            issuer,
            audience,
            http_client=http_client,
            leeway=leeway,
            required_claims=REQUIRED_CLAIMS | {"email"},
            revocations=True,
            poll=poll,
            fail_closed=fail_closed,
        )
        provider = cls(validator)
        provider._shotgrid_env = {
            name: env.get(name, "").strip()
            for name in (ENV_SHOTGRID_URL, ENV_SHOTGRID_SCRIPT_NAME, ENV_SHOTGRID_API_KEY)
        }
        validator.refresher.ready.wait(
            validator.startup_wait if ready_timeout is None else ready_timeout
        )
        return provider

    # --- DNA's AuthProviderBase ---------------------------------------------------------

    def validate_token(self, token: str) -> dict[str, Any]:
        """Every claim of a valid token; `ValueError` for a token to refuse,
        `BrokerUnavailable` (503) when it cannot be told right now."""
        try:
            claims = self.validator.validate(token)
        except JWKSUnavailable as exc:
            raise BrokerUnavailable(exc) from exc
        return self._claims(claims)

    async def avalidate_token(self, token: str) -> dict[str, Any]:
        """`validate_token` for async callers: waits (bounded) without blocking the loop."""
        try:
            claims = await self.validator.avalidate(token)
        except JWKSUnavailable as exc:
            raise BrokerUnavailable(exc) from exc
        return self._claims(claims)

    @staticmethod
    def _claims(claims: AccessTokenClaims) -> dict[str, Any]:
        if not claims.email:
            raise InvalidClaim("email")
        return dict(claims.raw)

    def get_user_email(self, token: str) -> str:
        email: str = self.validate_token(token)["email"]
        return email

    # --- ShotGrid as the user -------------------------------------------------------------

    @contextlib.contextmanager
    def user_shotgrid(self, claims: Mapping[str, Any] | AccessTokenClaims) -> Iterator[Any]:
        """A shotgun_api3 connection acting as the token's user (`sudo_as_login` =
        its `sg_login`), for this block: ShotGrid applies that user's permissions.

        `claims` is what `validate_token` returned. Connections come from one
        `SudoConnectionPool` (DNA's script credentials), reconnecting reads once when
        ShotGrid closed an idle connection.
        """
        login = claims.sg_login if isinstance(claims, AccessTokenClaims) else claims.get("sg_login")
        if not isinstance(login, str) or not login:
            raise InvalidClaim("sg_login", "the token names no ShotGrid login")
        with self.shotgrid_pool().connection(login) as sg:
            yield sg

    def shotgrid_pool(self) -> SudoConnectionPool:
        with self._shotgrid_lock:
            if self._shotgrid is None:
                env = self._shotgrid_env
                missing = [name for name, value in env.items() if not value] or (
                    [] if env else [ENV_SHOTGRID_URL]
                )
                if missing:
                    raise RuntimeError(
                        "user_shotgrid needs " + ", ".join(sorted(missing)) + " to be set"
                    )
                self._shotgrid = SudoConnectionPool(
                    env[ENV_SHOTGRID_URL],
                    env[ENV_SHOTGRID_SCRIPT_NAME],
                    env[ENV_SHOTGRID_API_KEY],
                )
            return self._shotgrid

    def close(self) -> None:
        self.validator.close()
        if self._shotgrid is not None:
            self._shotgrid.close()
