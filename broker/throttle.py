"""Failed-login throttling, shared by the password grant and the login page.

Counted in the store (fixed windows, `Store.hit_counter`), so every broker process and
replica sees the same counts; checked *before* ShotGrid is called, so a guessing attack
never reaches ShotGrid and never locks the user's ShotGrid account (OWASP ASVS V2.2.1).
Counters are kept per username and per client IP; an unknown username is counted exactly
like a known one, so the throttle reveals nothing about which accounts exist.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from broker.clock import Clock, now_ms
from broker.errors import TooManyRequestsError
from broker.settings import Settings
from broker.store import CounterStore
from broker.tokens.secrets import sha256_b64


def _user_key(username: str) -> str:
    # ShotGrid logins are case-insensitive; the hash keeps logins out of the store.
    return "login-fail:user:" + sha256_b64(username.strip().lower())


def _ip_key(ip: str) -> str:
    return "login-fail:ip:" + ip


def message(retry_after: int) -> str:
    minutes = max(1, (retry_after + 59) // 60)
    unit = "minute" if minutes == 1 else "minutes"
    return (
        f"Too many failed sign-in attempts. Wait {minutes} {unit} and try again, or ask "
        "your ShotGrid administrator if you forgot your password."
    )


class LoginThrottle:
    """Synchronous (store calls): use it from the threadpool."""

    def __init__(self, store: CounterStore, settings: Settings, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.window = timedelta(seconds=settings.login_failure_window)
        self.max_user = settings.login_max_failures_per_user
        self.max_ip = settings.login_max_failures_per_ip

    def now(self) -> datetime:
        return now_ms(self.clock)

    def check(self, username: str, ip: str | None) -> None:
        """Raise TooManyRequestsError (429, Retry-After) when either counter is full."""
        now = self.now()
        blocked = self.store.get_counter(_user_key(username), now, self.window) >= self.max_user
        if not blocked and ip:
            blocked = self.store.get_counter(_ip_key(ip), now, self.window) >= self.max_ip
        if blocked:
            retry_after = int(self.window.total_seconds())
            raise TooManyRequestsError(message(retry_after), retry_after=retry_after)

    def failed(self, username: str, ip: str | None) -> None:
        now = self.now()
        self.store.hit_counter(_user_key(username), now, self.window)
        if ip:
            self.store.hit_counter(_ip_key(ip), now, self.window)

    def succeeded(self, username: str) -> None:
        """A correct password clears the username's count (not the IP's: one success must
        not launder an address that is guessing at many accounts)."""
        self.store.reset_counter(_user_key(username))
