"""The real ShotGrid client: REST `POST /api/v1/auth/access_token` and HumanUser reads,
site info, the App Session Launcher (research §6), api3 `get_session_token` for
two-factor codes (research §3.2) and the event log
(`POST /api/v1/entity/event_log_entries/_search`).

Implements the capability protocols of `broker.upstream` over one pooled, keep-alive
`httpx.Client` per site. Synchronous on purpose: the broker's core runs on worker threads
(one hop from the event loop per request), and so does every upstream call it makes.
ShotGrid's error codes (research/shotgrid.md §1.4) are mapped onto the upstream error tree;
every transport failure, timeout, 5xx or malformed answer becomes `UpstreamUnavailable`
with a message that never holds a secret.

Secrets: the user's password is put in one form dict, sent, and the dict is cleared, so
no frame or exception kept after the call (a traceback in a log, say) still references
it. Exceptions are raised outside `except` blocks so they carry no httpx context (whose
request object would hold the form body).

Two-factor codes go over api3 JSON-RPC with httpx rather than through `shotgun_api3`: it
is one POST whose wire format research §3.2 recorded, and this client already brings the
circuit breaker, timeouts, metrics and secret hygiene, which `shotgun_api3` (httplib2, its
own retries, an `info` call at construction) would sidestep.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from broker.upstream import (
    AppSessionApproved,
    AppSessionGone,
    AppSessionLauncherDisabled,
    AppSessionPending,
    AppSessionPoll,
    AppSessionStarted,
    Identity,
    InactiveUser,
    InvalidCredentials,
    InvalidTwoFactorCode,
    LoginResult,
    Membership,
    SiteInfo,
    SsoRequired,
    SudoRefused,
    TwoFactorRequired,
    UnknownUser,
    UpstreamError,
    UpstreamMisconfigured,
    UpstreamTokenRejected,
    UpstreamTokens,
    UpstreamUnavailable,
    UserChange,
)

TOKEN_PATH = "/api/v1/auth/access_token"
SITE_INFO_PATH = "/api/v1"
API3_PATH = "/api3/json"
APP_SESSION_PATH = "/internal_api/app_session_request"
USER_FIELDS = "login,name,email,sg_status_list"
GROUP_FIELDS = USER_FIELDS + ",permission_rule_set"
EVENTS_PATH = "/api/v1/entity/event_log_entries"
EVENT_FIELDS = ["id", "event_type", "attribute_name", "entity", "meta", "created_at"]
USER_CHANGE_EVENT = "Shotgun_HumanUser_Change"
SEARCH_MEDIA_TYPE = "application/vnd+shotgun.api3_array+json"
"""REST `_search` takes its filters as api3-style arrays under this media type only."""
SCRIPT_TOKEN_MARGIN = timedelta(seconds=60)
"""A cached script token is replaced this long before ShotGrid says it expires."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ShotGridClient:
    """One ShotGrid site. Satisfies every capability protocol of `broker.upstream` (the
    `Upstream` protocol). Create once per site and `close()` on shutdown. Thread-safe."""

    def __init__(
        self,
        base_url: str,
        *,
        script_name: str | None = None,
        script_key: str | None = None,
        connect_timeout: float = 3.0,
        read_timeout: float = 10.0,
        clock: Callable[[], datetime] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._script_name = script_name
        self._script_key = script_key
        self._clock = clock or _utcnow
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=read_timeout
            ),
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
            transport=transport,
            headers={"Accept": "application/json"},
            follow_redirects=False,
        )
        self._script_token: UpstreamTokens | None = None
        self._script_lock = threading.Lock()

    @property
    def script_configured(self) -> bool:
        """Whether this client can read the directory with the broker's own script key
        (the capability `DirectoryUpstream.user_by_id` needs without a user token)."""
        return bool(self._script_name and self._script_key)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ShotGridClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- transport ---------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        token: str | None = None,
        json_body: dict[str, Any] | None = None,
        search: dict[str, Any] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """(status, JSON object) for any answer below 500; UpstreamUnavailable otherwise.
        `json_body` is sent as JSON (api3), `form` as a form, `search` as a `_search` body
        (api3 arrays, under their own media type)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        content = None
        if search is not None:
            headers["Content-Type"] = SEARCH_MEDIA_TYPE
            content = json.dumps(search).encode()
        failure: str | None = None
        response: httpx.Response | None = None
        shown = _safe_path(path)
        try:
            response = self._http.request(
                method,
                path,
                data=form,
                params=params,
                headers=headers or None,
                json=json_body,
                content=content,
            )
        except httpx.TimeoutException:
            failure = "timed out"
        except httpx.HTTPError as exc:
            failure = f"could not be reached ({type(exc).__name__})"
        if response is None:
            raise UpstreamUnavailable(f"ShotGrid {failure or 'failed'}: {method} {shown}")
        status = response.status_code
        if status >= 500:
            raise UpstreamUnavailable(f"ShotGrid answered HTTP {status}: {method} {shown}")
        body: Any = None
        try:
            body = json.loads(response.content)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise UpstreamUnavailable(f"ShotGrid answered malformed JSON (HTTP {status}): {shown}")
        return status, body

    def _tokens(self, body: Mapping[str, Any]) -> UpstreamTokens:
        access, refresh, expires_in = (
            body.get("access_token"),
            body.get("refresh_token", ""),
            body.get("expires_in"),
        )
        if (
            not isinstance(access, str)
            or not access
            or not isinstance(refresh, str)
            or not isinstance(expires_in, int)
            or isinstance(expires_in, bool)
        ):
            raise UpstreamUnavailable("ShotGrid answered a malformed token response")
        return UpstreamTokens(
            access_token=access,
            refresh_token=refresh,
            expires_at=self._clock() + timedelta(seconds=expires_in),
            refresh_expires_at=_jwt_exp(refresh),
        )

    # ---- PasswordUpstream --------------------------------------------------------------

    def login(self, login: str, password: str) -> LoginResult:
        form = {"grant_type": "password", "username": login, "password": password}
        del password
        try:
            status, body = self._send("POST", TOKEN_PATH, form=form)
        finally:
            form.clear()
        if status != 200:
            raise _login_error(status, body)
        tokens = self._tokens(body)
        identity = self._user_by_login(login, tokens.access_token)
        if not identity.active:
            # Defensive: a site that issues tokens to a disabled account is still refused.
            raise InactiveUser("the ShotGrid account is disabled")
        return LoginResult(identity=identity, tokens=tokens)

    def _user_by_login(self, login: str, token: str) -> Identity:
        status, body = self._send(
            "GET",
            "/api/v1/entity/human_users",
            params={"filter[login]": login, "fields": USER_FIELDS},
            token=token,
        )
        if status == 401:
            raise UpstreamTokenRejected("ShotGrid refused the token it just issued")
        if status != 200:
            raise UpstreamUnavailable(f"ShotGrid answered HTTP {status} to a HumanUser read")
        data = body.get("data")
        if not isinstance(data, list):
            raise UpstreamUnavailable("ShotGrid answered a malformed HumanUser list")
        if not data:
            raise UnknownUser("no ShotGrid HumanUser has this login")
        return _identity(data[0])

    # ---- RefreshUpstream ---------------------------------------------------------------

    def refresh(self, refresh_token: str) -> UpstreamTokens:
        status, body = self._send(
            "POST", TOKEN_PATH, form={"grant_type": "refresh_token", "refresh_token": refresh_token}
        )
        if status == 200:
            return self._tokens(body)
        if status in (400, 401):
            raise UpstreamTokenRejected(f"ShotGrid refused the refresh token (HTTP {status})")
        raise UpstreamUnavailable(f"ShotGrid answered HTTP {status} to a refresh")

    # ---- DirectoryUpstream -------------------------------------------------------------

    def user_by_id(self, user_id: int, *, access_token: str | None = None) -> Identity:
        path = f"/api/v1/entity/human_users/{int(user_id)}"
        params = {"fields": USER_FIELDS}
        if access_token is not None:
            status, body = self._send("GET", path, params=params, token=access_token)
            if status == 401:
                raise UpstreamTokenRejected("ShotGrid refused the user's access token")
        else:
            status, body = self._as_script("GET", path, params=params)
        if status == 404:
            raise UnknownUser(f"no ShotGrid HumanUser {int(user_id)}")
        if status != 200:
            raise UpstreamUnavailable(f"ShotGrid answered HTTP {status} to a HumanUser read")
        return _identity(body.get("data"))

    def _as_script(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        search: dict[str, Any] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """A call with the broker's script token."""
        status, body = self._send(
            method, path, params=params, search=search, token=self._script_access_token()
        )
        if status == 401:
            # The cached token may have died early (site restart): one fresh retry.
            self._script_token = None
            status, body = self._send(
                method, path, params=params, search=search, token=self._script_access_token()
            )
            if status == 401:
                raise UpstreamMisconfigured("ShotGrid refused the broker's script token")
        return status, body

    # ---- GroupUpstream -----------------------------------------------------------------

    def permission_group(self, login: str) -> Membership:
        """The user's `permission_rule_set` (a link under `relationships`, research §2)."""
        status, body = self._as_script(
            "GET",
            "/api/v1/entity/human_users",
            params={"filter[login]": login, "fields": GROUP_FIELDS},
        )
        if status != 200:
            raise UpstreamUnavailable(f"ShotGrid answered HTTP {status} to a HumanUser read")
        data = body.get("data")
        if not isinstance(data, list):
            raise UpstreamUnavailable("ShotGrid answered a malformed HumanUser list")
        # The exact spelling first, should a site's filter match more loosely.
        record = next((r for r in data if _login_of(r) == login), data[0] if data else None)
        if record is None:
            raise UnknownUser("no ShotGrid HumanUser has this login")
        return Membership(identity=_identity(record), permission_group=_group_name(record))

    # ---- EventLogUpstream --------------------------------------------------------------

    def latest_event_id(self) -> int:
        status, body = self._as_script(
            "GET", EVENTS_PATH, params={"sort": "-id", "page[size]": "1", "fields": "id"}
        )
        if status != 200:
            raise UpstreamUnavailable(f"ShotGrid answered HTTP {status} to an event log read")
        data = body.get("data")
        if not isinstance(data, list):
            raise UpstreamUnavailable("ShotGrid answered a malformed event log page")
        if not data:
            return 0
        first = data[0]
        event_id = first.get("id") if isinstance(first, dict) else None
        if not isinstance(event_id, int) or isinstance(event_id, bool):
            raise UpstreamUnavailable("ShotGrid answered a malformed EventLogEntry")
        return event_id

    def user_changes(
        self, after_id: int, attributes: tuple[str, ...], limit: int
    ) -> list[UserChange]:
        search = {
            "filters": [
                ["id", "greater_than", int(after_id)],
                ["event_type", "is", USER_CHANGE_EVENT],
                ["attribute_name", "in", list(attributes)],
            ],
            "fields": EVENT_FIELDS,
            "sort": "id",
            "page": {"size": int(limit), "number": 1},
        }
        status, body = self._as_script("POST", EVENTS_PATH + "/_search", search=search)
        if status != 200:
            raise UpstreamUnavailable(f"ShotGrid answered HTTP {status} to an event log search")
        data = body.get("data")
        if not isinstance(data, list):
            raise UpstreamUnavailable("ShotGrid answered a malformed event log page")
        changes = [_user_change(row) for row in data]
        return sorted((c for c in changes if c is not None), key=lambda c: c.event_id)

    def _script_access_token(self) -> str:
        with self._script_lock:
            cached = self._script_token
            if cached is None or cached.expires_at - SCRIPT_TOKEN_MARGIN <= self._clock():
                cached = self._script_token = self._client_credentials(scope=None)
            return cached.access_token

    def _client_credentials(self, *, scope: str | None) -> UpstreamTokens:
        if not self._script_name or not self._script_key:
            raise UpstreamMisconfigured("no ShotGrid script name/key configured")
        form = {
            "grant_type": "client_credentials",
            "client_id": self._script_name,
            "client_secret": self._script_key,
        }
        if scope:
            form["scope"] = scope
        try:
            status, body = self._send("POST", TOKEN_PATH, form=form)
        finally:
            form.clear()
        if status == 200:
            return self._tokens(body)
        code, title = _first_error(body)
        if title.startswith("Can't authenticate script"):
            raise UpstreamMisconfigured("ShotGrid refused the broker's script name/key")
        if "unknown or retired user" in title:
            raise UnknownUser("no active ShotGrid HumanUser has this login")
        if "inactive user account" in title:
            raise InactiveUser("the ShotGrid account is disabled")
        if "sudo" in title:
            raise SudoRefused("ShotGrid refused to act as this user")
        raise UpstreamUnavailable(f"ShotGrid answered HTTP {status} code {code} to the script")

    # ---- SudoUpstream ------------------------------------------------------------------

    def sudo_token(self, login: str) -> UpstreamTokens:
        return self._client_credentials(scope=f"sudo_as_login:{login}")

    # ---- SiteUpstream ------------------------------------------------------------------

    def site_info(self) -> SiteInfo:
        status, body = self._send("GET", SITE_INFO_PATH)
        data = body.get("data")
        if status != 200 or not isinstance(data, dict):
            raise UpstreamUnavailable(f"ShotGrid answered HTTP {status} to site info")
        method = data.get("user_authentication_method")
        return SiteInfo(
            app_session_launcher=data.get("authentication_app_session_launcher_enabled") is True,
            authentication_method=method if isinstance(method, str) else "default",
        )

    # ---- SessionTokenUpstream ----------------------------------------------------------

    def session_login(self, session_token: str, login: str) -> LoginResult:
        form = {"grant_type": "session_token", "session_token": session_token}
        try:
            status, body = self._send("POST", TOKEN_PATH, form=form)
        finally:
            form.clear()
        if status != 200:
            code, title = _first_error(body)
            if code == 102 or title.startswith("Can't authenticate session token"):
                raise UpstreamTokenRejected("ShotGrid refused the session token")
            raise _login_error(status, body)
        tokens = self._tokens(body)
        identity = self._user_by_login(login, tokens.access_token)
        if not identity.active:
            raise InactiveUser("the ShotGrid account is disabled")
        return LoginResult(identity=identity, tokens=tokens)

    # ---- TwoFactorUpstream -------------------------------------------------------------

    def two_factor_login(self, login: str, password: str, code: str) -> LoginResult:
        auth = {"user_login": login, "user_password": password, "auth_token": code}
        payload: dict[str, Any] = {"method_name": "get_session_token", "params": [auth]}
        del password, code
        try:
            status, body = self._send("POST", API3_PATH, json_body=payload)
        finally:
            auth.clear()
            payload.clear()
        if status != 200:  # api3 answers every fault with 200 (research §3.1)
            raise UpstreamUnavailable(f"ShotGrid answered HTTP {status} to api3")
        if body.get("exception"):
            raise _api3_login_error(body)
        results = body.get("results", body)
        session_id = results.get("session_id") if isinstance(results, dict) else None
        if not isinstance(session_id, str) or not session_id:
            raise UpstreamUnavailable("ShotGrid answered get_session_token without a session")
        return self.session_login(session_id, login)

    # ---- AppSessionUpstream ------------------------------------------------------------

    def create_app_session(self, app_name: str, machine_id: str) -> AppSessionStarted:
        status, body = self._send(
            "POST", APP_SESSION_PATH, form={"appName": app_name, "machineId": machine_id}
        )
        if status == 403:
            raise AppSessionLauncherDisabled("the site has the App Session Launcher off")
        request_id, url = body.get("sessionRequestId"), body.get("url")
        if isinstance(request_id, int) and not isinstance(request_id, bool):
            request_id = str(request_id)
        if status != 200 or not isinstance(request_id, str) or not request_id:
            raise UpstreamUnavailable(f"ShotGrid answered HTTP {status} to an app session")
        if not isinstance(url, str) or not self._on_site(url):
            # The URL goes to a person's browser: never anywhere but the site itself.
            raise UpstreamUnavailable("ShotGrid answered an app session URL off its site")
        return AppSessionStarted(request_id=request_id, url=url)

    def poll_app_session(self, request_id: str) -> AppSessionPoll:
        status, body = self._send("PUT", f"{APP_SESSION_PATH}/{quote(request_id, safe='')}")
        if status == 404:
            return AppSessionGone()
        if status != 200:
            raise UpstreamUnavailable(f"ShotGrid answered HTTP {status} to an app session poll")
        if body.get("approved") is not True:
            return AppSessionPending()
        token, login = body.get("sessionToken"), body.get("userLogin")
        if not isinstance(token, str) or not token or not isinstance(login, str) or not login:
            raise UpstreamUnavailable("ShotGrid answered a malformed app session approval")
        return AppSessionApproved(session_token=token, login=login)

    def _on_site(self, url: str) -> bool:
        site, given = urlsplit(self.base_url), urlsplit(url)
        return (given.scheme, given.netloc.lower()) == (site.scheme, site.netloc.lower())


