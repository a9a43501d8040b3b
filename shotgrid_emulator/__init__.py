"""A local ShotGrid (Flow Production Tracking) site, faithful for the parts the broker uses.

It serves the REST token endpoint and reads (`/api/v1`, `/api/v1.1`) and the api3
JSON-RPC subset the real `shotgun_api3` client needs (`/api3/json`), after
the project's ShotGrid research notes §1-§3 and its emulator spec §8. Points the research
leaves open are marked ASSUMED where they are decided. It is the broker's test double
and the demo's upstream; `token-broker shotgrid-emulator` runs it alone.

Deliberate deviation: `strict_refresh_rotation=True` (default) makes an upstream refresh
token single use, stricter than research §8.2 suggests, so the broker is proven against
the strictest plausible site.

Users file (`--users FILE`, TOML); every key but those marked required is optional:

    [site]
    name = "emulator"
    user_authentication_method = "default"   # default | ldap | saml2 | oxygen

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
    two_factor = false       # true: password login refused with code 106
    sso_only = false         # true: password login refused with code 108
    can_impersonate_this_user = true
    may_sudo = false         # the role's "allow 'sudo'" permission
    retired = false
    permission_rule_set = "Artist"

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

from shotgrid_emulator import api3, rest
from shotgrid_emulator.directory import (
    Directory,
    DirectoryError,
    HumanUser,
    Project,
    Script,
)
from shotgrid_emulator.faults import RAW_SEND, Fault, Faults
from shotgrid_emulator.site import Clock, Principal, ShotGridFault, Site


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
        admin_routes: bool = False,
    ) -> None:
        self.site = Site(
            directory if directory is not None else Directory.demo(),
            clock=clock,
            access_ttl=access_ttl,
            refresh_ttl=refresh_ttl,
            session_ttl=session_ttl,
            strict_refresh_rotation=strict_refresh_rotation,
        )
        routes: list[BaseRoute] = [*rest.routes(self.site), *api3.routes(self.site)]
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
        """The contract's demo site: alice, bob, carol, dave, erin and the broker's script."""
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

    def set_active(self, login: str, active: bool) -> None:
        self.site.set_active(login, active)

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
        Route("/_emulator/calls", calls, methods=["GET"]),
    ]


__all__ = [
    "Clock",
    "Directory",
    "DirectoryError",
    "Fault",
    "Faults",
    "HumanUser",
    "Principal",
    "Project",
    "Script",
    "ShotGridEmulator",
    "ShotGridFault",
]
