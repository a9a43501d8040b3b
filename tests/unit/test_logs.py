"""Structured logging: redaction of secrets, request id validation, one JSON object a line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.events import audit
from broker.http.middleware import request_id_from
from broker.logs import (
    REDACTED,
    configure_logging,
    redact_processor,
    redact_text,
    register_secret,
    unconfigure_logging,
)

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMDEifQ.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("password", "hunter2", REDACTED),
        ("Client_Secret", "s3cret", REDACTED),
        ("refresh_token", "opaque", REDACTED),
        ("authorization", "Basic abc", REDACTED),
        ("detail", f"token was {JWT}!", f"token was {REDACTED}!"),
        ("detail", "Authorization: Bearer abcdefghijkl", f"Authorization: Bearer {REDACTED}"),
        (
            "nested",
            {"form": {"password": "x", "user": "alice"}},
            {"form": {"password": REDACTED, "user": "alice"}},
        ),
        ("items", [JWT, 3], [REDACTED, 3]),
        (
            "event",
            "location http://app/cb?code=abc123&state=s1",
            f"location http://app/cb?code={REDACTED}&state=s1",
        ),
        (
            "event",
            "[(b'set-cookie', b'broker_session=xyz; HttpOnly'), (b'x', b'y')]",
            f"[(b'set-cookie', b'{REDACTED}'), (b'x', b'y')]",
        ),
        ("client_id", "dna-cli", "dna-cli"),
        ("user_id", 101, 101),
    ],
)
def test_redaction(field: str, value: object, expected: object) -> None:
    out = redact_processor(None, "info", {"event": "x", field: value})
    assert out[field] == expected


def test_registered_secret_values_are_masked_anywhere() -> None:
    register_secret("kek-value-0123456789")
    out = redact_processor(None, "info", {"event": "boom kek-value-0123456789 boom"})
    assert out["event"] == f"boom {REDACTED} boom"


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        (b"abc-123", True),
        (b"trace:1.2_3", True),
        (b"a" * 128, True),
        (b"a" * 129, False),
        (b"", False),
        (b"has space", False),
        (b"new\nline", False),
        (b'{"json":1}', False),
        ("caf\u00e9".encode(), False),
    ],
)
def test_request_id_is_kept_only_when_safe(header: bytes, kept: bool) -> None:
    rid = request_id_from([(b"x-request-id", header)])
    assert (rid == header.decode("utf-8", "replace")) is kept
    assert 1 <= len(rid) <= 128


def test_generated_request_ids_are_unique() -> None:
    assert request_id_from([]) != request_id_from([])


@pytest.fixture
def buffer() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        yield out
    finally:
        unconfigure_logging()


def test_audit_is_one_json_line_without_forbidden_fields(buffer: io.StringIO) -> None:
    audit("login", outcome="failure", client_id="dna-cli", password="pw-123", ip="10.0.0.1")
    logging.getLogger("stdlib.caller").warning("plain %s line", "stdlib")
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert len(lines) == 2
    assert lines[0]["event"] == "login"
    assert lines[0]["audit"] is True
    assert lines[0]["outcome"] == "failure"
    assert lines[0]["client_id"] == "dna-cli"
    assert "password" not in lines[0]
    assert "pw-123" not in buffer.getvalue()
    assert lines[1]["event"] == "plain stdlib line"
    assert lines[1]["level"] == "warning"


def test_configure_is_idempotent(buffer: io.StringIO) -> None:
    other = io.StringIO()
    configure_logging("info", "json", stream=other)
    logging.getLogger("x").warning("once")
    assert other.getvalue().count("once") == 1
    assert buffer.getvalue() == ""


def test_sign_in_capabilities_are_masked() -> None:
    """An App Session Launcher request id (httpx logs the poll's URL at info level), a
    device or user code in a URL, and a ShotGrid session token parameter never show."""
    line = (
        'HTTP Request: PUT http://sg.example/internal_api/app_session_request/f00dfeed42 "HTTP/1.1'
        ' 200 OK" then GET /device?user_code=BCDF-GHJK&sticky_id=f00dfeed42'
        "&session_token=abcdef0123456789"
    )
    masked = redact_text(line)
    for secret in ("f00dfeed42", "BCDF-GHJK", "abcdef0123456789"):
        assert secret not in masked
    assert "app_session_request/" in masked


def _redact_without_prescreen(text: str) -> str:
    from broker import logs

    text = logs._JWT.sub(logs.REDACTED, text)
    text = logs._BEARER.sub(lambda m: f"{m.group(1)} {logs.REDACTED}", text)
    text = logs._URL_PARAM.sub(lambda m: m.group(1) + logs.REDACTED, text)
    text = logs._HEADER_TUPLE.sub(lambda m: m.group(1) + logs.REDACTED, text)
    return logs._APP_SESSION_PATH.sub(lambda m: m.group(1) + logs.REDACTED, text)


_PIECES = [
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
    "Bearer abcdefgh12345678",
    "BASIC\tZG5hLWJhY2tlbmQ6c2VjcmV0",
    "?code=abc123",
    "&Refresh_Token=xyz",
    "#access_token=q",
    "/internal_api/app_session_request/0a1b2c3d",
    "app_session_request/",
    "?sticky_id=0a1b&user_code=BCDF-GHJK",
    "(b'set-cookie', b'sid=1')",
    "(B'Authorization', B'Basic x')",
    "('cookie', 'a=b')",
    "/token",
    "127.0.0.1",
    " ",
    "=",
    "(",
    "'",
]


@given(st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=12)), max_size=8))
def test_the_prescreen_never_skips_a_redaction(parts: list[str]) -> None:
    """redact_text skips its five substitutions when a quick search finds nothing they
    could match; the result must equal running all five every time."""
    text = "".join(parts)
    assert redact_text(text) == _redact_without_prescreen(text)
