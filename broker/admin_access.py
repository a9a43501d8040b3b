"""Who may use the admin page: a signed-in person whose ShotGrid permission group is one of
`BROKER_ADMIN_PERMISSION_GROUPS`.

ShotGrid is the authority, read with the broker's script key (`GroupUpstream`), never a
claim the person brings. The answer is remembered per browser session in the store
(`PermissionCheckStore`, so every process and replica shares it) for
`BROKER_UPSTREAM_RECHECK` seconds, the period after which a refresh re-checks that a person
is still active: the first page load of a session asks ShotGrid, later loads within the
period do not, and a person taken out of the group loses the page within the period.

An answer older than the period is never used while ShotGrid cannot be asked: the page
fails closed (`UpstreamUnavailable` reaches the caller), unlike the refresh grant's grace
(`BROKER_UPSTREAM_RECHECK_MAX_STALE`), because the page's power is the whole broker's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from broker.clock import Clock, now_ms
from broker.store import PermissionCheckRecord, PermissionCheckStore, SessionRecord
from broker.upstream import GroupUpstream, UnknownUser


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the broker holds to be true of a session's person now."""

    allowed: bool
    permission_group: str | None
    """The person's group; None when they have none, are disabled in ShotGrid, or their
    login is unknown there or now names another HumanUser."""
    fresh: bool
    """True when ShotGrid was asked for this verdict (not remembered)."""


class AdminAccess:
    def __init__(
        self,
        store: PermissionCheckStore,
        upstream: GroupUpstream,
        clock: Clock,
        *,
        groups: Sequence[str],
        recheck: timedelta,
    ) -> None:
        self.store = store
        self.upstream = upstream
        self.clock = clock
        self.groups = frozenset(groups)
        self.recheck = recheck

    def check(self, session: SessionRecord) -> Verdict:
        """The verdict for a live session's person: remembered if asked within the
        re-check period, else read from ShotGrid (raises UpstreamUnavailable when it
        cannot answer) and remembered. Store errors propagate."""
        now = now_ms(self.clock)
        kept = self.store.get_permission_check(session.sid, now)
        if kept is not None and kept.user_id == session.user_id:
            return self._judge(kept.permission_group, fresh=False)
        group = self._read_group(session)
        if self.recheck > timedelta(0):
            self.store.put_permission_check(
                PermissionCheckRecord(
                    sid=session.sid,
                    user_id=session.user_id,
                    login=session.login,
                    permission_group=group,
                    checked_at=now,
                    expires_at=now + self.recheck,
                )
            )
        return self._judge(group, fresh=True)

    def _read_group(self, session: SessionRecord) -> str | None:
        try:
            membership = self.upstream.permission_group(session.login)
        except UnknownUser:
            return None
        identity = membership.identity
        # A login given to another HumanUser since the sign-in is not this person.
        if identity.user_id != session.user_id or not identity.active:
            return None
        return membership.permission_group

    def _judge(self, group: str | None, *, fresh: bool) -> Verdict:
        return Verdict(group is not None and group in self.groups, group, fresh)
