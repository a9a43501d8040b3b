"""The two-factor step of a Legacy Login on the broker's pages.

ShotGrid checks a two-factor code only together with the password (api3
`get_session_token` with `auth_token`, research §3.2), so between the password step and
the code step the page carries both, sealed: AES-256-GCM under the broker's key-encryption
key (`Sealer`), bound to the browser's CSRF cookie and to the request the page belongs to
(associated data), with a lifetime of `STATE_TTL`. A state copied to another browser or
another request does not open, a forged one does not authenticate, an old one has expired;
the password is never in clear in the page. One state allows `MAX_CODES` codes and signs in
once (a store lease taken at success), so a replayed state cannot sign in again.

Throttling follows the password's (`broker.throttle`): an attempt is reserved before
ShotGrid is called, a wrong code counts as a failed login, a right one settles it as a
success, ShotGrid unreachable gives the slot back.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import timedelta
from typing import Any, Protocol

from broker.clock import Clock, now_ms
from broker.events import audit
from broker.store import CounterStore, LeaseStore
from broker.throttle import LoginThrottle, Throttled
from broker.tokens.crypto import DecryptionError, Sealer
from broker.tokens.secrets import new_token_id, sha256_b64
from broker.upstream import (
    InvalidTwoFactorCode,
    LoginResult,
    TwoFactorUpstream,
    UpstreamUnavailable,
)

STATE_TTL = timedelta(minutes=5)
"""How long the code step stays open after a right password."""

MAX_CODES = 5
"""Codes one state may try before the password is asked again."""

CODE_DIGITS = 6


class TwoFactorStateError(Exception):
    """The sealed state of the code step cannot be used; the person starts again."""


class StateInvalid(TwoFactorStateError):
    """Forged, corrupt, or sealed for another browser or request."""


class StateExpired(TwoFactorStateError):
    """Older than STATE_TTL."""


class StateUsedUp(TwoFactorStateError):
    """It signed in already, or tried MAX_CODES codes."""


class MalformedCode(ValueError):
    """Not six digits (spaces allowed): ShotGrid is not asked."""


class TwoFactorStore(CounterStore, LeaseStore, Protocol):
    """What the two-factor step needs of a store."""


def normalize_code(code: str) -> str:
    """The code as ShotGrid wants it: digits only, spaces and dashes dropped."""
    digits = "".join(ch for ch in code if ch not in " -\t")
    if len(digits) != CODE_DIGITS or not digits.isascii() or not digits.isdigit():
        raise MalformedCode("an authentication code is 6 digits")
    return digits


class TwoFactor:
    """Synchronous (store and ShotGrid calls): use it from a worker thread."""

    def __init__(
        self,
        sealer: Sealer,
        store: TwoFactorStore,
        upstream: TwoFactorUpstream,
        throttle: LoginThrottle,
        clock: Clock,
    ) -> None:
        self.sealer = sealer
        self.store = store
        self.upstream = upstream
        self.throttle = throttle
        self.clock = clock

    def seal(self, username: str, password: str, binding: str) -> str:
        """The state the code step's page carries (base64url text)."""
        expires = int((now_ms(self.clock) + STATE_TTL).timestamp())
        plain = json.dumps({"u": username, "p": password, "exp": expires}).encode()
        blob = self.sealer.seal(plain, _aad(binding))
        return base64.urlsafe_b64encode(blob).decode().rstrip("=")

    def username(self, state: str, binding: str) -> str:
        """Whose code step this is (to show the page again); TwoFactorStateError else."""
        return self._open(state, binding)[0]

    def verify(
        self,
        state: str,
        binding: str,
        code: str,
        *,
        ip: str | None,
        client_id: str | None,
    ) -> LoginResult:
        """Sign in with the state's credentials and `code`. Raises TwoFactorStateError,
        MalformedCode, TooManyRequestsError (throttled), InvalidTwoFactorCode (counted as a
        failed login), the other upstream errors of a login, or UpstreamUnavailable."""
        username, password = self._open(state, binding)
        digits = normalize_code(code)
        now = now_ms(self.clock)
        key = sha256_b64(state)
        if self.store.reserve(f"2fa-state:{key}", now, STATE_TTL, MAX_CODES) is None:
            raise StateUsedUp("too many codes for this sign-in")
        who: dict[str, Any] = {"client_id": client_id, "ip": ip, "method": "two_factor"}
        try:
            attempt = self.throttle.reserve(username, ip)
        except Throttled as exc:
            audit("login", outcome="throttled", login=username, limit=exc.limit, **who)
            raise
        # Settled below; any other refusal (a disabled account, ...) counts as failed.
        with attempt:
            try:
                result = self.upstream.two_factor_login(username, password, digits)
            except InvalidTwoFactorCode:
                attempt.failed()
                audit(
                    "login", outcome="failure", login=username, reason="InvalidTwoFactorCode", **who
                )
                raise
            except UpstreamUnavailable:
                attempt.released()
                audit("login", outcome="unavailable", login=username, **who)
                raise
            finally:
                del password
            # Signs in once: of two uses of one state (a replay), only the first gets here.
            if not self.store.try_lease(f"2fa-done:{key}", new_token_id(), now, STATE_TTL):
                attempt.released()
                raise StateUsedUp("this sign-in was already completed")
            attempt.succeeded()
        audit("login", user_id=result.identity.user_id, login=result.identity.login, **who)
        return result

    def _open(self, state: str, binding: str) -> tuple[str, str]:
        if not state or len(state) > 4096:
            raise StateInvalid("no state")
        try:
            blob = base64.urlsafe_b64decode(state + "=" * (-len(state) % 4))
            data = json.loads(self.sealer.open(blob, _aad(binding)))
            username, password, expires = data["u"], data["p"], data["exp"]
        except (binascii.Error, ValueError, DecryptionError, KeyError, TypeError):
            raise StateInvalid("the state does not open here") from None
        if not isinstance(username, str) or not isinstance(password, str):
            raise StateInvalid("malformed state")
        if not isinstance(expires, int) or expires <= now_ms(self.clock).timestamp():
            raise StateExpired("the code step has expired")
        return username, password


def _aad(binding: str) -> str:
    return f"two-factor:{binding}"
