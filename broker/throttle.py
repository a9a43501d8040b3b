"""Failed-login throttling, shared by the password grant and the login page (OWASP ASVS
V2.2.1), shaped after Keycloak's brute-force detection with its lockout keyed the way
OWASP recommends against denial of service: a strict limit per (username, client
address), so that guessing from one place never locks the person out from another.

Three fixed-window counters in the store, so every process and replica sees the same:

- **(username, address)**, `BROKER_LOGIN_MAX_FAILURES_PER_USER_IP`: the strict one. Only
  that address is refused that username; a success clears it.
- **username**, from all addresses together, `BROKER_LOGIN_MAX_FAILURES_PER_USER`: much
  larger, it bounds guessing spread over many addresses (SECURITY.md: why its default sits
  above ShotGrid's own lockout).
- **address**, across usernames, `BROKER_LOGIN_MAX_FAILURES_PER_IP`: bounds password
  spraying. It counts usernames, not tries: an attempt takes a slot only when it opens a
  (username, address) window, so one person retrying counts once.

An IPv6 address counts by its /64 (one subscriber's prefix), an IPv4-mapped one as IPv4.

Every attempt *reserves* its slots before ShotGrid is called (`CounterStore.reserve`, one
conditional write per counter), so no amount of concurrency gets more than a limit through
to ShotGrid, and then settles them exactly once:

- `failed()`: a wrong password (or unknown user), a disabled or SSO-only account, a wrong
  two-factor code. The slots stay: they are the failure count.
- `succeeded()`: the (username, address) counter is cleared and the other two slots given
  back; the address's other usernames stay counted (one success must not launder an
  address that guesses at many accounts).
- `released()`: not a failure, so every slot is given back: ShotGrid unreachable, or it
  asked for a two-factor code (the password was right). The counter is not cleared, so
  alternating right passwords and wrong codes still counts every wrong code.

Slots reserved by attempts still waiting on ShotGrid are not failures, yet they fill a
limit: 32 sign-ins of one account from one address at once (a render farm's jobs, a load
test) would see 27 refused although none failed. So each attempt also marks itself *in
flight* on every counter it took (a second counter, `login:f:...`, given back when the
attempt settles, whatever the outcome), and an attempt refused by a counter that has
attempts in flight waits for them (polling the store, at most `BROKER_UPSTREAM_READ_TIMEOUT`,
the longest one of them can take) and tries again: it goes through as soon as a success
gives slots back, and is refused as soon as none is in flight and the limit still stands.
Guessing gains nothing: at most the limit's attempts are ever in flight, and a waiter
refused after them never reached ShotGrid. A mark left by a crashed process ends with its
window; until then, attempts it refuses wait the full bound before their 429.

An attempt that is never settled (an unexpected error) counts as failed when used as a
context manager. An unknown username is counted exactly like a known one, so the throttle
says nothing about which accounts exist. Synchronous (store calls): use it from the
worker threads.
"""

from __future__ import annotations

import ipaddress
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType

from broker.clock import Clock, now_ms
from broker.errors import TooManyRequestsError
from broker.settings import Settings
from broker.store import CounterStore, CounterWindow
from broker.tokens.secrets import sha256_b64

PREFIX = "login:"


def _user(username: str) -> str:
    # ShotGrid logins are case-insensitive; the hash keeps logins out of the store.
    return sha256_b64(username.strip().lower())


def address_key(ip: str | None) -> str:
    """The address a counter is kept for: IPv4 as is, IPv6 by its /64."""
    if not ip:
        return "-"
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def user_key(username: str) -> str:
    # The hash has a fixed length, so this key is also the prefix of exactly this user's
    # (username, address) keys below: `unlock` clears them all in one call.
    return f"{PREFIX}u:{_user(username)}"


def pair_key(username: str, ip: str | None) -> str:
    return f"{user_key(username)}:{address_key(ip)}"


def ip_key(ip: str | None) -> str:
    return f"{PREFIX}a:{address_key(ip)}"


def flight_key(key: str) -> str:
    """The in-flight marks of a counter. Not under `user_key`'s prefix: `unlock` leaves the
    marks of attempts still in flight to their own settling."""
    return f"{PREFIX}f:{key.removeprefix(PREFIX)}"


UNBOUNDED = 2**31 - 1
"""The in-flight counter's limit: it only counts, the counter beside it limits."""

POLL_SECONDS = 0.02
"""How often a waiting attempt asks the store whether the attempts in flight settled."""


