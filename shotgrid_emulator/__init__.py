"""A local ShotGrid (Flow Production Tracking) site, faithful for the parts the broker uses.

It serves the REST token endpoint and reads (`/api/v1`, `/api/v1.1`), the api3
JSON-RPC subset the real `shotgun_api3` client needs (`/api3/json`) and the App Session
Launcher (`/internal_api/app_session_request`, with an approval page standing in for the
site's sign-in), after the project's ShotGrid research notes §1-§3, §6 and its emulator
spec §8. Points the research
leaves open are marked ASSUMED where they are decided. It is the broker's test double
and the demo's upstream; `token-broker shotgrid-emulator` runs it alone.

Deliberate deviation: `strict_refresh_rotation=True` (default) makes an upstream refresh
token single use, stricter than research §8.2 suggests, so the broker is proven against
the strictest plausible site.

Users file (`--users FILE`, TOML); every key but those marked required is optional:

    [site]
    name = "emulator"
    user_authentication_method = "default"   # default | ldap | saml2 | oxygen
    authentication_app_session_launcher_enabled = false   # the demo has it on

    [[projects]]
    id = 201                 # required
    name = "Spring Shorts"   # required

    [[users]]
    id = 101                 # required, unique among users and scripts
    login = "alice"          # required, unique
    password = "alice-pw"    # hashed on load; absent: no password login
    email = "alice@example.com"
    name = "Alice Artist"
    projects = [201]         # membership: the only projects this user sees
    sg_status_list = "act"   # act | dis (disabled: login refused)
    two_factor = false       # true: a password alone is refused with code 106
    totp_secret = "JBSWY3DPEHPK3PXP"   # base32 RFC 6238 secret (two_factor users only)
    sso_only = false         # true: password login refused with code 108
    can_impersonate_this_user = true
    may_sudo = false         # the role's "allow 'sudo'" permission
    retired = false
    permission_rule_set = "Artist"   # permission group: Admin, Manager, Artist or custom

    [[scripts]]
    id = 301                 # required
    name = "token-broker"    # required (the ApiUser's script name)
    key = "token-broker-key" # required, hashed on load
    may_sudo = true
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from shotgrid_emulator import api3, asl, rest
from shotgrid_emulator.directory import (
    Directory,
    DirectoryError,
    HumanUser,
    Project,
    Script,
)
from shotgrid_emulator.events import EventLogEntry
from shotgrid_emulator.faults import RAW_SEND, Fault, Faults
from shotgrid_emulator.site import Clock, Principal, ShotGridFault, Site

IDLE_KEEPALIVE_SECONDS = 60
"""How long the emulator's server keeps an idle HTTP/1.1 connection open.

Real sites sit behind a cloud load balancer that keeps idle client connections far longer
than uvicorn's default of 5 s; 60 s is AWS Application Load Balancer's default idle
timeout. `shotgun_api3` (httplib2) reuses one connection for all its calls and does not
retry a request whose idle connection the server closed, so with uvicorn's 5 s a client
idle for 5 s fails with BrokenPipeError, which no real site causes. Pass it as uvicorn's
`timeout_keep_alive` wherever the emulator is served.
"""


class ShotGridEmulator:
    """One emulated site. `.app` is its ASGI app; the other attributes are the test API.

    `clock` returns an aware UTC datetime; tests move it instead of sleeping.
    """

    def __init__(
        self,
        directory: Directory | None = None,
        *,
        clock: Clock | None = None,
        access_ttl: int = 600,
        refresh_ttl: int = 86400,
        session_ttl: int = 86400,
        strict_refresh_rotation: bool = True,
        totp_single_use: bool = False,
        admin_routes: bool = False,
    ) -> None:
        self.site = Site(
            directory if directory is not None else Directory.demo(),
            clock=clock,
            access_ttl=access_ttl,
            refresh_ttl=refresh_ttl,
            session_ttl=session_ttl,
            strict_refresh_rotation=strict_refresh_rotation,
            totp_single_use=totp_single_use,
        )
        self.app_sessions = asl.AppSessionLauncher(self.site)
        routes: list[BaseRoute] = [
            *rest.routes(self.site),
            *api3.routes(self.site),
            *asl.routes(self.app_sessions),
        ]
        if admin_routes:
            routes += _admin_routes(self)
        starlette = Starlette(routes=routes)
        peers = self.site.peers

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            # A plain coroutine function (not a bound method), so servers detect ASGI 3.
            # It remembers the peer (to count TCP connections) and uvicorn's own `send`
            # (needed to drop a connection), then hands over to Starlette.
            if scope["type"] == "http":
                client = scope.get("client")
                if client:
                    peers.add((str(client[0]), int(client[1])))
                scope[RAW_SEND] = send
            await starlette(scope, receive, send)

        self.app: ASGIApp = app
        """The ASGI app to serve."""

    @classmethod
    def default(cls, **kwargs: Any) -> ShotGridEmulator:
        """The contract's demo site: alice ... frank and the broker's script, ASL on."""
        return cls(Directory.demo(), **kwargs)

    @classmethod
    def from_users_file(cls, path: str, **kwargs: Any) -> ShotGridEmulator:
        return cls(Directory.from_toml_file(path), **kwargs)

    # ---- test API ------------------------------------------------------------------

    @property
    def directory(self) -> Directory:
        return self.site.directory

    @property
    def calls(self) -> Counter[str]:
        """Calls received per endpoint/grant: `token`, `token:password`, `api3:read`, ..."""
        return self.site.calls

    @property
    def peers(self) -> set[tuple[str, int]]:
        """Client (address, port) pairs seen: one per TCP connection."""
        return self.site.peers

    @property
    def faults(self) -> Faults:
        return self.site.faults

    @property
    def events(self) -> list[EventLogEntry]:
        """The EventLogEntry rows recorded so far, oldest first."""
        return self.site.events.entries()

    def set_active(self, login: str, active: bool) -> None:
        """Activate or disable a user (`sg_status_list`), logging an EventLogEntry."""
        self.site.set_active(login, active)

    def set_permission_group(self, login: str, group: str) -> None:
        """Move a user to another permission group, logging an EventLogEntry.

        KeyError for an unknown login, ValueError for a group the site does not have.
        """
        self.site.set_permission_group(login, group)

    def set_app_session_launcher(self, enabled: bool) -> None:
        """Turn the site's App Session Launcher on or off (site info follows)."""
        self.site.directory.app_session_launcher_enabled = enabled

    def app_session_requests(self) -> list[dict[str, Any]]:
        """The App Session Launcher requests still open (pending, or approved and not yet
        polled): `sessionRequestId`, `appName`, `machineId`, `url`, `approved`, `polls`
        and `poll_times` (time.monotonic() of each poll)."""
        return self.app_sessions.pending()

    def approve_app_session(self, request_id: str, login: str) -> None:
        """Approve as `login`, as the person would on the page (no password asked).

        KeyError for an unknown or inactive login; LookupError if the request is not
        pending.
        """
        user = self.site.directory.user(login)
        if user is None or not user.active:
            raise KeyError(login)
        self.app_sessions.approve(request_id, user)

    def deny_app_session(self, request_id: str) -> None:
        """Deny the request (LookupError if it is not pending): the next poll is a 404."""
        self.app_sessions.deny(request_id)

    def revoke_user_tokens(self, login: str) -> None:
        self.site.revoke_user_tokens(login)

    def reset_counters(self) -> None:
        self.site.calls.clear()
        self.site.peers.clear()


