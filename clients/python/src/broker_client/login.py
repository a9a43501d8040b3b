"""Sign a person in from a command-line tool or a DCC plug-in (Maya, Nuke, Houdini, RV)
with the broker's device flow (OAuth 2.0 Device Authorization Grant, RFC 8628), and keep
their tokens for next time. No password ever passes through the tool.

    from broker_client.login import DeviceLogin

    login = DeviceLogin("https://auth.studio.example", "dna-cli")
    token = login.access_token()  # cached, refreshed, or a new sign-in

A new sign-in shows the person a URL and a code (printed to stderr by default; pass
`on_prompt` to show them in a dialog), then polls the broker at the pace it asks for
(`interval`, plus 5 s at each `slow_down`, backing off when the broker is unreachable)
until the person approves or denies in their browser, or the code expires. Tokens go to
the per-user cache (`broker_client.tokencache`): the next call, in this process or the
next one, reuses the access token while it lasts and refreshes it (rotating the refresh
token) when it does not, under the cache's lock so concurrent processes refresh once.

Blocking by design; run it on a worker thread in a GUI and pass `cancel` (a
`threading.Event`) to stop waiting.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from .tokencache import TokenCache, Tokens
from .verify import BrokerClientError

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_SCOPE = "openid profile email offline_access"
SLOW_DOWN_STEP = 5
MAX_BACKOFF = 60.0
EXPIRED = "The sign-in code expired: run the sign-in again."


class LoginError(BrokerClientError):
    """The sign-in did not happen. `error` is the OAuth error code when the broker gave
    one; the message is safe to show to the person."""

    def __init__(self, message: str, error: str | None = None) -> None:
        super().__init__(message)
        self.error = error


class LoginDenied(LoginError):
    """The person denied the request on the verification page (`access_denied`)."""


class LoginExpired(LoginError):
    """The code expired before anyone approved it (`expired_token`)."""


class LoginCancelled(LoginError):
    """`cancel` was set while waiting."""


class LoginRequired(LoginError):
    """No usable tokens, and `interactive=False` forbade a new sign-in."""


@dataclass(frozen=True, slots=True)
class DevicePrompt:
    """What the person must do: open `verification_uri` and enter `user_code`, or open
    `verification_uri_complete` and check that it shows the same code."""

    verification_uri: str
    user_code: str
    expires_in: int
    verification_uri_complete: str | None = None

    def text(self) -> str:
        lines = [f"To sign in, open {self.verification_uri} and enter the code {self.user_code}"]
        if self.verification_uri_complete:
            lines.append(
                f"(or open {self.verification_uri_complete} and check it shows {self.user_code})."
            )
        minutes = max(1, self.expires_in // 60)
        lines.append(f"Waiting for your approval (the code works for {minutes} minutes)...")
        return "\n".join(lines)


def print_prompt(prompt: DevicePrompt) -> None:
    """The default `on_prompt`: to stderr, so stdout stays for the tool's output."""
    print(prompt.text(), file=sys.stderr, flush=True)


