"""Operational routes: Prometheus metrics and this service's OpenAPI document.

Kept apart from `routes.py` so the OAuth routes and the operator's routes change
independently; `broker/app.py` registers both lists.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from broker.components import Components
from broker.http.threads import run_sync


@functools.cache
def openapi_document() -> bytes:
    """`openapi.yaml`, shipped inside the package (a symlink to the repo root's copy in a
    checkout; setuptools copies its content into the wheel)."""
    return resources.files("broker").joinpath("openapi.yaml").read_bytes()


def observe_keys(parts: Components) -> None:
    """The signing-key gauges, from the key set this process has loaded (re-read from the
    store only when it is due anyway, as for any signature). Skipped while the store is
    down or before the first keys exist: a scrape never fails for them."""
    from broker import metrics
    from broker.store import StoreError
    from broker.tokens.keys import KeyError_

    interval = timedelta(seconds=parts.settings.key_rotation_interval)
    now = parts.now()
    for alg in parts.keys.algs:
        try:
            record = parts.keys.current(alg).record
        except (StoreError, KeyError_):  # store down, or no key yet: no gauge this time
            continue
        metrics.observe_signing_key(alg, record.activated_at or record.created_at, now, interval)


async def metrics(request: Request) -> Response:
    from broker.metrics import exposition

    parts: Components | None = getattr(request.app.state, "components", None)
    if parts is not None:  # None before the lifespan ran
        await run_sync(request, observe_keys, parts)
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
