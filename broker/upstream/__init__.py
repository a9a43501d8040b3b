"""The upstream identity provider (ShotGrid): small capability protocols and one error tree.

Shaped after Dex's connectors: each capability is its own protocol, so the broker asks for
exactly what it uses (`PasswordUpstream.login`, `RefreshUpstream.refresh`, ...), and the
real client satisfies them (and a test double may satisfy only what its test needs). The
calls are synchronous: the broker's core runs on worker threads, one hop from the event
loop per request. Errors are a closed tree; callers map them to RFC 6749 errors and never
see httpx or JSON exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Identity:
    """A ShotGrid HumanUser as the broker needs it."""

    user_id: int
    login: str
    email: str
    name: str
    active: bool


@dataclass(frozen=True, slots=True)
class UpstreamTokens:
    """A ShotGrid REST token pair. `refresh_token` may be empty when ShotGrid gives none."""

    access_token: str
    refresh_token: str
    expires_at: datetime
    """When `access_token` stops working (timezone-aware UTC)."""

    refresh_expires_at: datetime | None = None
    """When `refresh_token` goes stale, if known (ShotGrid: about 24 h after issue)."""

    def __repr__(self) -> str:  # never print the tokens themselves
        return f"UpstreamTokens(expires_at={self.expires_at.isoformat()}, access_token=***)"


@dataclass(frozen=True, slots=True)
class Membership:
    """A HumanUser and the permission group ShotGrid gives it."""

    identity: Identity
    permission_group: str | None
    """The name of the user's permission group (ShotGrid's `permission_rule_set`, e.g.
    `Admin`, `Manager`, `Artist`); None when ShotGrid names none."""


@dataclass(frozen=True, slots=True)
class LoginResult:
    identity: Identity
    tokens: UpstreamTokens


class UpstreamError(Exception):
    """Base of every upstream failure. Messages are safe to log: they never hold a secret."""


class InvalidCredentials(UpstreamError):
    """Unknown login or wrong password (deliberately indistinguishable)."""


class InactiveUser(UpstreamError):
    """The HumanUser exists but is disabled (`sg_status_list` = `dis`)."""


class TwoFactorRequired(UpstreamError):
    """The site or user requires a two-factor code, which a password grant cannot carry."""


class SsoRequired(UpstreamError):
    """The user (or site) signs in through SSO/Autodesk Identity only; no legacy password."""


class UpstreamTokenRejected(UpstreamError):
    """ShotGrid refused a stored token (refresh token stale, revoked or rotated away)."""


class UnknownUser(UpstreamError):
    """A lookup by id or login found no such HumanUser (retired or never existed)."""


class SudoRefused(UpstreamError):
    """ShotGrid refused `sudo_as_login` for a reason other than an unknown or inactive target
    (the target has `can_impersonate_this_user` off, or the caller may not sudo)."""


class UpstreamUnavailable(UpstreamError):
    """ShotGrid could not be reached, timed out, or answered with a server error."""


class UpstreamMisconfigured(UpstreamUnavailable):
    """The broker's own ShotGrid credentials (script name/key) are missing or refused.

    A subclass of UpstreamUnavailable: to a client it is the same outage, the log tells the
    operator what to fix.
    """


class PasswordUpstream(Protocol):
    def login(self, login: str, password: str) -> LoginResult:
        """Check the credentials and return who they belong to plus a fresh token pair.

        The password lives only on the stack of this call.
        """
        ...


class RefreshUpstream(Protocol):
    def refresh(self, refresh_token: str) -> UpstreamTokens:
        """Exchange an upstream refresh token for a new pair (ShotGrid rotates it)."""
        ...


class DirectoryUpstream(Protocol):
    @property
    def script_configured(self) -> bool:
        """True when `user_by_id` works without a user token (the broker's script key)."""
        ...

    def user_by_id(self, user_id: int, *, access_token: str | None = None) -> Identity:
        """Read a HumanUser by id, with the broker's script key or the given user token."""
        ...


class GroupUpstream(Protocol):
    def permission_group(self, login: str) -> Membership:
        """The HumanUser with this login and its permission group, read with the broker's
        script key (who may use the admin page; whether a user exists). UnknownUser when
        no HumanUser has this login."""
        ...


class SudoUpstream(Protocol):
    def sudo_token(self, login: str) -> UpstreamTokens:
        """A REST token for the broker's script with `scope=sudo_as_login:<login>`."""
        ...


class Upstream(
    PasswordUpstream, RefreshUpstream, DirectoryUpstream, GroupUpstream, SudoUpstream, Protocol
):
    """Every capability: what the broker's wiring holds (the real client)."""

    def close(self) -> None: ...


__all__ = [
    "DirectoryUpstream",
    "GroupUpstream",
    "Identity",
    "InactiveUser",
    "InvalidCredentials",
    "LoginResult",
    "Membership",
    "PasswordUpstream",
    "RefreshUpstream",
    "SsoRequired",
    "SudoRefused",
    "SudoUpstream",
    "TwoFactorRequired",
    "UnknownUser",
    "Upstream",
    "UpstreamError",
    "UpstreamMisconfigured",
    "UpstreamTokenRejected",
    "UpstreamTokens",
    "UpstreamUnavailable",
]
