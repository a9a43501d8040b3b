"""JSON documents that change far less often than they are fetched (the JWKS, discovery
metadata): rendered once into bytes and headers, answered from those.

Every validator and client library fetches them; rendering `JSONResponse` each time
(JSON encoding, header building) was most of the cost of a JWKS request.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response


class PreparedResponse(Response):
    """A response whose body and raw headers are already built."""

    def __init__(
        self, body: bytes, raw_headers: list[tuple[bytes, bytes]], status_code: int = 200
    ) -> None:
        self.status_code = status_code
        self.background = None
        self.body = body
        # Each response gets its own list: middleware adds headers to it in place.
        self.raw_headers = list(raw_headers)


class PreparedDocument:
    """One JSON document, re-rendered only when its source object is replaced (the key
    manager replaces its JWKS dict at every reload; discovery metadata never changes)."""

    def __init__(self, media_type: str, cache_control: str) -> None:
        self._media_type = media_type.encode("latin-1")
        self._cache_control = cache_control.encode("latin-1")
        self._source: object = None
        self._body = b""
        self._headers: list[tuple[bytes, bytes]] = []

    def response(self, source: dict[str, Any]) -> PreparedResponse:
        if source is not self._source:
            # The bytes JSONResponse renders, once per version of the document.
            body = json.dumps(
                source, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
            ).encode("utf-8")
            self._headers = [
                (b"cache-control", self._cache_control),
                (b"content-length", str(len(body)).encode("latin-1")),
                (b"content-type", self._media_type),
            ]
            self._body, self._source = body, source
        return PreparedResponse(self._body, self._headers)
