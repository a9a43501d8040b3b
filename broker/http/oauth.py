"""Reading OAuth requests off Starlette and rendering Authlib's answers back.

Bodies are read once, bounded, and parsed strictly here (RFC 6749 §3.2: form encoding,
no repeated parameters), so Authlib only ever sees a finished `BrokerRequest` and never
touches the event loop.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any
from urllib.parse import parse_qsl

from authlib.oauth2.rfc6749 import InvalidClientError, InvalidRequestError
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response

from broker.http.documents import PreparedResponse
from broker.server import BrokerRequest

FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FIELDS = 64


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise BodyTooLarge
        except ValueError:
            raise InvalidRequestError("Invalid Content-Length header.") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def parse_pairs(raw: str, *, what: str) -> list[tuple[str, str]]:
    try:
        pairs = parse_qsl(
            raw,
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FIELDS,
            errors="strict",
        )
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequestError(f"Malformed {what}.") from None
    return pairs


_NAME_SAFE_TO_ECHO = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def reject_duplicates(pairs: list[tuple[str, str]]) -> None:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            # Echo only plain names: RFC 6749 §5.2 limits error_description to printable
            # ASCII without `"` and `\` (and Authlib raises ValueError otherwise).
            if _NAME_SAFE_TO_ECHO.fullmatch(key):
                raise InvalidRequestError(f"Parameter '{key}' is repeated.")
            raise InvalidRequestError("A parameter is repeated.")
        seen.add(key)


async def read_form(request: Request, limit: int) -> list[tuple[str, str]]:
    """The request body as form pairs; errors are RFC 6749 `invalid_request`."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    body = await read_body(request, limit)
    if ctype != FORM_TYPE:
        raise InvalidRequestError(f"The request body must be {FORM_TYPE}.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError("The request body is not valid UTF-8.") from None
    pairs = parse_pairs(text, what="form body")
    reject_duplicates(pairs)
    return pairs


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


async def oauth_request(
    request: Request, issuer: str, path: str, limit: int, *, with_query: bool = False
) -> BrokerRequest:
    form = await read_form(request, limit) if request.method == "POST" else []
    check_basic_authorization(request.headers)
    query: list[tuple[str, str]] = []
    if with_query:
        query = parse_pairs(request.url.query, what="query string")
        reject_duplicates(query)
    return BrokerRequest(
        request.method,
        issuer + path,
        request.headers,
        form,
        query,
        client_ip=client_ip(request),
    )


_DESCRIPTION_FORBIDDEN = re.compile(r"[^\x20-\x21\x23-\x5b\x5d-\x7e]")


def safe_description(text: str) -> str:
    """RFC 6749 §5.2: error_description is printable ASCII without `"` and `\\`. Authlib
    builds some descriptions from request input (e.g. an unsupported grant_type)."""
    return _DESCRIPTION_FORBIDDEN.sub("?", text)[:300]


def render(result: tuple[int, Any, list[tuple[str, str]]]) -> Response:
    """Authlib's (status, body, headers) as a response: the bytes and headers a Starlette
    `Response(content)` given those headers one by one would send (a test holds them
    equal), built straight into the raw list."""
    status, body, headers = result
    if isinstance(body, dict) and isinstance(body.get("error_description"), str):
        body = {**body, "error_description": safe_description(body["error_description"])}
    content = json.dumps(body, separators=(",", ":")) if isinstance(body, dict) else body
    payload = content.encode("utf-8") if isinstance(content, str) else bytes(content or b"")
    raw: list[tuple[bytes, bytes]] = []
    if status >= 200 and status not in (204, 304):
        raw.append((b"content-length", str(len(payload)).encode("latin-1")))
    for key, value in headers:
        name = key.lower().encode("latin-1")
        if any(existing == name for existing, _ in raw):
            MutableHeaders(raw=raw)[key] = value  # replaces it where it stands
        else:
            raw.append((name, value.encode("latin-1")))
    return PreparedResponse(payload, raw, status)


def check_basic_authorization(headers: Any) -> None:
    """Refuse, as `invalid_client` (401), HTTP Basic credentials that Authlib's
    `extract_basic_authorization` would choke on: non-ASCII base64 or credentials that are
    not UTF-8 (it raises ValueError/UnicodeDecodeError there, a 500)."""
    auth = headers.get("Authorization")
    if not auth or " " not in auth:
        return
    parts = auth.split(None, 1)
    if len(parts) != 2:
        # e.g. "Basic " then a non-space separator: Authlib's unpacking would fail.
        raise InvalidClientError(description="Malformed Authorization header.", status_code=401)
    scheme, credentials = parts
    if scheme.lower() != "basic":
        return
    try:
        base64.b64decode(credentials).decode("utf-8")
    except binascii.Error:
        return  # Authlib treats undecodable base64 as "no credentials"
    except (ValueError, UnicodeDecodeError):
        raise InvalidClientError(
            description="Malformed HTTP Basic client credentials.", status_code=401
        ) from None
