"""Structured logging: one JSON object per line (or a console rendering for humans), with
the request id of the current request on every line and secrets redacted on the way out.

structlog and the standard library share one pipeline (`structlog.stdlib.ProcessorFormatter`),
so lines from uvicorn, Authlib or `logging.getLogger(...)` calls are rendered, tagged and
redacted exactly like `structlog` calls. The redaction is the last line of defence behind
`events.FORBIDDEN_FIELDS`: it masks values under secret-looking keys, anything shaped like a
JWT or a bearer credential, secret URL parameters (`?code=`), cookie and authorization
headers in an HTTP library's debug dump, and the literal values of secrets registered at
start-up (the key-encryption keys, the ShotGrid script key).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "[redacted]"

#: Keys whose values are masked wherever they appear in a log event (case-insensitive).
SECRET_KEYS = frozenset(
    {
        "password",
        "passwd",
        "refresh_token",
        "access_token",
        "id_token",
        "subject_token",
        "actor_token",
        "client_secret",
        "secret",
        "secret_key",
        "old_secret_keys",
        "shotgrid_script_key",
        "script_key",
        "key",
        "private_jwk",
        "token",
        "code",
        "code_verifier",
        "assertion",
        "authorization",
        "cookie",
        "set-cookie",
    }
)

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
#: Secret-bearing URL parameters (`Location: ...?code=...` in an HTTP library's debug line).
_URL_PARAM = re.compile(
    r"(?i)([?&#](?:code|access_token|refresh_token|id_token|token|client_secret|password"
    r"|code_verifier|subject_token|user_code|device_code|session_token|auth_token"
    r"|sticky_id)=)[^&#\s'\"]+"
)
#: A ShotGrid App Session Launcher request id in a path (httpx's request lines): whoever
#: holds it may collect the session token once a person approves.
_APP_SESSION_PATH = re.compile(r"(app_session_request/)[^/?#\s'\"]+")
#: Raw header tuples as httpcore logs them at debug level: (b'set-cookie', b'...').
_HEADER_TUPLE = re.compile(
    r"(?i)(\(b?['\"](?:set-cookie|cookie|authorization|proxy-authorization)['\"],\s*b?['\"])"
    r"[^'\"]*"
)
#: Matches wherever one of the five patterns above could start; a string it does not match
#: (most log values: ids, paths, addresses) skips the five substitutions.
_SUSPECT = re.compile(r"eyJ|(?i:bearer|basic)\s|=|\([bB]?['\"]|app_session_request/")
_PAREN_QUOTE = re.compile(r"\([bB]?['\"]")
_SCHEME_WORD = re.compile(r"(?i:bearer|basic)\s")


def _suspect(text: str) -> bool:
    """`_SUSPECT.search(text) is not None`, by substring tests first: the regex, with its
    case-insensitive alternatives tried at every position, costs about 300 instructions
    a character, and every value of every log line goes through here (a property test
    holds the two equal). Non-ASCII text goes to the regex, whose case-insensitive
    match knows more letters than `str.lower` (U+017F, long s, for `s`)."""
    if "eyJ" in text or "=" in text or "app_session_request/" in text:
        return True
    if "(" in text and _PAREN_QUOTE.search(text) is not None:
        return True
    if text.isascii():
        lowered = text.lower()
        if "bearer" not in lowered and "basic" not in lowered:
            return False
    return _SCHEME_WORD.search(text) is not None


_MIN_SECRET_LENGTH = 8

_registered: set[str] = set()
_registered_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Never let this literal value reach a log line (e.g. the key-encryption key)."""
    if value and len(value) >= _MIN_SECRET_LENGTH:
        with _registered_lock:
            _registered.add(value)


