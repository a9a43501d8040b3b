"""The routes every client calls all the time (the token endpoint, the JWKS, discovery),
dispatched by one dictionary lookup on method and path.

Starlette's router tries each route's pattern in turn, and its exception middleware and
`request_response` wrapper add three more coroutine layers to every request. These
routes have fixed paths and async endpoints that raise no `HTTPException`, so this, the
innermost middleware, calls the very endpoint the router would (with the same `endpoint`
in the scope, which metrics and the access log read) and hands everything else, other
methods on the same paths included (405), to the router.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable

from starlette.requests import Request
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send


class HotRoutes:
    def __init__(self, app: ASGIApp, routes: Iterable[BaseRoute]) -> None:
        self.app = app
        self.table: dict[tuple[str, str], Route] = {}
        for route in routes:
            if not isinstance(route, Route) or route.param_convertors:
                raise ValueError(f"{route!r}: only fixed-path routes can be dispatched here")
            if not inspect.iscoroutinefunction(route.endpoint):
                raise ValueError(f"{route.path}: only async endpoints can be dispatched here")
            for method in route.methods or ():
                self.table[(method, route.path)] = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            route = self.table.get((scope["method"], scope["path"]))
            if route is not None:
                scope["endpoint"] = route.endpoint
                scope["path_params"] = {}
                scope["route"] = route
                response = await route.endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
