"""ShotGrid deactivation within seconds: a reader of ShotGrid's event log.

Every `BROKER_SHOTGRID_EVENTS_POLL` seconds the broker reads the `Shotgun_HumanUser_Change`
EventLogEntry rows for `sg_status_list` and `permission_rule_set` after the last id it
handled, with its script key. A status change away from active is confirmed by re-reading
the user (the log says what happened, the directory says what is true now: a user
disabled and re-enabled within one poll keeps their sessions); a confirmed deactivation
(or a user gone from the directory) ends every session of that user, which puts their
`sid` entries on the revocation feed and sends back-channel logouts. A permission-group
change ends nothing yet: it is audited (`shotgrid_permission_changed`) and handed to the
registered hooks, for the admin feature to come.

One reader across processes and replicas: a store lease (renewed by every poll of its
holder, taken over by another process once it lapses); the last id handled is a store
watermark, raised after each event, so a reader that dies mid-page repeats at most the
event it was handling (ending a session twice is a no-op). A reader with no watermark yet
starts at the newest event, not at the site's history. The refresh grant's periodic
re-check (`BROKER_UPSTREAM_RECHECK`) stays as the safety net for anything missed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from broker.clock import Clock, now_ms
from broker.events import audit
from broker.sessions import Sessions
from broker.store import LeaseStore, WatermarkStore
from broker.upstream import (
    DirectoryUpstream,
    EventLogUpstream,
    UnknownUser,
    UserChange,
)
from broker.upstream.custody import Custody

log = logging.getLogger("broker.revocation.watcher")

LEASE = "shotgrid-events"
WATERMARK = "shotgrid-events"
STATUS, GROUP = "sg_status_list", "permission_rule_set"
ATTRIBUTES = (STATUS, GROUP)
ACTIVE = "act"
PAGE = 200
MAX_PAGES = 10
"""Pages read per poll at most; a backlog beyond that is read over the next polls."""

PermissionHook = Callable[[UserChange], None]


class WatcherStore(LeaseStore, WatermarkStore, Protocol):
    """What the watcher needs of a store."""


class WatcherUpstream(EventLogUpstream, DirectoryUpstream, Protocol):
    """The event log, and the directory to confirm a change against."""


@dataclass(slots=True)
class PollResult:
    events: int = 0
    ended: list[str] = field(default_factory=list)
    """sids ended by this poll."""
    started_at: int | None = None
    """Set when this poll found no watermark and started at this event id."""


def lease_ttl(poll: float) -> timedelta:
    """A holder renews at every poll; another process takes over after it missed a few."""
    return timedelta(seconds=max(30.0, 3 * poll))


class ShotGridEventWatcher:
    def __init__(
        self,
        store: WatcherStore,
        upstream: WatcherUpstream,
        sessions: Sessions,
        custody: Custody,
        clock: Clock,
        *,
        owner: str,
        poll: float,
    ) -> None:
        self.store = store
        self.upstream = upstream
        self.sessions = sessions
        self.custody = custody
        self.clock = clock
        self.owner = owner
        self.poll = poll
        self.lease = lease_ttl(poll)
        self.permission_hooks: list[PermissionHook] = []

    def on_permission_change(self, hook: PermissionHook) -> None:
        """Call `hook(change)` for every permission-group change read (on the reader's
        worker thread; a hook that raises is logged and does not stop the reader)."""
        self.permission_hooks.append(hook)

    def release(self) -> None:
        """Give the lease up (shutdown), so another process takes over at its next poll."""
        self.store.release_lease(LEASE, self.owner)

    def poll_once(self) -> PollResult | None:
        """One poll; None when another process holds the lease (nothing read). Upstream
        and store failures propagate, with the watermark at the last event handled."""
        if not self.store.try_lease(LEASE, self.owner, now_ms(self.clock), self.lease):
            return None
        result = PollResult()
        after = self.store.get_watermark(WATERMARK)
        if after is None:
            start = self.upstream.latest_event_id()
            result.started_at = self.store.raise_watermark(WATERMARK, start)
            return result
        for _ in range(MAX_PAGES):
            changes = self.upstream.user_changes(after, ATTRIBUTES, PAGE)
            for change in changes:
                self._handle(change, result)
                after = self.store.raise_watermark(WATERMARK, change.event_id)
                result.events += 1
            if len(changes) < PAGE:
                break
        return result

    def _handle(self, change: UserChange, result: PollResult) -> None:
        if change.attribute == STATUS:
            if change.new_value != ACTIVE and not self._active(change.user_id):
                result.ended.extend(self._end_sessions(change))
        elif change.attribute == GROUP:
            audit(
                "shotgrid_permission_changed",
                user_id=change.user_id,
                old_group=change.old_value,
                new_group=change.new_value,
                event_id=change.event_id,
            )
            for hook in self.permission_hooks:
                try:
                    hook(change)
                except Exception:
                    log.exception("permission-change hook failed for event %d", change.event_id)

    def _active(self, user_id: int) -> bool:
        try:
            return self.upstream.user_by_id(user_id).active
        except UnknownUser:
            return False

    def _end_sessions(self, change: UserChange) -> list[str]:
        ended = self.sessions.end_user_sessions(change.user_id, "shotgrid_deactivated")
        for sid in ended:
            self.custody.forget(sid)
            audit(
                "session_revoked",
                outcome="shotgrid_deactivated",
                sid=sid,
                user_id=change.user_id,
                event_id=change.event_id,
            )
        return ended


__all__ = ["PollResult", "ShotGridEventWatcher", "lease_ttl"]
