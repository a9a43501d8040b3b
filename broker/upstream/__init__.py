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
class UserChange:
    """One ShotGrid EventLogEntry of a HumanUser field change (`Shotgun_HumanUser_Change`).

    `old_value`/`new_value` are the status code for `sg_status_list` (`act`, `dis`) and the
    group's name for `permission_rule_set`."""

    event_id: int
    user_id: int
    attribute: str
    old_value: str | None
    new_value: str | None
    created_at: datetime | None


@dataclass(frozen=True, slots=True)
class LoginResult:
    identity: Identity
    tokens: UpstreamTokens


@dataclass(frozen=True, slots=True)
class SiteInfo:
    """What `GET /api/v1` says about how people sign in to the site (research §1.5)."""

    app_session_launcher: bool
    """`authentication_app_session_launcher_enabled`."""
    authentication_method: str
    """`user_authentication_method`: `default`, `ldap`, `saml2` (SSO) or `oxygen`
    (Autodesk Identity)."""


@dataclass(frozen=True, slots=True)
class AppSessionStarted:
    """An App Session Launcher request (research §6): its id is a bearer capability for
    the poll, `url` is where a person approves it."""

    request_id: str
    url: str

    def __repr__(self) -> str:
        return "AppSessionStarted(request_id=***, url=***)"


@dataclass(frozen=True, slots=True)
class AppSessionPending:
    """Nobody has approved the request yet."""


@dataclass(frozen=True, slots=True)
class AppSessionApproved:
    """Approved: ShotGrid hands the session token out once."""

    session_token: str
    login: str

    def __repr__(self) -> str:
        return f"AppSessionApproved(login={self.login!r}, session_token=***)"


@dataclass(frozen=True, slots=True)
class AppSessionGone:
    """ShotGrid no longer knows the request: denied, expired (about 300 s), already
    handed out, or never existed; the site does not say which (404)."""


AppSessionPoll = AppSessionPending | AppSessionApproved | AppSessionGone


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


class InvalidTwoFactorCode(InvalidCredentials):
    """The password was right but the two-factor code was wrong or already used."""


class AppSessionLauncherDisabled(UpstreamError):
    """The site has the App Session Launcher turned off (403 to a new request)."""


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


class SiteUpstream(Protocol):
    def site_info(self) -> SiteInfo:
        """How people sign in to the site (no authentication needed)."""
        ...


class SessionTokenUpstream(Protocol):
    def session_login(self, session_token: str, login: str) -> LoginResult:
        """Exchange a ShotGrid web/api3 session token for a REST token pair (the REST
        `session_token` grant) and read the HumanUser `login` with it."""
        ...


class TwoFactorUpstream(SessionTokenUpstream, Protocol):
    def two_factor_login(self, login: str, password: str, code: str) -> LoginResult:
        """Legacy Login with a two-factor code: api3 `get_session_token` with `auth_token`
        (research §3.2), then `session_login`. InvalidTwoFactorCode for a wrong code.
        The password and the code live only on the stack of this call."""
        ...


class AppSessionUpstream(SiteUpstream, SessionTokenUpstream, Protocol):
    def create_app_session(self, app_name: str, machine_id: str) -> AppSessionStarted:
        """Start an App Session Launcher request (AppSessionLauncherDisabled when off)."""
        ...

    def poll_app_session(self, request_id: str) -> AppSessionPoll:
        """Poll a request once (callers pace themselves: at most every 2 s)."""


class EventLogUpstream(Protocol):
    """ShotGrid's event log (EventLogEntry), read with the broker's script key."""

    def latest_event_id(self) -> int:
        """The id of the newest EventLogEntry of any kind (0 on an empty log): where a
        reader that has never read starts, so it does not replay the site's history."""
        ...

    def user_changes(
        self, after_id: int, attributes: tuple[str, ...], limit: int
    ) -> list[UserChange]:
        """HumanUser changes of these fields with an id above `after_id`, oldest first, at
        most `limit` of them."""
        ...


class Upstream(
    PasswordUpstream,
    RefreshUpstream,
    DirectoryUpstream,
    GroupUpstream,
    SudoUpstream,
    TwoFactorUpstream,
    AppSessionUpstream,
    EventLogUpstream,
    Protocol,
):
    """Every capability: what the broker's wiring holds (the real client)."""

    def close(self) -> None: ...


__all__ = [
    "AppSessionApproved",
    "AppSessionGone",
    "AppSessionLauncherDisabled",
    "AppSessionPending",
    "AppSessionPoll",
    "AppSessionStarted",
    "AppSessionUpstream",
    "DirectoryUpstream",
    "EventLogUpstream",
    "GroupUpstream",
    "Identity",
    "InactiveUser",
    "InvalidCredentials",
    "InvalidTwoFactorCode",
    "LoginResult",
    "Membership",
    "PasswordUpstream",
    "RefreshUpstream",
    "SessionTokenUpstream",
    "SiteInfo",
    "SiteUpstream",
    "SsoRequired",
    "SudoRefused",
    "SudoUpstream",
    "TwoFactorRequired",
    "TwoFactorUpstream",
    "UnknownUser",
    "Upstream",
    "UpstreamError",
    "UpstreamMisconfigured",
    "UpstreamTokenRejected",
    "UpstreamTokens",
    "UpstreamUnavailable",
    "UserChange",
]
