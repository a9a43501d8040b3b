"""The emulated site's state and rules, shared by the REST and api3 surfaces.

Everything a real ShotGrid decides (who a credential belongs to, whether a sudo is allowed,
which projects a user sees, token and session lifetimes) lives here once; `rest.py` and
`api3.py` only translate it to their wire formats. State is guarded by a lock because
tests poke it (`set_active`, `revoke_user_tokens`) from their own thread while uvicorn
serves from another.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from shotgrid_emulator import jwt, totp
from shotgrid_emulator.directory import Directory, HumanUser, Project, Script
from shotgrid_emulator.events import EventLog
from shotgrid_emulator.faults import RAW_SEND, Faults, drop_connection

Clock = Callable[[], datetime]

SSO_MESSAGE = (
    "Authentication using username/password is not allowed for an SSO-enabled "
    "Flow Production Tracking site"
)
# ASSUMED (research §1.4/§9.1: the real REST/api3 text for 2FA is not recorded); the code
# 106 is known from shotgun_api3's MissingTwoFactorAuthenticationFault mapping.
TWO_FACTOR_MESSAGE = "Two factor authentication required"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ShotGridFault(Exception):
    """A refusal with a ShotGrid error code; REST renders it as `errors[]`, api3 as a fault."""

    def __init__(
        self,
        code: int,
        title: str,
        *,
        status: int = 400,
        source: dict[str, Any] | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(title)
        self.code = code
        self.title = title
        self.status = status
        self.source = source
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a credential authenticates (`user`/`script`), and whom it acts as (`sudo_as`)."""

    user: HumanUser | None = None
    script: Script | None = None
    sudo_as: HumanUser | None = None

    @property
    def kind(self) -> Literal["HumanUser", "ApiUser"]:
        return "HumanUser" if self.user is not None else "ApiUser"

    @property
    def id(self) -> int:
        if self.user is not None:
            return self.user.id
        assert self.script is not None
        return self.script.id

    @property
    def effective(self) -> HumanUser | None:
        """The user whose permissions apply; None for a script without sudo (API Admin)."""
        return self.sudo_as or self.user

    @property
    def may_sudo(self) -> bool:
        if self.user is not None:
            return self.user.may_sudo
        return self.script is not None and self.script.may_sudo


@dataclass(slots=True)
class _RefreshRecord:
    user_type: str
    user_id: int
    sudo_as_login: str | None
    auth_type: str
    session_uuid: str | None
    expires_at: datetime
    used: bool = False


@dataclass(slots=True)
class _Session:
    user_id: int
    expires_at: datetime


