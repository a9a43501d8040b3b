"""The refresh-rotation rules (RFC 9700 §4.14.2), in one place, as pure functions.

Backends only read the chain and offer one compare-and-swap (`RefreshStore.claim_refresh`);
what a presented refresh token's state means is decided here, for every backend alike
(Dex keeps this policy in its server, `server/refreshhandlers.go`, for the same reason):

- the chain is unusable when the family or session is revoked, or the token, family or
  session has expired: INVALID, nothing written;
- an unused token is claimed: ROTATED, with the new successor;
- a used token presented again within `grace` of its use, while its successor is still
  unused: GRACE, answered with that same successor (a client that lost the response of a
  rotation may retry it);
- any other reuse: REUSED, and the whole family is revoked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from broker.store.records import FamilyRecord, RefreshChain, RefreshTokenRecord


class RotationStatus(StrEnum):
    ROTATED = "rotated"
    """The parent was unused: it is now used and the successor is stored."""
    GRACE = "grace"
    """The parent was used within the grace period: `successor` is the earlier successor."""
    REUSED = "reused"
    """The parent was used before the grace period: the family is now revoked."""
    INVALID = "invalid"
    """Expired, or its family or session revoked or expired."""


@dataclass(frozen=True, slots=True)
class RotationResult:
    status: RotationStatus
    successor: RefreshTokenRecord | None = None
    family: FamilyRecord | None = None
    problem: str | None = None
    """For INVALID: `revoked` or `expired`, to tell the client which."""


def chain_problem(chain: RefreshChain, now: datetime) -> str | None:
    """Why the chain cannot be refreshed (`revoked`, `expired`), or None if it can."""
    token, family, session = chain
    if family.revoked or session.revoked:
        return "revoked"
    if token.expires_at <= now or family.expires_at <= now or session.expires_at <= now:
        return "expired"
    return None


def judge_reuse(
    used_at: datetime, successor: RefreshTokenRecord | None, now: datetime, grace: timedelta
) -> RotationStatus:
    """A used token presented again: GRACE or REUSED."""
    if now - used_at <= grace and successor is not None and successor.used_at is None:
        return RotationStatus.GRACE
    return RotationStatus.REUSED
