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


_TRICKY_LETTERS = ["ba\u017fic ", "BAS\u0130C\t", "bas\u0131c ", "BeArEr ", "basic\n", "bas", "ic "]


@given(
    st.lists(
        st.one_of(st.sampled_from(_PIECES + _TRICKY_LETTERS), st.text(max_size=12)),
        max_size=8,
    )
)
def test_the_quick_suspect_test_equals_the_regex(parts: list[str]) -> None:
    """`_suspect` answers with substring tests what `_SUSPECT.search` answers, including
    for letters the regex's case-insensitive match folds (U+017F, long s, matches s there)."""
    from broker import logs

    text = "".join(parts)
    assert logs._suspect(text) == (logs._SUSPECT.search(text) is not None)


def _redact_each_value(event_dict: dict[str, object]) -> dict[str, object]:
    """The redaction processor as it was: every value on its own."""
    from broker import logs

    out: dict[str, object] = {}
    for key, value in event_dict.items():
        if key.startswith("_"):
            out[key] = value
        elif key.lower() in logs.SECRET_KEYS:
            out[key] = REDACTED
        else:
            out[key] = logs._redact(value)
    return out


_VALUES = st.one_of(
    st.sampled_from(_PIECES),
    st.text(max_size=20),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.lists(st.sampled_from(_PIECES), max_size=3),
    st.dictionaries(st.sampled_from(["password", "user", "note"]), st.sampled_from(_PIECES)),
)
_KEYS = st.one_of(
    st.sampled_from(["event", "client_id", "Password", "token", "_record", "ip", "detail"]),
    st.text(min_size=1, max_size=8),
)


@given(st.dictionaries(_KEYS, _VALUES, max_size=8))
def test_one_search_per_line_redacts_as_every_value_alone(event: dict[str, object]) -> None:
    register_secret("registered-secret-0123")
    event = {**event, "extra": "x registered-secret-0123 y"} if len(event) % 3 == 0 else event
    assert redact_processor(None, "info", dict(event)) == _redact_each_value(event)


_CONSOLE_KEYS = st.sampled_from(
    ["timestamp", "level", "event", "logger", "logger_name", "a", "z", "status", "x y"]
)
_CONSOLE_VALUES = st.one_of(
    st.text(max_size=40), st.integers(), st.floats(), st.none(), st.lists(st.integers())
)


@given(st.dictionaries(_CONSOLE_KEYS, _CONSOLE_VALUES))
def test_the_console_renderer_writes_structlogs_lines(event: dict[str, object]) -> None:
    import structlog

    from broker.logs import PlainConsoleRenderer

    if not isinstance(event.get("level", ""), str):
        event["level"] = "info"  # structlog's own renderer needs a string there
    expected = structlog.dev.ConsoleRenderer(colors=False)(None, "info", dict(event))
    assert PlainConsoleRenderer()(None, "info", dict(event)) == expected


def test_the_console_renderer_leaves_exceptions_to_structlog() -> None:
    from broker.logs import PlainConsoleRenderer

    line = PlainConsoleRenderer()(None, "error", {"event": "boom", "exception": "Traceback..."})
    assert line == "boom\nTraceback..."


def _without_timestamp(line: str, fmt: str) -> object:
    if fmt == "json":
        data = json.loads(line)
        assert data.pop("timestamp")
        return list(data.items())  # the order of the keys too
    timestamp, rest = line.split(" ", 1)
    assert timestamp.endswith("Z")
    return rest


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_event_lines_equal_the_general_path(fmt: str) -> None:
    """`EventLogger` writes straight to the broker's handler the line structlog and
    logging would have written for the same event."""
    import structlog

    from broker.logs import EventLogger, get_logger

    out = io.StringIO()
    configure_logging("info", fmt, stream=out)
    tokens = structlog.contextvars.bind_contextvars(request_id="rid-1")
    try:
        fields = {"method": "GET", "status": 200, "duration_ms": 1.5, "note": f"a {JWT}"}
        EventLogger("broker.test.direct").info("http_request", **fields)
        get_logger("broker.test.direct").info("http_request", **fields)
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
        unconfigure_logging()
    direct, general = out.getvalue().splitlines()
    assert JWT not in direct
    assert _without_timestamp(direct, fmt) == _without_timestamp(general, fmt)


def test_event_lines_reach_other_handlers_too() -> None:
    """With another handler installed (a test runner's capture), the line takes the
    general path and reaches both; below the level it reaches none."""
    from broker.logs import EventLogger

    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    records: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    capture = Capture()
    root = logging.getLogger()
    root.addHandler(capture)
    try:
        EventLogger("broker.test.other").info("seen", client_id="dna-cli")
        logging.getLogger("broker.test.other").setLevel(logging.WARNING)
        EventLogger("broker.test.other").info("not seen")
    finally:
        root.removeHandler(capture)
        logging.getLogger("broker.test.other").setLevel(logging.NOTSET)
        unconfigure_logging()
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["seen"]
    assert len(records) == 1


@given(st.integers(min_value=0, max_value=253402300799 * 10**9 + 999_999_999))
def test_timestamps_are_structlogs(ns: int) -> None:
    """The `timestamp` of every line, as structlog's TimeStamper(fmt="iso", utc=True)
    writes it for the same instant (microseconds floored, and left out when zero)."""
    from datetime import UTC, datetime, timedelta

    from broker.logs import iso_utc

    instant = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)
    assert iso_utc(ns) == instant.isoformat().replace("+00:00", "Z")
    assert iso_utc(ns - ns % 10**9) == instant.replace(microsecond=0).isoformat()[:-6] + "Z"
