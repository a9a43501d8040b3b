"""Audit events, fed from one place: every security-relevant action calls `audit(...)`.

Fields are identifiers only (client id, user id, IP, family/session ids): never a
password, token, secret or key. Each call becomes one log line (`"audit": true`, with the
request id of the current request) through `broker.logs`, whose redaction is a second
guard behind FORBIDDEN_FIELDS, and feeds the Prometheus counters in `broker.metrics`.

Event names in use (other modules add theirs by calling `audit`; `broker.metrics` maps the
ones it counts; a throttled `login` names the counter that refused it in `limit`: `user_ip`,
`user` or `ip`):

| event | emitted by | outcome values |
| --- | --- | --- |
| `login` | password grant, login page | success, failure, unavailable, throttled |
| `login` | a right password of a two-factor account | two_factor_required |
| `shotgrid_signin_started` | login page: an App Session Launcher request started | success |
| `device_authorization` | device authorization endpoint (RFC 8628) | success |
| `device_approved`, `device_denied` | device verification page | success |
| `device_token` | device grant: tokens issued to an approved device | success |
| `sso` | authorization endpoint (existing browser session) | success |
| `login_csrf` | login form with a mismatched CSRF token | failure |
| `pkce_failure`, `code_wrong_client` | authorization code grant | failure |
| `code_replay` | authorization code grant (second redemption) | revoked |
| `refresh` | refresh grant | rotated, grace |
| `refresh_reuse_detected` | refresh grant | revoked |
| `session_revoked` | upstream re-check, ShotGrid event watcher | the reason |
| `shotgrid_permission_changed` | ShotGrid event watcher (a group changed) | success |
| `backchannel_logout` | back-channel logout delivery | delivered, retry, rejected, gave_up |
| `logout`, `logout_confirm_shown` | RP-initiated logout | success |
| `revoke` | RFC 7009 revocation (`token_type` access_token or refresh_token) | success |
| `token_exchange` | RFC 8693 exchange to a broker audience | success, inactive_subject |
| `token_exchange_shotgrid` | RFC 8693 exchange to ShotGrid | success, refused, unavailable |
| `client_credentials` | client credentials grant | success |
| `key_rotated`, `key_retired` | `KeyManager.rotate` / `retire` | success, not_found |
| `admin` | admin API changes (`action`: what, `admin`: who) | success, or the refusal |
| `store_error` | a request failing on the store | unavailable |

Besides the log line, the events that matter after the fact (logins, session ends,
revocations, reuse, key and admin events) are kept in the store for the admin API: the
sink bound to the current context (`bind_audit_sink`, which `broker.http.threads` does for
every call into the core) receives every event and keeps what it wants
(`broker.audit_trail`). No sink, nothing kept: only the log line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from types import ModuleType
from typing import Any

from broker.logs import EventLogger

_log = EventLogger("broker.audit")

AuditSink = Callable[[str, str, Mapping[str, Any]], None]
"""Receives (event, outcome, fields) of every audit event; must not block or raise."""

_sink: ContextVar[AuditSink | None] = ContextVar("broker_audit_sink", default=None)


def bind_audit_sink(sink: AuditSink | None) -> None:
    """Send the audit events of the current context (and of contexts copied from it) to
    `sink`. A context variable rather than a global, so two brokers in one process (tests)
    each keep their own events."""
    _sink.set(sink)


#: Field names that must never be logged, whatever a caller passes.
FORBIDDEN_FIELDS = frozenset(
    {
        "password",
        "refresh_token",
        "access_token",
        "id_token",
        "client_secret",
        "code",
        "secret",
        "key",
        "token",
        "subject_token",
        "actor_token",
        "code_verifier",
        "assertion",
        "device_code",
        "user_code",
        "session_token",
        "signin_state",
        "auth_token",
    }
)


_metrics: ModuleType | None = None


def audit(event: str, *, outcome: str = "success", **fields: Any) -> None:
    """Record one audit event, e.g. `audit("login", outcome="failure", client_id=...)`."""
    global _metrics
    clean = {k: v for k, v in fields.items() if k not in FORBIDDEN_FIELDS and v is not None}
    _log.info(event, audit=True, outcome=outcome, **clean)
    if _metrics is None:
        # Imported on first use, not with this module: commands that never serve (keys,
        # clients) import events but need no Prometheus client. An import statement here
        # would run the import machinery's fromlist handling at every event.
        from broker import metrics

        _metrics = metrics
    _metrics.observe_event(event, outcome, clean)
    sink = _sink.get()
    if sink is not None:
        sink(event, outcome, clean)