def _first_error(body: Mapping[str, Any]) -> tuple[int | None, str]:
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        code, title = errors[0].get("code"), errors[0].get("title")
        return (code if isinstance(code, int) else None), (title if isinstance(title, str) else "")
    return None, ""


def _account_refusal(code: object, text: str, wrong: UpstreamError) -> UpstreamError | None:
    """ShotGrid's refusal codes, the same on REST and api3 (research §3.1): 102 is `wrong`
    (what the call checked) unless the account is disabled, 106 two-factor, 108/110 SSO."""
    if code == 102:
        return (
            InactiveUser("the ShotGrid account is disabled")
            if "disabled" in text.lower()
            else wrong
        )
    if code == 106:
        return TwoFactorRequired("the ShotGrid account requires two-factor authentication")
    if code in (108, 110):
        return SsoRequired("the ShotGrid account signs in through SSO/Autodesk Identity only")
    return None


def _login_error(status: int, body: Mapping[str, Any]) -> UpstreamError:
    code, title = _first_error(body)
    refusal = _account_refusal(
        code, title, InvalidCredentials("ShotGrid refused the login or password")
    )
    if refusal is not None:
        return refusal
    if status == 400 and title.startswith("Missing or invalid authentication arguments"):
        return InvalidCredentials("ShotGrid refused the login or password")
    return UpstreamUnavailable(f"ShotGrid answered HTTP {status} code {code} to a password grant")


