"""HotRoutes: the hot endpoints answered without Starlette's router, everything else by it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.http.dispatch import HotRoutes
from tests.support.servers import serve


async def hot(request: Request) -> Response:
    return JSONResponse({"endpoint": request.scope["endpoint"].__name__})


async def cold(request: Request) -> Response:
    return PlainTextResponse("cold")


HOT = [Route("/hot", hot, methods=["GET", "POST"])]


class RouterSeen:
    """Between HotRoutes and the router: records which requests reached the router."""

    def __init__(self, app: ASGIApp, seen: list[str]) -> None:
        self.app, self.seen = app, seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.seen.append(f"{scope['method']} {scope['path']}")
        await self.app(scope, receive, send)


class EndpointSeen:
    """Outermost: the endpoint the access log and metrics read after the response."""

    def __init__(self, app: ASGIApp, endpoints: list[Any]) -> None:
        self.app, self.endpoints = app, endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        if scope["type"] == "http":
            self.endpoints.append(scope.get("endpoint"))


def stack(seen: list[str], endpoints: list[Any]) -> ASGIApp:
    router = Router(routes=[*HOT, Route("/cold", cold)])
    return EndpointSeen(HotRoutes(RouterSeen(router, seen), HOT), endpoints)


def test_hot_routes_skip_the_router_and_others_reach_it() -> None:
    seen: list[str] = []
    endpoints: list[Any] = []
    with serve(stack(seen, endpoints)) as server, httpx.Client(base_url=server.url) as http:
        assert http.get("/hot").json() == {"endpoint": "hot"}
        assert http.post("/hot").json() == {"endpoint": "hot"}
        head = http.head("/hot")
        assert head.status_code == 200 and head.content == b""
        assert seen == []
        assert endpoints == [hot, hot, hot]
        assert http.get("/cold").text == "cold"
        refused = http.put("/hot")
        assert refused.status_code == 405
        assert set(refused.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
        assert http.get("/nowhere").status_code == 404
    assert seen == ["GET /cold", "PUT /hot", "GET /nowhere"]


def test_a_root_path_goes_to_the_router() -> None:
    seen: list[str] = []
    with (
        serve(stack(seen, []), root_path="/prefix") as server,
        httpx.Client(base_url=server.url) as http,
    ):
        assert http.get("/hot").json() == {"endpoint": "hot"}
    assert seen == ["GET /prefix/hot"]


def sync_endpoint(request: Request) -> Response:
    return PlainTextResponse("sync")


@pytest.mark.parametrize(
    "route",
    [Route("/item/{id}", hot), Route("/sync", sync_endpoint)],
    ids=["path parameters", "sync endpoint"],
)
def test_only_fixed_paths_and_async_endpoints(route: Route) -> None:
    with pytest.raises(ValueError, match="only"):
        HotRoutes(cold, [route])  # type: ignore[arg-type]
