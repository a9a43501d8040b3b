"""Operational routes: this service's OpenAPI document (and, in later steps, metrics).

Kept apart from `routes.py` so the OAuth routes and the operator's routes change
independently; `broker/app.py` registers both lists.
"""

from __future__ import annotations

import functools
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@functools.cache
def openapi_document() -> bytes:
    """`openapi.yaml`, shipped inside the package (a symlink to the repo root's copy in a
    checkout; setuptools copies its content into the wheel)."""
    return resources.files("broker").joinpath("openapi.yaml").read_bytes()


async def metrics(request: Request) -> Response:
    from broker.metrics import exposition

    body, content_type = exposition()
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})


async def openapi(request: Request) -> Response:
    # RFC 9512 registers application/yaml.
    return Response(
        openapi_document(),
        media_type="application/yaml",
        headers={"Cache-Control": "public, max-age=300"},
    )


ops_routes = [
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.yaml", openapi, methods=["GET"]),
]
