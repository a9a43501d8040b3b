"""The key set cache over real HTTP: a tiny broker stand-in under uvicorn."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from broker_client import JWKSUnavailable, TokenValidator
from client_servers import serve
from client_support import FakeBroker, FakeClock


def test_validator_against_a_real_http_broker(clock: FakeClock) -> None:
    holder: dict[str, str] = {}
    counts = {"jwks": 0}

    async def discovery(request: Request) -> JSONResponse:
        return JSONResponse(
            {"issuer": holder["issuer"], "jwks_uri": holder["issuer"] + "/jwks.json"}
        )

    async def jwks(request: Request) -> JSONResponse:
        counts["jwks"] += 1
        return JSONResponse(broker.jwks(), headers={"Cache-Control": "public, max-age=60"})

    broker = FakeBroker(clock)
    app = Starlette(
        routes=[
            Route("/.well-known/openid-configuration", discovery),
            Route("/jwks.json", jwks),
        ]
    )
    with serve(app) as server:
        holder["issuer"] = server.url
        with httpx.Client() as client:
            validator = TokenValidator(
                server.url, "dna-api", http_client=client, clock=clock, cache_size=0
            )
            assert validator.validate(broker.mint(iss=server.url)).sub == "101"
            broker.add_key("k2")
            assert validator.validate(broker.mint(iss=server.url)).sub == "101"
            assert counts["jwks"] == 2
            clock.advance(61)
            validator.validate(broker.mint(iss=server.url))
            assert counts["jwks"] == 3
    # The server is gone: the cached keys serve until the staleness bound.
    clock.advance(61)
    token = broker.mint(iss=holder["issuer"])
    with httpx.Client() as client:
        validator.jwks._client = client
        assert validator.validate(token).sub == "101"
        clock.advance(validator.jwks.max_stale + 10)
        with pytest.raises(JWKSUnavailable):
            validator.validate(token)


def test_own_async_client_survives_event_loops(clock: FakeClock) -> None:
    """A validator without a client of the caller's, used from one event loop after
    another (a module-level validator under FastAPI's TestClient, asyncio.run scripts):
    a refetch in a later loop must not reuse a connection of a closed loop."""
    holder: dict[str, str] = {}

    async def discovery(request: Request) -> JSONResponse:
        return JSONResponse(
            {"issuer": holder["issuer"], "jwks_uri": holder["issuer"] + "/jwks.json"}
        )

    async def jwks(request: Request) -> JSONResponse:
        return JSONResponse(broker.jwks(), headers={"Cache-Control": "public, max-age=60"})

    broker = FakeBroker(clock)
    app = Starlette(
        routes=[
            Route("/.well-known/openid-configuration", discovery),
            Route("/jwks.json", jwks),
        ]
    )
    with serve(app) as server:
        holder["issuer"] = server.url
        validator = TokenValidator(server.url, "dna-api", clock=clock, cache_size=0)
        assert asyncio.run(validator.avalidate(broker.mint(iss=server.url))).sub == "101"
        clock.advance(61)  # stale: the next validation refetches, in a new loop
        assert asyncio.run(validator.avalidate(broker.mint(iss=server.url))).sub == "101"
        broker.add_key("k2")  # and an unknown kid, in a third
        assert asyncio.run(validator.avalidate(broker.mint(iss=server.url))).sub == "101"
        assert validator.jwks.fetches == 3