def _admin_routes(emu: ShotGridEmulator) -> list[BaseRoute]:
    """`/_emulator/*`: the test API over HTTP, for tests in another process. Off by default."""

    async def body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        data = json.loads(raw) if raw else {}
        if not isinstance(data, dict):
            raise ValueError("a JSON object is required")
        return data

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            emu.faults.clear()
            return Response(status_code=204)
        if request.method == "GET":
            return JSONResponse(emu.faults.snapshot())
        try:
            data = await body(request)
            emu.faults.set(
                str(data["target"]),
                latency=float(data.get("latency", 0.0)),
                status=data.get("status"),
                drop=bool(data.get("drop", False)),
                times=data.get("times"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return Response(status_code=204)

    async def active(request: Request) -> Response:
        try:
            data = await body(request)
            emu.set_active(request.path_params["login"], bool(data["active"]))
        except (ValueError, KeyError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return Response(status_code=204)

    async def permission_group(request: Request) -> Response:
        try:
            group = (await body(request)).get("group")
            if not isinstance(group, str):
                raise ValueError("group (a permission group name) is required")
            emu.set_permission_group(request.path_params["login"], group)
        except KeyError as exc:
            return JSONResponse({"error": f"unknown login {exc}"}, status_code=404)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return Response(status_code=204)

    async def site(request: Request) -> Response:
        try:
            data = await body(request)
            enabled = data["authentication_app_session_launcher_enabled"]
            if not isinstance(enabled, bool):
                raise ValueError("authentication_app_session_launcher_enabled must be a bool")
        except (ValueError, KeyError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        emu.set_app_session_launcher(enabled)
        return Response(status_code=204)

    async def app_sessions(request: Request) -> Response:
        return JSONResponse(emu.app_session_requests())

    async def app_session(request: Request) -> Response:
        request_id = request.path_params["request_id"]
        try:
            data = await body(request)
            action = data.get("action")
            if action == "approve":
                emu.approve_app_session(request_id, str(data["login"]))
            elif action == "deny":
                emu.deny_app_session(request_id)
            else:
                raise ValueError("action must be 'approve' or 'deny'")
        except KeyError as exc:  # before LookupError: KeyError is one
            return JSONResponse({"error": f"unknown or inactive login {exc}"}, status_code=400)
        except LookupError:
            return JSONResponse({"error": "no such pending request"}, status_code=404)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return Response(status_code=204)

    async def revoke(request: Request) -> Response:
        try:
            emu.revoke_user_tokens(request.path_params["login"])
        except KeyError as exc:
            return JSONResponse({"error": f"unknown login {exc}"}, status_code=404)
        return Response(status_code=204)

    async def calls(request: Request) -> Response:
        return JSONResponse(dict(emu.calls))

    return [
        Route("/_emulator/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/_emulator/users/{login}/active", active, methods=["POST"]),
        Route("/_emulator/users/{login}/revoke", revoke, methods=["POST"]),
        Route("/_emulator/users/{login}/permission_group", permission_group, methods=["POST"]),
        Route("/_emulator/site", site, methods=["POST"]),
        Route("/_emulator/app_session_requests", app_sessions, methods=["GET"]),
        Route("/_emulator/app_session_requests/{request_id}", app_session, methods=["POST"]),
        Route("/_emulator/calls", calls, methods=["GET"]),
    ]


__all__ = [
    "IDLE_KEEPALIVE_SECONDS",
    "Clock",
    "Directory",
    "DirectoryError",
    "EventLogEntry",
    "Fault",
    "Faults",
    "HumanUser",
    "Principal",
    "Project",
    "Script",
    "ShotGridEmulator",
    "ShotGridFault",
]
