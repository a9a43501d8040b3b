"""Reach ShotGrid as the token's user.

- `SudoConnectionPool`: shotgun_api3 connections made with the service's script key and
  `sudo_as_login=claims.sg_login`, so ShotGrid applies that user's permissions; nothing
  of the user's is kept. Connections are not thread-safe, so they are checked out
  (`with pool.connection(claims) as sg:`) and idle ones are kept in a bounded LRU.
  A connection the server closed while it sat idle (keep-alive expiry: BrokenPipeError,
  a reset, RemoteDisconnected) is reconnected once for reads (`READ_METHODS`), which
  are safe to repeat; writes (everything else: `create`, `update`, `batch`, ...) are
  never retried, since a write the server did receive must not be applied twice.
- `exchange_for_shotgrid_token`: RFC 8693 token exchange at the broker for a ShotGrid
  REST bearer token acting as the user (CONTRACT.md, "Token exchange").
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote_plus

import httpx

from .verify import AccessTokenClaims, BrokerClientError, InvalidClaim

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "READ_METHODS",
    "SHOTGRID_TOKEN_TYPE",
    "TOKEN_EXCHANGE_GRANT",
    "WRITE_METHODS",
    "ReconnectingConnection",
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

# shotgun_api3 methods that only read: repeating one changes nothing on the server.
READ_METHODS: Final = frozenset(
    {
        "info",
        "find",
        "find_one",
        "summarize",
        "text_search",
        "schema_read",
        "schema_entity_read",
        "schema_field_read",
        "work_schedule_read",
        "note_thread_read",
        "activity_stream_read",
        "following",
        "followers",
        "preferences_read",
        "user_subscriptions_read",
        "nav_expand",
        "nav_search_string",
        "nav_search_entity",
    }
)
# Documented for readers: these (and any method not in READ_METHODS) are never retried.
WRITE_METHODS: Final = frozenset(
    {
        "create",
        "update",
        "delete",
        "revive",
        "batch",
        "upload",
        "upload_thumbnail",
        "upload_filmstrip_thumbnail",
        "share_thumbnail",
        "follow",
        "unfollow",
        "schema_field_create",
        "schema_field_update",
        "schema_field_delete",
        "work_schedule_update",
        "update_project_last_accessed",
        "user_subscriptions_create",
    }
)
# What a connection the server closed while idle raises on its next use. Timeouts are
# not in it (TimeoutError is no ConnectionError): a slow server is not a closed socket.
_CLOSED_CONNECTION: Final = (ConnectionError, http.client.HTTPException, ssl.SSLError)


class ReconnectingConnection:
    """A shotgun_api3 connection whose reads survive a server-closed idle connection.

    Attribute access goes to the wrapped connection (`.connection`); the methods in
    `READ_METHODS` get one reconnect and retry when the first try fails with a closed
    connection. `reconnects` counts those retries.
    """

    __slots__ = ("connection", "reconnects")

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.reconnects = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.connection, name)
        if name in READ_METHODS and callable(attr):

            def read(*args: Any, **kwargs: Any) -> Any:
                try:
                    return attr(*args, **kwargs)
                except _CLOSED_CONNECTION:
                    _drop_socket(self.connection)
                    self.reconnects += 1
                    return getattr(self.connection, name)(*args, **kwargs)

            return read
        return attr

    def __repr__(self) -> str:
        return f"ReconnectingConnection({self.connection!r})"


def _drop_socket(conn: Any) -> None:
    """Forget the connection's HTTP socket so the next call opens a new one.
    (shotgun_api3 does this itself when a call fails; doing it again is harmless.)"""
    drop = getattr(conn, "_close_connection", None)
    if callable(drop):
        with contextlib.suppress(Exception):
            drop()


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

        sg = Shotgun(
            self.base_url,
            script_name=self.script_name,
            api_key=self._api_key,
            sudo_as_login=login,
            **self._shotgun_options,
        )
        # shotgun_api3 retries TLS errors itself, writes included, 3 s apart; a write
        # must never be sent twice, so its retries are off and reads get ours instead.
        sg.config.max_rpc_attempts = 1
        return sg

    @contextlib.contextmanager
    def connection(self, who: AccessTokenClaims | str) -> Iterator[Any]:
        """A connection acting as the token's user (or a login), for this block only:
        a `ReconnectingConnection` around the factory's connection."""
        login = who if isinstance(who, str) else who.sg_login
        if not login:
            raise InvalidClaim("sg_login", "the token names no ShotGrid login")
        conn = self._checkout(login)
        try:
            yield ReconnectingConnection(conn)
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