def redact_text(text: str) -> str:
    if _suspect(text):
        text = _JWT.sub(REDACTED, text)
        text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
        text = _URL_PARAM.sub(lambda m: m.group(1) + REDACTED, text)
        text = _HEADER_TUPLE.sub(lambda m: m.group(1) + REDACTED, text)
        text = _APP_SESSION_PATH.sub(lambda m: m.group(1) + REDACTED, text)
    for secret in _registered:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redact(value: Any, depth: int = 0) -> Any:
    if depth > 6:
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            k: REDACTED if str(k).lower() in SECRET_KEYS else _redact(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact(v, depth + 1) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact_text(str(value))


def _needs_redaction(text: str) -> bool:
    if _suspect(text):
        return True
    return any(secret in text for secret in _registered)


_UNCHANGED = frozenset({int, float, bool, type(None)})
_SKIP, _SECRET, _VALUE = 0, 1, 2
_key_kinds: dict[str, int] = {}
"""How redaction treats each key seen so far: keys come from code, so this stays small
(it stops growing past a bound all the same)."""


def _key_kind(key: str) -> int:
    kind = _key_kinds.get(key)
    if kind is None:
        # Keys starting with `_` are structlog internals (`_record`, `_from_structlog`).
        secret = key.lower() in SECRET_KEYS
        kind = _SKIP if key.startswith("_") else _SECRET if secret else _VALUE
        if len(_key_kinds) < 4096:
            _key_kinds[key] = kind
    return kind


def redact_processor(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask secret keys, JWTs, bearer credentials, registered secrets.

    One search over all of a line's plain string values together decides whether any of
    them needs `redact_text` (whatever one value contains, the joined text contains too);
    most lines need none, and skip a search per value. A property test holds this equal
    to redacting every value on its own."""
    texts: list[str] = []
    masked: list[str] = []
    nested: list[str] = []
    for key, value in event_dict.items():
        kind = _key_kind(key)
        if kind == _VALUE:
            if type(value) is str:
                texts.append(value)
            elif type(value) not in _UNCHANGED:
                nested.append(key)
        elif kind == _SECRET:
            masked.append(key)
    if texts and _needs_redaction("\n".join(texts)):
        for key, value in event_dict.items():
            if type(value) is str and _key_kind(key) == _VALUE:
                event_dict[key] = redact_text(value)
    for key in masked:
        event_dict[key] = REDACTED
    for key in nested:
        event_dict[key] = _redact(event_dict[key])
    return event_dict


def _drop_color_message(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event_dict.pop("color_message", None)  # uvicorn's duplicate with ANSI codes
    event_dict.pop("message", None)  # set on the record by another handler's formatter
    return event_dict


_stamp: tuple[int, str] = (-1, "")
"""The second last formatted and its text (one tuple: threads swap it whole)."""


def iso_utc(ns: int) -> str:
    """`datetime.fromtimestamp(ns / 1e9, UTC).isoformat()` with `Z` for `+00:00`, as
    structlog's `TimeStamper(fmt="iso", utc=True)` writes it (microseconds floored, left
    out when zero), with the date and time formatted once a second instead of at every
    line: the datetime way costs about 19,000 instructions a line (a test holds the two
    equal)."""
    global _stamp
    second, rest = divmod(ns, 1_000_000_000)
    stamped, text = _stamp
    if stamped != second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _stamp = (second, text)
    micro = rest // 1000
    return f"{text}.{micro:06d}Z" if micro else f"{text}Z"


def utc_timestamp(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the `timestamp` of the line (ISO 8601, UTC, `Z`)."""
    event_dict["timestamp"] = iso_utc(time.time_ns())
    return event_dict


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _drop_color_message,
        utc_timestamp,
    ]


def _configure_structlog() -> None:
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # The configuration never changes after import, so each logger binds it once
        # instead of rebuilding a bound logger at every call (structlog's advice).
        cache_logger_on_first_use=True,
    )


