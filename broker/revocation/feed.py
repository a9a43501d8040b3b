"""`GET /revocations`: the revocation feed of REVOCATION_FORMATS.md, read once per second.

One store read (`RevocationStore.live_revocations`) serves every request of the next
second in this process, whatever their cursors, and each distinct page (full, or one
cursor: validators converge on the same cursor, see `broker.tokens.revocation_feed`) is
rendered once per snapshot, JSON or signed. Concurrent requests wait for the one read or
rendering in progress rather than repeating it. A page already rendered for the current
snapshot is answered by `cached` without leaving the event loop (a dictionary lookup, no
lock, no I/O), which is how most polls are served. The snapshot's age is measured on a
monotonic clock (a test's frozen broker clock still sees it refresh); its content, cursor
and `iat` come from the broker's clock.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from broker.clock import Clock, now_ms
from broker.store import RevocationEntry, RevocationStore
from broker.tokens import revocation_feed as rules
from broker.tokens.keys import KeyManager

JSON, JWT = "application/json", "application/jwt"
CACHE_SECONDS = 1.0
MAX_PAGES_PER_SNAPSHOT = 64
"""Distinct cursors rendered and kept per snapshot; past that (clients inventing cursors)
pages are rendered for the request alone."""


@dataclass(frozen=True, slots=True)
class Rendered:
    body: bytes
    content_type: str
    etag: str
    full: bool
    entries: int


@dataclass(slots=True)
class _Snapshot:
    taken: float
    now: datetime
    live: list[RevocationEntry]
    pages: dict[tuple[int | None, bool], Rendered] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class RevocationFeed:
    def __init__(
        self,
        store: RevocationStore,
        keys: KeyManager,
        issuer: str,
        clock: Clock,
        *,
        lifetime: timedelta,
        cache_seconds: float = CACHE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.keys = keys
        self.issuer = issuer
        self.clock = clock
        self.lifetime = lifetime
        self.cache_seconds = cache_seconds
        self._monotonic = monotonic
        self._snapshot: _Snapshot | None = None
        self._lock = threading.Lock()
        self.store_reads = 0
        self.renderings = 0

    def cached(self, since: str | None, signed: bool) -> Rendered | None:
        """The page if the current snapshot has it rendered already, else None; never
        blocks (safe on the event loop)."""
        snap = self._snapshot
        if snap is None or self._monotonic() - snap.taken >= self.cache_seconds:
            return None
        key = rules.servable(rules.parse_cursor(since), snap.now, lifetime=self.lifetime)
        return snap.pages.get((key, signed))

    def read(self, since: str | None, signed: bool) -> Rendered:
        """The page for a request (synchronous: a store read at most once a second)."""
        snap = self._current()
        key = rules.servable(rules.parse_cursor(since), snap.now, lifetime=self.lifetime)
        with snap.lock:
            page = snap.pages.get((key, signed))
            if page is None:
                page = self._render(snap, key, signed)
                if len(snap.pages) < MAX_PAGES_PER_SNAPSHOT:
                    snap.pages[(key, signed)] = page
        return page

    def _current(self) -> _Snapshot:
        snap = self._snapshot
        if snap is not None and self._monotonic() - snap.taken < self.cache_seconds:
            return snap
        with self._lock:
            snap = self._snapshot
            if snap is not None and self._monotonic() - snap.taken < self.cache_seconds:
                return snap
            now = now_ms(self.clock)
            live = self.store.live_revocations(now)  # StoreUnavailable: nothing cached
            self.store_reads += 1
            snap = self._snapshot = _Snapshot(self._monotonic(), now, live)
            return snap

    def _render(self, snap: _Snapshot, since: int | None, signed: bool) -> Rendered:
        self.renderings += 1
        page = rules.select(snap.live, since, snap.now, lifetime=self.lifetime)
        document = rules.feed_object(self.issuer, snap.now, page)
        if signed:
            document["exp"] = document["iat"] + rules.SIGNED_FEED_LIFETIME
            body = self.keys.sign(document, rules.FEED_TYP).encode()
        else:
            body = json.dumps(document, separators=(",", ":")).encode()
        return Rendered(
            body=body,
            content_type=JWT if signed else JSON,
            etag=rules.etag(page, JWT if signed else JSON),
            full=page.full,
            entries=len(page.entries),
        )
