"""`render`: Authlib's (status, body, headers) answer built straight into raw headers must
send what a Starlette `Response` given the same headers one by one sends."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from starlette.responses import Response

from broker.http.oauth import render, safe_description


def starlette_render(result: tuple[int, Any, list[tuple[str, str]]]) -> Response:
    """How render built its response before: Response(content), then each header."""
    status, body, headers = result
    if isinstance(body, dict) and isinstance(body.get("error_description"), str):
        body = {**body, "error_description": safe_description(body["error_description"])}
    content = json.dumps(body, separators=(",", ":")) if isinstance(body, dict) else body
    response = Response(content, status_code=status)
    for key, value in headers:
        response.headers[key] = value
    return response


def sent(response: Response) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {"type": "http", "method": "POST", "path": "/token", "headers": []}
    asyncio.run(response(scope, receive, send))  # type: ignore[arg-type]
    return messages


HEADER_NAMES = st.sampled_from(["Content-Type", "Cache-Control", "Pragma", "WWW-Authenticate"])
HEADERS = st.lists(st.tuples(HEADER_NAMES, st.text("abc ;=/-", max_size=12)), max_size=5)
BODIES = st.one_of(
    st.dictionaries(
        st.sampled_from(["error", "error_description", "access_token", "expires_in"]),
        st.one_of(st.text(max_size=20), st.integers()),
    ),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.none(),
)


@given(st.sampled_from([200, 204, 302, 304, 400, 401, 503]), BODIES, HEADERS)
def test_render_sends_what_a_starlette_response_sends(
    status: int, body: Any, headers: list[tuple[str, str]]
) -> None:
    assert sent(render((status, body, headers))) == sent(starlette_render((status, body, headers)))


def test_a_token_answer() -> None:
    answer = (
        200,
        {"access_token": "x", "expires_in": 600},
        [("Content-Type", "application/json"), ("Cache-Control", "no-store")],
    )
    start, body = sent(render(answer))
    assert start["status"] == 200
    assert start["headers"] == [
        (b"content-length", b"37"),
        (b"content-type", b"application/json"),
        (b"cache-control", b"no-store"),
    ]
    assert body["body"] == b'{"access_token":"x","expires_in":600}'
