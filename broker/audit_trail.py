"""The audit trail the admin API reads: the audit events worth looking back at, kept in the
store (`AuditStore`) as a bounded, expiring collection.

Every audit event is a log line (`broker.events`); this keeps a copy of the ones an
administrator asks about after the fact: sign-ins and their refusals, session ends and
logouts, revocations and refresh-token reuse, key events and admin actions. The hot ones
(`refresh`, `client_credentials`, `token_exchange`, SSO redirects) are not kept: the log
has them.

No store write on any request's path: `record` (the sink `broker.events` calls) only
appends to a bounded in-process queue; the app flushes it in batches every
`FLUSH_INTERVAL` seconds on its worker threads, and once more at shutdown. What a crash
loses is what was queued since the last flush (about a second of these events); while the
store is down the queue keeps up to `MAX_QUEUED` events and then drops the oldest,
counted in `broker_audit_events_dropped_total`. The log lines are the complete record.
Each process keeps its own queue: the admin API flushes the queue of the process that
answers before it reads, and other workers' events appear within one flush interval.
Housekeeping prunes the collection to `BROKER_AUDIT_MAX_EVENTS` events of at most
`BROKER_AUDIT_RETENTION` seconds.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections import deque
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from broker.clock import Clock, now_ms
from broker.store import AuditRecord, AuditStore, StoreError

FLUSH_INTERVAL = 1.0
"""Seconds between flushes of the queue to the store (the loss window on a crash)."""
BATCH = 500
MAX_QUEUED = 10_000
MAX_VALUE = 256
"""Longest identifier kept (longer ones are cut)."""

KEPT_EVENTS = frozenset(
    {
        "login",
        "logout",
        "session_revoked",
        "session_ended",
        "family_revoked",
        "revoke",
        "refresh_reuse_detected",
        "code_replay",
        "device_approved",
        "device_denied",
        "key_rotated",
        "key_retired",
        "admin",
    }
)
"""Events copied into the store; every other one is only a log line."""


_sequence = itertools.count()


def event_id(at: datetime) -> str:
    """Unique, and sortable by time: epoch milliseconds, this process's sequence number
    (events of one process within one millisecond keep their order), then 32 random bits
    (not secret: the process's Mersenne Twister, as request ids) apart processes."""
    seq = next(_sequence) & 0xFFFFFFFF
    return f"{int(at.timestamp() * 1000):013d}{seq:08x}{random.getrandbits(32):08x}"


class AuditTrail:
    """The sink of one broker process: `record` queues, `flush` writes, `prune` bounds."""

    def __init__(
        self,
        store: AuditStore,
        clock: Clock,
        *,
        retention: timedelta,
        max_events: int,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self.store = store
        self.clock = clock
        self.retention = retention
        self.max_events = max_events
        self.enabled = max_events > 0 and retention > timedelta(0)
        self._queue: deque[AuditRecord] = deque()
        self._max_queued = max_queued
        self._lock = threading.Lock()
        self._flushing = threading.Lock()

    def record(self, event: str, outcome: str, fields: Mapping[str, Any]) -> None:
        """The `broker.events` sink: keep a copy of the events worth keeping. Never blocks
        on I/O and never raises."""
        if event not in KEPT_EVENTS or not self.enabled:
            return
        at = now_ms(self.clock)
        login = fields.get("login")
        record = AuditRecord(
            id=event_id(at),
            at=at,
            event=event,
            outcome=outcome,
            expires_at=at + self.retention,
            login=str(login).strip().lower()[:MAX_VALUE] if login else None,
            fields={
                k: str(v)[:MAX_VALUE] for k, v in fields.items() if k != "login" and v is not None
            },
        )
        dropped = False
        with self._lock:
            if len(self._queue) >= self._max_queued:
                self._queue.popleft()
                dropped = True
            self._queue.append(record)
        if dropped:
            from broker import metrics

            metrics.audit_dropped()

    __call__ = record

    def pending(self) -> int:
        return len(self._queue)

    def flush(self) -> int:
        """Write what is queued, in batches; returns how many were written. On a store
        failure the unwritten events go back to the front of the queue and the error is
        raised (the next flush tries again)."""
        written = 0
        with self._flushing:  # one flusher at a time keeps the order of batches
            while True:
                with self._lock:
                    batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
                if not batch:
                    return written
                try:
                    self.store.add_audit_events(batch)
                except StoreError:
                    with self._lock:
                        room = self._max_queued - len(self._queue)
                        self._queue.extendleft(reversed(batch[-room:] if room > 0 else []))
                    raise
                written += len(batch)

    def prune(self) -> int:
        """Drop expired events and all but the newest `max_events` (housekeeping)."""
        return self.store.prune_audit_events(now_ms(self.clock), self.max_events)
