"""Audit events, fed from one place: every security-relevant action calls `audit(...)`.

Fields are identifiers only (client id, user id, IP, family/session ids): never a
password, token, secret or key. The logging backend renders them (JSON lines in
production); metrics hang off the same calls.
"""

from __future__ import annotations

import logging
from typing import Any

_log = logging.getLogger("broker.audit")

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
        "assertion",
    }
)


def audit(event: str, *, outcome: str = "success", **fields: Any) -> None:
    """Record one audit event, e.g. `audit("login", outcome="failure", client_id=...)`."""
    clean = {k: v for k, v in fields.items() if k not in FORBIDDEN_FIELDS and v is not None}
    _log.info(event, extra={"audit": {"event": event, "outcome": outcome, **clean}})
