"""Prometheus metrics of the broker, exposed at `/metrics`.

Fed from four places: the request middleware (`observe_request`: requests by endpoint,
grant type and outcome, latency, tokens issued, throttled logins), the upstream transport
(`upstream_call`, `circuit_state`), the audit events (`observe_event`: logins, refresh
reuse, revoked families, key rotations) and the admin API (`admin_action`). Label values
are bounded (route templates, known grant types and error codes), so garbage requests
cannot grow the number of series.

Also a constant `broker_build_info{version,python}` and two gauges about the signing key
(`observe_signing_key`, set when `/metrics` is scraped from the key set the process has
loaded). No `_created` series: prometheus-client's per-series creation timestamps would
double the number of series for a value no alert uses.

Several workers (`serve --workers N`): set `PROMETHEUS_MULTIPROC_DIR` to an empty directory,
writable by the broker and wiped at each start, before the workers start; each worker then
writes its samples there (prometheus-client's multiprocess mode) and `/metrics` of any
worker reports the sum over all of them. Without it each worker reports only itself.
"""

from __future__ import annotations

import os
import platform
import re
from datetime import datetime, timedelta
from importlib import metadata
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

disable_created_metrics()  # type: ignore[no-untyped-call]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter(
    "broker_requests",
    "HTTP requests by endpoint, method, grant type and outcome.",
    ["endpoint", "method", "grant_type", "outcome", "status"],
)
REQUEST_LATENCY = Histogram(
    "broker_request_duration_seconds",
    "Time to answer an HTTP request, by endpoint and grant type.",
    ["endpoint", "grant_type"],
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_CALLS = Counter(
    "broker_upstream_requests",
    "Calls to ShotGrid by operation and outcome (success, client_error, server_error, "
    "timeout, transport_error, circuit_open).",
    ["operation", "outcome"],
)
UPSTREAM_LATENCY = Histogram(
    "broker_upstream_duration_seconds",
    "Time ShotGrid took to answer, by operation.",
    ["operation"],
    buckets=LATENCY_BUCKETS,
)
CIRCUIT_OPEN = Gauge(
    "broker_upstream_circuit_open",
    "1 while the ShotGrid circuit breaker is open (fails fast), else 0.",
    multiprocess_mode="max",
)
TOKENS_ISSUED = Counter(
    "broker_tokens_issued", "Successful token responses by grant type.", ["grant_type"]
)
LOGINS = Counter("broker_logins", "Password logins checked against ShotGrid.", ["outcome"])
THROTTLED = Counter(
    "broker_logins_throttled", "Requests refused with 429 by login throttling.", ["endpoint"]
)
REFRESH_REUSE = Counter(
    "broker_refresh_reuse_detected", "Refresh tokens presented again after the grace period."
)
FAMILIES_REVOKED = Counter(
    "broker_families_revoked", "Refresh families (or whole sessions) revoked.", ["reason"]
)
KEY_EVENTS = Counter("broker_key_events", "Signing key rotations and retirements.", ["event"])
BACKCHANNEL_LOGOUTS = Counter(
    "broker_backchannel_logouts",
    "Back-channel logout delivery attempts by outcome (delivered, retry, rejected, gave_up, "
    "dropped).",
    ["outcome"],
)
STORE_ERRORS = Counter(
    "broker_store_errors", "Requests that failed because the store was unavailable.", ["where"]
)
AUDIT_EVENTS = Counter(
    "broker_audit_events", "Audit events by name and outcome.", ["event", "outcome"]
)
AUDIT_DROPPED = Counter(
    "broker_audit_events_dropped",
    "Audit events not kept in the store's audit trail because its queue was full "
    "(the store unreachable for long); their log lines were written.",
)
ADMIN_ACTIONS = Counter(
    "broker_admin_actions",
    "Admin API actions by action and outcome (success, not_found, invalid, conflict, "
    "unauthenticated, forbidden, rate_limited, unavailable).",
    ["action", "outcome"],
)

BUILD_INFO = Gauge(
    "broker_build_info",
    "Always 1; the labels say which broker runs (version) on which Python.",
    ["version", "python"],
    multiprocess_mode="max",
)
SIGNING_KEY_AGE = Gauge(
    "broker_signing_key_age_seconds",
    "Seconds since the current signing key of each algorithm started signing.",
    ["alg"],
    multiprocess_mode="mostrecent",
)
NEXT_ROTATION = Gauge(
    "broker_signing_key_next_rotation_timestamp_seconds",
    "When the current signing key of each algorithm is due for automatic rotation (Unix "
    "time); absent while automatic rotation is off.",
    ["alg"],
    multiprocess_mode="mostrecent",
)


def _version() -> str:
    try:
        return metadata.version("shotgrid-token-broker")
    except metadata.PackageNotFoundError:
        return "unknown"


BUILD_INFO.labels(_version(), platform.python_version()).set(1)

_LABEL = re.compile(r"[a-z0-9_:.-]{1,48}")


def _bounded(value: str) -> str:
    return value if _LABEL.fullmatch(value) else "other"


def exposition() -> tuple[bytes, str]:
    """The text exposition of this process, or of every worker when
    PROMETHEUS_MULTIPROC_DIR is set (prometheus-client's multiprocess mode)."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


_RequestChildren = tuple[Any, Any, Any]
_request_children: dict[tuple[str, str, str, str, int], _RequestChildren] = {}
_MAX_CACHED_CHILDREN = 4096


def _children_for(
    endpoint: str, method: str, grant: str, outcome: str, status: int
) -> _RequestChildren:
    """The labelled series a request lands in, looked up once per label combination:
    `labels()` takes a lock and builds its key on every call, on every request. Bounded,
    since the method label is whatever the client sent."""
    key = (endpoint, method, grant, outcome, status)
    children = _request_children.get(key)
    if children is None:
        children = (
            REQUESTS.labels(endpoint, method, grant, _bounded(outcome), str(status)),
            REQUEST_LATENCY.labels(endpoint, grant),
            TOKENS_ISSUED.labels(grant) if endpoint == "/token" and status == 200 else None,
        )
        if len(_request_children) < _MAX_CACHED_CHILDREN:
            _request_children[key] = children
    return children


def observe_request(
    endpoint: str, method: str, status: int, seconds: float, notes: dict[str, str]
) -> None:
    grant = notes.get("grant_type", "none")
    if "outcome" in notes:
        outcome = notes["outcome"]
    elif status < 400:
        outcome = "success"
    else:
        outcome = "client_error" if status < 500 else "server_error"
    requests, latency, issued = _children_for(endpoint, method, grant, outcome, status)
    requests.inc()
    latency.observe(seconds)
    if issued is not None:
        issued.inc()
    if status == 429:
        THROTTLED.labels(endpoint).inc()


def observe_signing_key(
    alg: str, started: datetime, now: datetime, rotation_interval: timedelta
) -> None:
    """The signing-key gauges of one algorithm: age of its current key, and when automatic
    rotation (`BROKER_KEY_ROTATION_INTERVAL`, 0 for off) will replace it."""
    alg = _bounded(alg.lower()).upper()
    SIGNING_KEY_AGE.labels(alg).set(max(0.0, (now - started).total_seconds()))
    if rotation_interval > timedelta(0):  # a setting: it never changes in a process
        NEXT_ROTATION.labels(alg).set((started + rotation_interval).timestamp())


def upstream_call(operation: str, outcome: str, seconds: float) -> None:
    UPSTREAM_CALLS.labels(operation, outcome).inc()
    if outcome != "circuit_open":
        UPSTREAM_LATENCY.labels(operation).observe(seconds)


def circuit_state(is_open: bool) -> None:
    CIRCUIT_OPEN.set(1 if is_open else 0)


def store_error(where: str) -> None:
    STORE_ERRORS.labels(_bounded(where)).inc()


_audit_children: dict[tuple[str, str], tuple[str, str, Any]] = {}


def _audit_child(event: str, outcome: str) -> tuple[str, str, Any]:
    """The bounded labels and series of an audit event, looked up once per pair (events
    and outcomes come from code; the bound on the cache is a guard all the same)."""
    found = _audit_children.get((event, outcome))
    if found is None:
        bounded_event, bounded_outcome = _bounded(event), _bounded(outcome)
        found = (
            bounded_event,
            bounded_outcome,
            AUDIT_EVENTS.labels(bounded_event, bounded_outcome),
        )
        if len(_audit_children) < _MAX_CACHED_CHILDREN:
            _audit_children[(event, outcome)] = found
    return found


def observe_event(event: str, outcome: str, fields: dict[str, object]) -> None:
    """Counters fed from `events.audit`."""
    event, outcome, child = _audit_child(event, outcome)
    child.inc()
    if event == "login":
        LOGINS.labels(outcome).inc()
    elif event == "refresh_reuse_detected":
        REFRESH_REUSE.inc()
        FAMILIES_REVOKED.labels("reuse").inc()
    elif event in ("session_revoked", "family_revoked"):
        FAMILIES_REVOKED.labels(outcome).inc()
    elif event in ("logout", "code_replay"):
        FAMILIES_REVOKED.labels(event).inc()
    elif event == "revoke" and fields.get("token_type") == "refresh_token":
        FAMILIES_REVOKED.labels("revoke").inc()
    elif event in ("key_rotated", "key_retired"):
        KEY_EVENTS.labels(event).inc()
    elif event == "backchannel_logout":
        BACKCHANNEL_LOGOUTS.labels(outcome).inc()


def audit_dropped() -> None:
    AUDIT_DROPPED.inc()


def admin_action(action: str, outcome: str) -> None:
    """One admin API call; `action` comes from the route, never from the request."""
    ADMIN_ACTIONS.labels(_bounded(action), _bounded(outcome)).inc()