class DeviceLogin:
    """One person's sign-in to one client of one broker.

    `cache`: a TokenCache (default: the per-user file), or None to keep nothing.
    `sleep`: how to wait between polls (default: `cancel.wait`, or `time.sleep`); tests
    and event-loop integrations replace it.
    """

    def __init__(
        self,
        issuer: str,
        client_id: str,
        *,
        scope: str = DEFAULT_SCOPE,
        cache: TokenCache | bool | None = True,
        http_client: httpx.Client | None = None,
        on_prompt: Callable[[DevicePrompt], None] = print_prompt,
        cancel: threading.Event | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.time,
        refresh_margin: float = 60.0,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.scope = scope
        if cache is True:
            self.cache: TokenCache | None = TokenCache()
        elif cache is False:
            self.cache = None
        else:
            self.cache = cache
        self._owns_http = http_client is None
        self.http = http_client or httpx.Client(timeout=httpx.Timeout(10.0), follow_redirects=False)
        self.on_prompt = on_prompt
        self.cancel = cancel
        self._sleep = sleep
        self.clock = clock
        self.refresh_margin = refresh_margin
        self._metadata: dict[str, Any] | None = None

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> DeviceLogin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what callers use ----------------------------------------------------------------------
    def access_token(self, *, interactive: bool = True) -> str:
        """A usable access token: cached, refreshed, or from a new sign-in."""
        return self.tokens(interactive=interactive).access_token

    def tokens(self, *, interactive: bool = True) -> Tokens:
        cached = self._cached_or_refreshed()
        if cached is not None:
            return cached
        if not interactive:
            raise LoginRequired("Not signed in: run the sign-in again.")
        # The device flow waits for a person (minutes): never under the cache's lock.
        fresh = self.sign_in()
        if self.cache is not None:
            self.cache.put(self.issuer, self.client_id, fresh)
        return fresh

    def sign_in(self) -> Tokens:
        """A new sign-in with the device flow (nothing is read from or written to the
        cache): prompt, then poll until approved, denied, expired or cancelled."""
        meta = self.metadata()
        endpoint = meta.get("device_authorization_endpoint")
        if not isinstance(endpoint, str):
            raise LoginError("This broker does not offer the device flow.")
        body = self._post(endpoint, {"client_id": self.client_id, "scope": self.scope})
        if "error" in body:
            raise LoginError(_describe(body), str(body["error"]))
        try:
            device_code = str(body["device_code"])
            prompt = DevicePrompt(
                verification_uri=str(body["verification_uri"]),
                user_code=str(body["user_code"]),
                expires_in=int(body.get("expires_in") or 600),
                verification_uri_complete=body.get("verification_uri_complete"),
            )
        except (KeyError, TypeError, ValueError):
            raise LoginError("The broker answered a malformed device authorization.") from None
        self.on_prompt(prompt)
        interval = float(body.get("interval") or 5)  # RFC 8628 §3.2: 5 when absent
        deadline = self.clock() + prompt.expires_in
        backoff = interval
        while True:
            self._wait(backoff)
            if self.clock() > deadline:
                raise LoginExpired(
                    "The sign-in code expired: run the sign-in again.", "expired_token"
                )
            try:
                answer = self._token_request(
                    {
                        "grant_type": DEVICE_GRANT,
                        "device_code": device_code,
                        "client_id": self.client_id,
                    }
                )
            except _Unreachable:
                backoff = min(MAX_BACKOFF, backoff * 2)  # RFC 8628 §3.5: back off
                continue
            error = answer.get("error")
            if error is None:
                return Tokens.from_response(answer, self.clock())
            if error == "authorization_pending":
                backoff = interval
            elif error == "slow_down":
                interval += SLOW_DOWN_STEP
                backoff = interval
            elif error == "temporarily_unavailable":
                backoff = min(MAX_BACKOFF, max(backoff * 2, interval))
            elif error == "access_denied":
                raise LoginDenied("The sign-in was denied in the browser.", "access_denied")
            elif error == "expired_token":
                raise LoginExpired(EXPIRED, error)
            else:
                raise LoginError(_describe(answer), str(error))

    def logout(self) -> None:
        """Forget the cached tokens and revoke the refresh token at the broker (best
        effort: the cache entry goes whatever the broker answers)."""
        if self.cache is None:
            return
        with self.cache.lock():
            cached = self.cache.get(self.issuer, self.client_id)
            self.cache.delete(self.issuer, self.client_id)
        if cached is not None and cached.refresh_token:
            endpoint = self.metadata().get("revocation_endpoint")
            if isinstance(endpoint, str):
                with contextlib.suppress(httpx.HTTPError):
                    self.http.post(
                        endpoint,
                        data={
                            "token": cached.refresh_token,
                            "token_type_hint": "refresh_token",
                            "client_id": self.client_id,
                        },
                    )

    def metadata(self) -> dict[str, Any]:
        """The broker's RFC 8414 metadata (fetched once)."""
        if self._metadata is None:
            url = f"{self.issuer}/.well-known/oauth-authorization-server"
            try:
                response = self.http.get(url)
                data = response.json()
            except (httpx.HTTPError, ValueError):
                raise LoginError(f"Cannot reach the broker at {self.issuer}.") from None
            if response.status_code != 200 or not isinstance(data, dict):
                raise LoginError(f"{self.issuer} does not look like a token broker.")
            self._metadata = data
        return self._metadata

    # --- helpers ---------------------------------------------------------------------------------
    def _cached_or_refreshed(self) -> Tokens | None:
        if self.cache is None:
            return None
        with self.cache.lock():
            cached = self.cache.get(self.issuer, self.client_id)
            if cached is None:
                return None
            if cached.fresh(self.clock(), self.refresh_margin):
                return cached
            if not cached.refresh_token:
                return None
            try:
                answer = self._token_request(
                    {
                        "grant_type": "refresh_token",
                        "refresh_token": cached.refresh_token,
                        "client_id": self.client_id,
                    }
                )
            except _Unreachable:
                if cached.fresh(self.clock(), 0):
                    return cached  # still valid for a little while
                raise LoginError(f"Cannot reach the broker at {self.issuer}.") from None
            if "error" in answer:
                if answer["error"] == "temporarily_unavailable" and cached.fresh(self.clock(), 0):
                    return cached
                # Expired, revoked or reused: this sign-in is over; a new one is needed.
                self.cache.delete(self.issuer, self.client_id)
                return None
            fresh = Tokens.from_response(answer, self.clock())
            if fresh.refresh_token is None:
                fresh = Tokens(**{**_fields(fresh), "refresh_token": cached.refresh_token})
            self.cache.put(self.issuer, self.client_id, fresh)
            return fresh

    def _token_request(self, data: dict[str, str]) -> dict[str, Any]:
        endpoint = self.metadata().get("token_endpoint")
        if not isinstance(endpoint, str):
            raise LoginError("The broker's metadata has no token endpoint.")
        return self._post(endpoint, data)

    def _post(self, url: str, data: dict[str, str]) -> dict[str, Any]:
        try:
            response = self.http.post(url, data=data, headers={"Accept": "application/json"})
        except httpx.HTTPError:
            raise _Unreachable from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            if response.status_code >= 500:
                raise _Unreachable
            raise LoginError(f"The broker answered HTTP {response.status_code}.")
        return body

    def _wait(self, seconds: float) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise LoginCancelled("The sign-in was cancelled.")
        if self._sleep is not None:
            self._sleep(seconds)
        elif self.cancel is not None:
            self.cancel.wait(seconds)
        else:
            time.sleep(seconds)
        if self.cancel is not None and self.cancel.is_set():
            raise LoginCancelled("The sign-in was cancelled.")


class _Unreachable(Exception):
    """The broker did not answer (transport error or a non-JSON 5xx)."""


def _describe(body: dict[str, Any]) -> str:
    description = body.get("error_description")
    return str(description) if description else f"The broker refused: {body.get('error')}"


def _fields(tokens: Tokens) -> dict[str, Any]:
    return {name: getattr(tokens, name) for name in Tokens.__slots__}


def access_token(issuer: str, client_id: str, **kwargs: Any) -> str:
    """`DeviceLogin(issuer, client_id, **kwargs).access_token()` in one call."""
    with DeviceLogin(issuer, client_id, **kwargs) as login:
        return login.access_token()


__all__ = [
    "DEFAULT_SCOPE",
    "DeviceLogin",
    "DevicePrompt",
    "LoginCancelled",
    "LoginDenied",
    "LoginError",
    "LoginExpired",
    "LoginRequired",
    "TokenCache",
    "Tokens",
    "access_token",
    "print_prompt",
]