def _safe_path(path: str) -> str:
    """The path for a message: an app session request's id is a bearer capability."""
    if path.startswith(APP_SESSION_PATH + "/"):
        return APP_SESSION_PATH + "/***"
    return path


def _api3_login_error(body: Mapping[str, Any]) -> UpstreamError:
    """An api3 fault to a login with a two-factor code (research §3.1's codes). The
    password was checked just before, so 102 means the code: wrong, expired or used."""
    code, message = body.get("error_code"), str(body.get("message") or "")
    refusal = _account_refusal(
        code, message, InvalidTwoFactorCode("ShotGrid refused the two-factor code")
    )
    if refusal is not None:
        return refusal
    return UpstreamUnavailable(f"ShotGrid answered api3 fault {code!r} to get_session_token")


def _identity(record: Any) -> Identity:
    attributes = record.get("attributes") if isinstance(record, dict) else None
    if not isinstance(record, dict) or not isinstance(attributes, dict):
        raise UpstreamUnavailable("ShotGrid answered a malformed HumanUser record")
    user_id, login = record.get("id"), attributes.get("login")
    if not isinstance(user_id, int) or not isinstance(login, str):
        raise UpstreamUnavailable("ShotGrid answered a malformed HumanUser record")
    return Identity(
        user_id=user_id,
        login=login,
        email=str(attributes.get("email") or ""),
        name=str(attributes.get("name") or ""),
        active=attributes.get("sg_status_list") == "act",
    )


