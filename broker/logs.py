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
_MIN_SECRET_LENGTH = 8

_registered: set[str] = set()
_registered_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Never let this literal value reach a log line (e.g. the key-encryption key)."""
    if value and len(value) >= _MIN_SECRET_LENGTH:
        with _registered_lock:
            _registered.add(value)


def redact_text(text: str) -> str:
    if _SUSPECT.search(text) is not None:
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


def redact_processor(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask secret keys, JWTs, bearer credentials, registered secrets."""
    for key, value in list(event_dict.items()):
        if key.startswith("_"):
            continue  # structlog internals (`_record`, `_from_structlog`)
        if key.lower() in SECRET_KEYS:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact(value)
    return event_dict


def _drop_color_message(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    event_dict.pop("color_message", None)  # uvicorn's duplicate with ANSI codes
    event_dict.pop("message", None)  # set on the record by another handler's formatter
    return event_dict


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _drop_color_message,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
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


def formatter(fmt: str) -> logging.Formatter:
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
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