def message(retry_after: int) -> str:
    minutes = max(1, (retry_after + 59) // 60)
    unit = "minute" if minutes == 1 else "minutes"
    return (
        f"Too many failed sign-in attempts. Wait {minutes} {unit} and try again, or ask "
        "your ShotGrid administrator if you forgot your password."
    )


class Throttled(TooManyRequestsError):
    """429 with `Retry-After`: `limit` says which counter refused (`user_ip`, `user`, `ip`)
    for the audit line; the client is not told."""

    def __init__(self, limit: str, retry_after: int, key: str = "") -> None:
        super().__init__(message(retry_after), retry_after=retry_after)
        self.limit = limit
        self.key = key
        """The refusing counter, for the waiting loop in `LoginThrottle.reserve`."""


@dataclass
class Attempt:
    """One login attempt's reserved slots. Settle it once: `failed()`, `succeeded()` or
    `released()`; later calls do nothing."""

    throttle: LoginThrottle
    pair: str
    held: list[tuple[str, datetime]] = field(default_factory=list)
    """(key, window start) of each slot this attempt took, the pair's first."""
    flying: list[tuple[str, datetime]] = field(default_factory=list)
    """(key, window start) of this attempt's in-flight marks, given back when it settles."""
    settled: bool = False

    def failed(self) -> None:
        if self._settle():
            self._land()

    def succeeded(self) -> None:
        if self._settle():
            store = self.throttle.store
            store.reset_counter(self.pair)
            for key, started in self.held:
                if key != self.pair:
                    store.release(key, started)
            self._land()

    def released(self) -> None:
        if self._settle():
            self.throttle.give_back(self.held)
            self._land()

    def _settle(self) -> bool:
        first = not self.settled
        self.settled = True
        return first

    def _land(self) -> None:
        """The in-flight marks go last, once the slots say what the attempt was: a waiter
        that sees none in flight then sees the counters as they will stay."""
        self.throttle.give_back(self.flying)

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.failed()  # unsettled on the way out: counted, the safe side


class LoginThrottle:
    """The throttle's one entry point: `reserve` before ShotGrid, then settle the attempt."""

    def __init__(self, store: CounterStore, settings: Settings, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.window = timedelta(seconds=settings.login_failure_window)
        self.max_user_ip = settings.login_max_failures_per_user_ip
        self.max_user = settings.login_max_failures_per_user
        self.max_ip = settings.login_max_failures_per_ip
        self.wait_bound = settings.upstream_read_timeout

    def now(self) -> datetime:
        return now_ms(self.clock)

    def reserve(self, username: str, ip: str | None) -> Attempt:
        """Take this attempt's slots before ShotGrid is called, or raise `Throttled` with
        nothing taken; a refusal by a counter with attempts in flight waits for them first
        (module docstring). Blocks the calling worker thread while it waits."""
        deadline = time.monotonic() + self.wait_bound
        settled_seen = False
        while True:
            try:
                return self._reserve_once(username, ip)
            except Throttled as refused:
                if time.monotonic() >= deadline:
                    raise
                if not self._in_flight(refused.key):
                    # The counters were read before this look: an attempt may have settled
                    # in between (a success frees its slot). With none in flight they are
                    # as they will stay, so one more try at once decides.
                    if settled_seen:
                        raise
                    settled_seen = True
                    continue
                settled_seen = False
            time.sleep(POLL_SECONDS)

    def _in_flight(self, key: str) -> bool:
        marks = self.store.read_counter(flight_key(key), self.now(), self.window)
        return marks is not None and marks.count > 0

    def _reserve_once(self, username: str, ip: str | None) -> Attempt:
        """One try at every slot. The order puts the counters a refused attacker must not
        touch last: the username's, which people at other addresses share."""
        now = self.now()
        attempt = Attempt(self, pair_key(username, ip))
        pair = self._take(attempt, attempt.pair, now, self.max_user_ip, "user_ip")
        if self.max_ip and pair.count == 1:
            self._take(attempt, ip_key(ip), now, self.max_ip, "ip")
        if self.max_user:
            self._take(attempt, user_key(username), now, self.max_user, "user")
        return attempt

    def _take(
        self, attempt: Attempt, key: str, now: datetime, limit: int, name: str
    ) -> CounterWindow:
        slot = self.store.reserve(key, now, self.window, limit)
        if slot is None:
            self.give_back(attempt.held)
            self.give_back(attempt.flying)
            raise Throttled(name, self._retry_after(key, now), key)
        attempt.held.append((key, slot.started))
        marks = self.store.reserve(flight_key(key), now, self.window, UNBOUNDED)
        if marks is not None:  # always, below UNBOUNDED
            attempt.flying.append((flight_key(key), marks.started))
        return slot

    def give_back(self, held: list[tuple[str, datetime]]) -> None:
        for key, started in reversed(held):
            self.store.release(key, started)

    def _retry_after(self, key: str, now: datetime) -> int:
        """Seconds until the full window ends (the whole window if it just vanished)."""
        current = self.store.read_counter(key, now, self.window)
        if current is None:
            return int(self.window.total_seconds())
        left = current.started + self.window - now
        return max(1, math.ceil(left.total_seconds()))

    def unlock(self, login: str) -> int:
        """Clear a user's counters: theirs across addresses and every (username, address)
        one; address counters stay (they are the addresses', not the user's). For the
        admin API. Returns how many counters were removed."""
        return self.store.reset_counters(user_key(login))