class Site:
    """State and rules of one emulated ShotGrid site."""

    def __init__(
        self,
        directory: Directory,
        *,
        clock: Clock | None,
        access_ttl: int,
        refresh_ttl: int,
        session_ttl: int,
        strict_refresh_rotation: bool,
        totp_single_use: bool = False,
    ) -> None:
        self.directory = directory
        self.clock: Clock = clock or _utcnow
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.session_ttl = session_ttl
        self.strict_refresh_rotation = strict_refresh_rotation
        self.totp_single_use = totp_single_use
        self._totp_last_step: dict[int, int] = {}
        self.events = EventLog()
        self._secret = secrets.token_bytes(32)  # per emulator: tokens never outlive it
        self._lock = threading.RLock()
        self._refresh: dict[str, _RefreshRecord] = {}
        self._sessions: dict[str, _Session] = {}
        self.calls: Counter[str] = Counter()
        self.peers: set[tuple[str, int]] = set()
        self.faults = Faults()

    # ---- credentials -------------------------------------------------------------------

    def password_login(
        self, login: str, password: str, *, auth_token: str | None = None, api3: bool = False
    ) -> HumanUser:
        """The user these credentials authenticate, or a ShotGridFault.

        `auth_token` is a two-factor code; only api3 takes one (research §3.2). The REST
        password grant refuses two-factor users whatever it is sent (research §1.2 leaves
        a REST code parameter UNKNOWN; ASSUMED none).
        """
        if self.directory.user_authentication_method == "saml2":
            raise ShotGridFault(108, SSO_MESSAGE)
        # The password is checked first for every behaviour, so a wrong password always
        # gets the same generic answer and the other refusals reveal nothing to a guesser
        # (ASSUMED: the real order is not recorded).
        user = self.directory.check_password(login, password)
        if user is None:
            raise ShotGridFault(102, f"Can't authenticate user '{login}'.")
        if not user.active:
            # ASSUMED text: real sites answer 102 for disabled accounts; the suffix is ours.
            raise ShotGridFault(
                102, f"Can't authenticate user '{login}'. User account is disabled."
            )
        if user.sso_only:
            # ASSUMED: per-user SSO refusal with api3's code 108 and its default message.
            raise ShotGridFault(108, SSO_MESSAGE)
        if user.two_factor:
            # Code 106 is known for api3 (research §3.2); ASSUMED for REST (§9.1).
            if not api3 or not auth_token:
                raise ShotGridFault(106, TWO_FACTOR_MESSAGE)
            if not self.check_totp(user, auth_token):
                # Research §8.4 suggests 106 here too, but tk-core's console login (Autodesk's
                # own client) expects a wrong or used code to raise AuthenticationFault, i.e.
                # 102: "user + valid pass + invalid 2fa code" ends in its AuthenticationError
                # branch. The message is ASSUMED.
                raise ShotGridFault(
                    102, f"Can't authenticate user '{login}'. Invalid two factor code."
                )
        return user

    def check_totp(self, user: HumanUser, code: str) -> bool:
        """Whether `code` is the user's current RFC 6238 code (±1 step).

        With `totp_single_use` a code, once accepted, is refused again, as are the codes of
        earlier steps (RFC 6238 §5.2; shotgun_api3 says a code is invalid after first use).
        Off by default (ASSUMED): two sign-ins within one 30 s step then both succeed, which
        outside tests that log the same two-factor user in twice rely on.
        """
        if user.totp_secret is None:
            return False
        step = totp.matching_step(user.totp_secret, code, self.clock())
        if step is None:
            return False
        if self.totp_single_use:
            with self._lock:
                if step <= self._totp_last_step.get(user.id, -1):
                    return False
                self._totp_last_step[user.id] = step
        return True

    def script_login(self, name: str, key: str) -> Script:
        script = self.directory.script(name)
        if script is None or not script.key.matches(key):
            raise ShotGridFault(102, f"Can't authenticate script '{name}'")
        return script

    def sudo(self, principal: Principal, target: str, *, fault_code: int = 102) -> Principal:
        """`principal` acting as `target`, with the checks of research §1.4 / §5."""
        if not principal.may_sudo:
            # REST: ASSUMED 102; api3 passes fault_code=104 (plain Fault, research §3.1).
            raise ShotGridFault(
                fault_code, f"The user does not have permission to 'sudo': {target}"
            )
        user = self.directory.user(target)
        if user is None:
            raise ShotGridFault(102, f"Cannot 'sudo' - unknown or retired user: '{target}'")
        if not user.active:
            raise ShotGridFault(102, f"Cannot 'sudo' - inactive user account: '{target}'")
        if not user.can_impersonate_this_user:
            raise ShotGridFault(
                102,
                "Cannot 'sudo' - user account has 'can_impersonate_this_user' turned off: "
                f"'{target}'",
            )
        return Principal(user=principal.user, script=principal.script, sudo_as=user)

    # ---- api3 sessions -----------------------------------------------------------------

    def create_session(self, user: HumanUser) -> str:
        token = secrets.token_hex(16)  # real ones look like 32 hex (research §8.4)
        with self._lock:
            expires = self.clock() + timedelta(seconds=self.session_ttl)
            self._sessions[token] = _Session(user.id, expires)
        return token

    def session_user(self, token: str) -> HumanUser | None:
        """The session's user, sliding its expiry; None if unknown, expired or disabled.

        Real sites slide an inactivity window (research §6); they do it at most every
        300 s, which is indistinguishable from sliding on every use for our purposes.
        """
        with self._lock:
            session = self._sessions.get(token)
            now = self.clock()
            if session is None:
                return None
            if session.expires_at <= now:
                del self._sessions[token]
                return None
            user = self.directory.user_by_id(session.user_id)
            if user is None or not user.active:
                return None
            session.expires_at = now + timedelta(seconds=self.session_ttl)
            return user

    # ---- REST tokens -------------------------------------------------------------------

    def issue(
        self, principal: Principal, *, auth_type: str, session_uuid: str | None, host: str
    ) -> dict[str, Any]:
        now = int(self.clock().timestamp())
        sudo_login = principal.sudo_as.login if principal.sudo_as else None
        base: dict[str, Any] = {
            "iss": host,
            "aud": host,
            "user": {"type": principal.kind, "id": principal.id},
            "sudo_as_login": sudo_login,
            "auth_type": auth_type,
            "session_uuid": session_uuid,
        }
        access = {**base, "exp": now + self.access_ttl, "iat": now, "jti": uuid.uuid4().hex}
        rjti = uuid.uuid4().hex
        # The refresh token's claims beyond `exp` are not recorded anywhere (research §1.3);
        # `use` keeps a refresh token from passing as a bearer.
        refresh = {**base, "exp": now + self.refresh_ttl, "iat": now, "jti": rjti, "use": "refresh"}
        with self._lock:
            self._refresh[rjti] = _RefreshRecord(
                user_type=principal.kind,
                user_id=principal.id,
                sudo_as_login=sudo_login,
                auth_type=auth_type,
                session_uuid=session_uuid,
                expires_at=datetime.fromtimestamp(now + self.refresh_ttl, UTC),
            )
        return {
            "token_type": "Bearer",
            "access_token": jwt.encode(access, self._secret),
            "expires_in": self.access_ttl,
            "refresh_token": jwt.encode(refresh, self._secret),
        }

    def _principal(self, user_type: Any, user_id: Any, sudo_login: Any) -> Principal | None:
        """Rebuild a principal from token claims; None if it no longer may act."""
        if user_type == "HumanUser" and isinstance(user_id, int):
            user = self.directory.user_by_id(user_id)
            if user is None or not user.active:
                return None
            principal = Principal(user=user)
        elif user_type == "ApiUser" and isinstance(user_id, int):
            script = self.directory.script_by_id(user_id)
            if script is None:
                return None
            principal = Principal(script=script)
        else:
            return None
        if sudo_login is None:
            return principal
        target = self.directory.user(str(sudo_login))
        if target is None or not target.active:
            return None
        return Principal(user=principal.user, script=principal.script, sudo_as=target)

    def bearer(self, token: str) -> Principal | None:
        """The principal of a valid, unexpired access token. ASSUMED: like a real site,
        which loads the user per request, a disabled user's tokens stop working at once."""
        claims = jwt.decode(token, self._secret)
        if claims is None or claims.get("use") == "refresh":
            return None
        exp = claims.get("exp")
        if not isinstance(exp, int) or exp <= self.clock().timestamp():
            return None
        user = claims.get("user")
        if not isinstance(user, dict):
            return None
        return self._principal(user.get("type"), user.get("id"), claims.get("sudo_as_login"))

    def refresh(self, token: str, *, host: str) -> dict[str, Any]:
        """Rotate a refresh token. Invalid, expired, used (when strict) → 401 Unauthorized."""
        unauthorized = ShotGridFault(102, "Unauthorized", status=401)  # code ASSUMED
        claims = jwt.decode(token, self._secret)
        if claims is None or claims.get("use") != "refresh":
            raise unauthorized
        with self._lock:
            record = self._refresh.get(str(claims.get("jti")))
            if record is None or record.used or record.expires_at <= self.clock():
                raise unauthorized
            principal = self._principal(record.user_type, record.user_id, record.sudo_as_login)
            if principal is None:
                raise unauthorized
            if self.strict_refresh_rotation:
                # Research §1.3 leaves reuse UNKNOWN and suggests tolerating it; we default
                # to single use because the broker must survive the strict behaviour.
                record.used = True
            return self.issue(
                principal, auth_type=record.auth_type, session_uuid=record.session_uuid, host=host
            )

    # ---- permissions -------------------------------------------------------------------

    def visible_projects(self, principal: Principal) -> list[Project]:
        user = principal.effective
        if user is None:
            return list(self.directory.projects)  # API Admin sees every project
        return [p for p in self.directory.projects if p.id in user.projects]

    # ---- test/admin API ----------------------------------------------------------------

    def set_active(self, login: str, active: bool) -> None:
        self.change_user(login, "sg_status_list", "act" if active else "dis")

    def set_permission_group(self, login: str, group: str) -> None:
        if group not in self.directory.permission_rule_sets:
            raise ValueError(f"unknown permission group {group!r}")
        self.change_user(login, "permission_rule_set", group)

    def change_user(self, login: str, attribute: str, value: str) -> None:
        """Set a user's `sg_status_list` or `permission_rule_set` (a group name), logging
        the change as a real site does. Setting the value it has logs nothing (ASSUMED)."""
        with self._lock:
            user = self.directory.user(login)
            if user is None:
                raise KeyError(login)
            if attribute == "sg_status_list":
                if value not in ("act", "dis"):
                    raise ValueError("sg_status_list must be 'act' or 'dis'")
                old_value: object = user.sg_status_list
                new_value: object = value
                label = "Status"
                user.sg_status_list = value
            elif attribute == "permission_rule_set":
                old_value = self._rule_set_link(user.permission_rule_set)
                new_value = self._rule_set_link(value)
                label = "Permission Group"
                user.permission_rule_set = value
            else:
                raise ValueError(f"the emulator does not change HumanUser.{attribute}")
            if old_value == new_value:
                return
            self.events.record_change(
                entity_type="HumanUser",
                entity_id=user.id,
                entity_name=user.name,
                attribute_name=attribute,
                label=label,
                old_value=old_value,
                new_value=new_value,
                at=self.clock(),
            )

    def _rule_set_link(self, group: str) -> dict[str, Any]:
        # An entity field's old/new values are entity dicts in `meta` (ASSUMED keys).
        rule_id = self.directory.permission_rule_sets.get(group, 0)
        return {"type": "PermissionRuleSet", "id": rule_id, "name": group}

    def revoke_user_tokens(self, login: str) -> None:
        """Kill the refresh tokens issued to or acting as `login`, and its sessions."""
        with self._lock:
            user = self.directory.user(login, include_retired=True)
            if user is None:
                raise KeyError(login)
            self._refresh = {
                jti: r
                for jti, r in self._refresh.items()
                if not (r.user_type == "HumanUser" and r.user_id == user.id)
                and r.sudo_as_login != login
            }
            self._sessions = {t: s for t, s in self._sessions.items() if s.user_id != user.id}

    # ---- per-call bookkeeping: counters, then injected faults --------------------------

    async def enter(self, request: Request, *names: str) -> Response | None:
        """Count the call; apply a matching fault. A returned response replaces the answer."""
        for name in names:
            self.calls[name] += 1
        fault = self.faults.take(request.url.path, names)
        if fault is None:
            return None
        if fault.latency:
            await asyncio.sleep(fault.latency)  # the injected fault itself, not a sync aid
        if fault.drop:
            await drop_connection(request.scope, request.receive)
            return Response(status_code=500)  # never reaches the client: it is gone
        if fault.status is not None:
            return Response(
                f"<html><body><h1>{fault.status} injected fault</h1></body></html>",
                status_code=fault.status,
                media_type="text/html",
            )
        return None


def rest_error(fault: ShotGridFault) -> JSONResponse:
    """The REST error envelope of research §1.4."""
    body = {
        "errors": [
            {
                "id": uuid.uuid4().hex,
                "status": fault.status,
                "code": fault.code,
                "title": fault.title,
                "source": fault.source,
                "detail": fault.detail,
                "meta": None,
            }
        ]
    }
    return sg_json(body, fault.status)


def sg_json(body: Any, status: int = 200) -> JSONResponse:
    """JSON with the content type real sites send (research §1.1)."""
    return JSONResponse(body, status_code=status, media_type="application/json; charset=utf-8")


__all__ = ["RAW_SEND", "Principal", "ShotGridFault", "Site", "rest_error", "sg_json"]