_configure_structlog()


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is at the time (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_NEEDS_REPR = re.compile("[ \t=\r\n\"']")
_LEVEL_WIDTH = len("exception")  # the longest of structlog's level names
_EVENT_WIDTH = 30


class PlainConsoleRenderer:
    """structlog's `ConsoleRenderer(colors=False)`, line for line, at a fraction of its
    cost: it builds a `StringIO` per field, about 60 µs a line on a busy core, and the
    demo writes an access line per request in this format. Lines carrying an exception
    or a stack go to structlog's renderer itself; a property test holds the two equal."""

    def __init__(self) -> None:
        self._full = structlog.dev.ConsoleRenderer(colors=False)

    def __call__(self, logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> str:
        if "exception" in event_dict or "exc_info" in event_dict or "stack" in event_dict:
            return self._full(logger, name, event_dict)
        parts: list[str] = []
        if "timestamp" in event_dict:
            parts.append(str(event_dict.pop("timestamp")))
        if "level" in event_dict:
            parts.append(f"[{event_dict.pop('level'):<{_LEVEL_WIDTH}}]")
        if "event" in event_dict:
            parts.append(f"{event_dict.pop('event')!s:<{_EVENT_WIDTH}}")
        for key in ("logger", "logger_name"):
            if key in event_dict:
                parts.append(f"[{event_dict.pop(key)}]")
        for key in sorted(event_dict):
            value = event_dict[key]
            if isinstance(value, str) and _NEEDS_REPR.search(value) is None:
                parts.append(f"{key}={value}")
            else:
                parts.append(f"{key}={value!r}")
        return " ".join(part for part in parts if part).rstrip(" ")


def formatter(fmt: str) -> logging.Formatter:
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if fmt == "json"
        else PlainConsoleRenderer()
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
    )


class _BrokerHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one handler `configure_logging` owns (replaced, never stacked)."""

    def write_event(self, event_dict: MutableMapping[str, Any]) -> None:
        """Render a structlog event dict with this handler's formatter processors and
        write it, as `emit` would write the record of the same event (`EventLogger`)."""
        formatter = self.formatter
        assert isinstance(formatter, structlog.stdlib.ProcessorFormatter)
        # What `ProcessorFormatter.format` adds for its own processors (no record here).
        event_dict["_record"] = None
        event_dict["_from_structlog"] = True
        rendered: Any = event_dict
        for processor in formatter.processors:
            rendered = processor(None, "info", rendered)
        self.acquire()
        try:
            self.stream.write(rendered + self.terminator)
            self.flush()
        except RecursionError:
            raise
        except Exception:
            # As `emit` does: report on stderr, never fail the caller.
            self.handleError(logging.makeLogRecord({"msg": rendered}))
        finally:
            self.release()


_SHARED_PROCESSORS = _shared_processors()
_INFO = logging.INFO
#: Keys that need the processors the direct path leaves out (exception and stack
#: rendering, positional arguments): an event carrying one takes the usual path.
_NOT_DIRECT = frozenset({"exc_info", "stack_info", "positional_args", "exception", "stack"})


def _sole_handler(logger: logging.Logger) -> _BrokerHandler | None:
    """The broker's handler when it is the only place an INFO line of `logger` can go:
    no handler, filter or propagation stop on the way to the root, and the root holding
    the broker's handler alone (a test runner's capture handler makes this None)."""
    node: logging.Logger | None = logger
    while node is not None:
        if node.filters:
            return None
        if node.handlers:
            if node.parent is not None or len(node.handlers) != 1:
                return None
            handler = node.handlers[0]
            if (
                type(handler) is not _BrokerHandler
                or handler.filters
                or handler.level > _INFO
                or not isinstance(handler.formatter, structlog.stdlib.ProcessorFormatter)
            ):
                return None
            return handler
        if not node.propagate:
            return None
        node = node.parent
    return None


class EventLogger:
    """INFO events of one of the broker's own loggers (the access line, audit events),
    which every request writes: rendered straight onto the broker's handler when it is
    the only place they can go, the usual case in production and the demo.

    The line is the one structlog and logging would write (the same processors, in the
    same order, on the same event dict; a test holds the two equal), without the costs
    of the general path that these lines never need: a bound logger per call, two
    `LogRecord`s, the caller's frame, handler dispatch. About 40 µs less per line.
    Anything else (another handler installed, a filter, an exception to render) goes
    the usual way, through `get_logger(name)`.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger = logging.getLogger(name)
        self._fallback = get_logger(name)

    def debug(self, event: str, **fields: Any) -> None:
        """The rare DEBUG line, through the general path."""
        self._fallback.debug(event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        logger = self._logger
        if not logger.isEnabledFor(_INFO):
            return
        handler = _sole_handler(logger)
        if handler is None or not _NOT_DIRECT.isdisjoint(fields):
            self._fallback.info(event, **fields)
            return
        event_dict: Any = fields
        event_dict["event"] = event
        for processor in _SHARED_PROCESSORS:
            event_dict = processor(logger, "info", event_dict)
        handler.write_event(event_dict)


UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
QUIET_LOGGERS = ("httpx", "httpcore")
"""HTTP client libraries that log every ShotGrid call at INFO (two lines per login): their
lines come through only at WARNING or above, or everything at `debug`."""


def configure_logging(
    level: str = "info", fmt: str = "json", *, stream: TextIO | None = None
) -> logging.Handler:
    """Route every log line through the structlog pipeline to `stream` (stderr by default).

    Idempotent: the previous broker handler is replaced. Handlers others installed (a test
    runner's capture) are left alone. uvicorn's loggers are made to propagate here so its
    lines are JSON too, except its access log, which the request middleware replaces.
    The HTTP client's per-call INFO lines are silenced unless the level is `debug`.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _BrokerHandler):
            root.removeHandler(handler)
    handler = _BrokerHandler(stream if stream is not None else _CurrentStderr())
    handler.setFormatter(formatter(fmt))
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in UVICORN_LOGGERS:
        uv = logging.getLogger(name)
        uv.handlers.clear()
        # The request middleware writes one richer access line per request.
        uv.propagate = name != "uvicorn.access"
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if level == "debug" else logging.WARNING)
    return handler


def unconfigure_logging() -> None:
    """Remove the broker's handler (tests restore the process to how they found it)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _BrokerHandler):
            root.removeHandler(handler)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)


def register_settings_secrets(values: Iterable[str | None]) -> None:
    for value in values:
        register_secret(value)


def get_logger(name: str) -> Any:
    return structlog.stdlib.get_logger(name)
