"""Reach ShotGrid as the token's user.

- `SudoConnectionPool`: shotgun_api3 connections made with the service's script key and
  `sudo_as_login=claims.sg_login`, so ShotGrid applies that user's permissions; nothing
  of the user's is kept. Connections are not thread-safe, so they are checked out
  (`with pool.connection(claims) as sg:`) and idle ones are kept in a bounded LRU.
- `exchange_for_shotgrid_token`: RFC 8693 token exchange at the broker for a ShotGrid
  REST bearer token acting as the user (CONTRACT.md, "Token exchange").
"""

from __future__ import annotations

import base64
import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import httpx

from .verify import AccessTokenClaims, BrokerClientError, InvalidClaim

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "SHOTGRID_TOKEN_TYPE",
    "TOKEN_EXCHANGE_GRANT",
    "ShotGridToken",
    "SudoConnectionPool",
    "TokenExchangeError",
    "aexchange_for_shotgrid_token",
    "exchange_for_shotgrid_token",
]

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
SHOTGRID_TOKEN_TYPE = "urn:shotgrid:params:oauth:token-type:access_token"

ConnectionFactory = Callable[[str], Any]
"""Makes a connection acting as the given ShotGrid login."""


class SudoConnectionPool:
    """Thread-safe pool of ShotGrid connections acting as users, LRU-bounded when idle."""

    def __init__(
        self,
        base_url: str,
        script_name: str,
        api_key: str,
        *,
        max_idle: int = 64,
        factory: ConnectionFactory | None = None,
        **shotgun_options: Any,
    ) -> None:
        self.base_url = base_url
        self.script_name = script_name
        self._api_key = api_key
        self.max_idle = max_idle
        self._shotgun_options = shotgun_options
        self._factory = factory or self._shotgun
        self._idle: OrderedDict[tuple[str, int], Any] = OrderedDict()  # (login, n) -> conn
        self._serial = 0
        self._lock = threading.Lock()
        self.created = 0

    def _shotgun(self, login: str) -> Any:
        from shotgun_api3.shotgun import Shotgun  # the `shotgrid` extra

        return Shotgun(
            self.base_url,
            script_name=self.script_name,
            api_key=self._api_key,
            sudo_as_login=login,
            **self._shotgun_options,
        )

    @contextlib.contextmanager
    def connection(self, who: AccessTokenClaims | str) -> Iterator[Any]:
        """A connection acting as the token's user (or a login), for this block only."""
        login = who if isinstance(who, str) else who.sg_login
        if not login:
            raise InvalidClaim("sg_login", "the token names no ShotGrid login")
        conn = self._checkout(login)
        try:
            yield conn
        finally:
            self._checkin(login, conn)

    def _checkout(self, login: str) -> Any:
        with self._lock:
            for key in reversed(self._idle):  # most recently returned first
                if key[0] == login:
                    return self._idle.pop(key)
            self.created += 1
        return self._factory(login)

    def _checkin(self, login: str, conn: Any) -> None:
        evicted = []
        with self._lock:
            self._serial += 1
            self._idle[(login, self._serial)] = conn
            while len(self._idle) > self.max_idle:
                evicted.append(self._idle.popitem(last=False)[1])
        for old in evicted:
            _close(old)

    def idle_logins(self) -> list[str]:
        with self._lock:
            return [login for login, _ in self._idle]

    def close(self) -> None:
        with self._lock:
            idle, self._idle = list(self._idle.values()), OrderedDict()
        for conn in idle:
            _close(conn)


def _close(conn: Any) -> None:
    close = getattr(conn, "close", None)
    if callable(close):
        with contextlib.suppress(Exception):
            close()


# --- RFC 8693 token exchange --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShotGridToken:
    access_token: str
    token_type: str
    issued_token_type: str
    expires_in: int | None

    def authorization_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


class TokenExchangeError(BrokerClientError):
    """The broker refused the exchange (RFC 6749 §5.2 `error`) or could not be reached."""

    def __init__(self, error: str, description: str | None = None, status_code: int = 0):
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.description = description
        self.status_code = status_code


def _exchange_request(
    issuer: str, subject_token: str, client_id: str, client_secret: str
) -> tuple[str, dict[str, str], dict[str, str]]:
    # client_secret_basic: RFC 6749 §2.3.1 form-encodes both parts before base64.
    userpass = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
    headers = {
        "Accept": "application/json",
        "Authorization": "Basic " + base64.b64encode(userpass).decode("ascii"),
    }
    form = {
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "subject_token": subject_token,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "requested_token_type": SHOTGRID_TOKEN_TYPE,
    }
    return issuer.rstrip("/") + "/token", headers, form


def _exchange_response(response: httpx.Response) -> ShotGridToken:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise TokenExchangeError("invalid_response", "not a JSON object", response.status_code)
    if response.status_code != 200:
        error = body.get("error")
        description = body.get("error_description")
        raise TokenExchangeError(
            error if isinstance(error, str) else "server_error",
            description if isinstance(description, str) else None,
            response.status_code,
        )
    token, kind = body.get("access_token"), body.get("issued_token_type")
    token_type, expires_in = body.get("token_type"), body.get("expires_in")
    if not isinstance(token, str) or kind != SHOTGRID_TOKEN_TYPE:
        raise TokenExchangeError("invalid_response", "no ShotGrid access token", 200)
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise TokenExchangeError("invalid_response", "token_type is not Bearer", 200)
    return ShotGridToken(
        token, token_type, kind, expires_in if isinstance(expires_in, int) else None
    )


def exchange_for_shotgrid_token(
    subject_token: str,
    *,
    issuer: str,
    client_id: str,
    client_secret: str,
    http_client: httpx.Client | None = None,
) -> ShotGridToken:
    """Trade a broker access token for a ShotGrid REST token acting as its user."""
    url, headers, form = _exchange_request(issuer, subject_token, client_id, client_secret)
    client = http_client or httpx.Client(timeout=10.0)
    try:
        response = client.post(url, data=form, headers=headers)
    except httpx.HTTPError as exc:
        raise TokenExchangeError("temporarily_unavailable", str(exc)) from exc
    finally:
        if http_client is None:
            client.close()
    return _exchange_response(response)


async def aexchange_for_shotgrid_token(
    subject_token: str,
    *,
    issuer: str,
    client_id: str,
    client_secret: str,
    http_client: httpx.AsyncClient | None = None,
) -> ShotGridToken:
    url, headers, form = _exchange_request(issuer, subject_token, client_id, client_secret)
    client = http_client or httpx.AsyncClient(timeout=10.0)
    try:
        response = await client.post(url, data=form, headers=headers)
    except httpx.HTTPError as exc:
        raise TokenExchangeError("temporarily_unavailable", str(exc)) from exc
    finally:
        if http_client is None:
            await client.aclose()
    return _exchange_response(response)