def _login_of(record: Any) -> Any:
    attributes = record.get("attributes") if isinstance(record, dict) else None
    return attributes.get("login") if isinstance(attributes, dict) else None


def _group_name(record: Mapping[str, Any]) -> str | None:
    relationships = record.get("relationships")
    link = relationships.get("permission_rule_set") if isinstance(relationships, dict) else None
    data = link.get("data") if isinstance(link, dict) else None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else None


def _user_change(row: Any) -> UserChange | None:
    """An EventLogEntry row as a UserChange; None for a row that names no HumanUser (a
    malformed row is skipped rather than stopping every later event)."""
    attributes = row.get("attributes") if isinstance(row, dict) else None
    if not isinstance(row, dict) or not isinstance(attributes, dict):
        return None
    event_id, meta = row.get("id"), attributes.get("meta")
    if not isinstance(event_id, int) or isinstance(event_id, bool) or not isinstance(meta, dict):
        return None
    # `entity` reads null once the user is retired; `meta` still names them.
    user_id = meta.get("entity_id")
    if meta.get("entity_type", "HumanUser") != "HumanUser" or not isinstance(user_id, int):
        return None
    return UserChange(
        event_id=event_id,
        user_id=user_id,
        attribute=str(attributes.get("attribute_name") or meta.get("attribute_name") or ""),
        old_value=_field_value(meta.get("old_value")),
        new_value=_field_value(meta.get("new_value")),
        created_at=_timestamp(attributes.get("created_at")),
    )


def _field_value(value: Any) -> str | None:
    """A status code as is; an entity link (a permission group) by its name."""
    if isinstance(value, dict):
        name = value.get("name")
        return name if isinstance(name, str) else None
    return value if isinstance(value, str) else None


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _jwt_exp(token: str) -> datetime | None:
    """The `exp` of ShotGrid's refresh JWT. Unverified on purpose: it is ShotGrid's token,
    we only read when it goes stale; ShotGrid itself decides whether it is valid."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return None
    return datetime.fromtimestamp(exp, UTC)


__all__ = ["ShotGridClient"]
