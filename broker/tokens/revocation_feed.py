"""The revocation feed's rules, as pure functions of the live entries, a cursor and a clock
(REVOCATION_FORMATS.md, "Revocation feed").

How long an entry lives. A `sid` or `fam` entry must outlive every access token it can
match. The minter caps every access token at `iat + BROKER_ACCESS_TOKEN_TTL`, token
exchange included: a client's `max_exchange_lifetime` lets an exchanged token outlive its
*subject*, never that cap (`TokenMinter.access_token` takes the earlier of the two). And
no token is issued from an ended session or a revoked family afterwards (the refresh,
code and exchange grants all check them in the store first). So the last token an entry
can match is issued no later than the revocation, plus whatever a grant already in
flight takes to mint it, and expires within the access-token lifetime of that:
`entry_lifetime` = the access-token lifetime + `ISSUANCE_MARGIN` (grants in flight, and
clock skew between replicas). A `jti` entry lives exactly as long as its token.

The cursor. Clients pass back the `cursor` of their last read as `?since=`. A cursor is a
broker clock reading in milliseconds; an incremental read returns the entries created at
or after `since - OVERLAP`, because an entry's `created_at` is taken before its
transaction commits, so an entry committed just after a read may carry a time before
that read's cursor (SQLite's busy wait and MongoDB's write concern bound that delay well
below `OVERLAP`, and so does clock skew between replicas). The cursor returned is
`max(since, newest entry + 1 ms)`: it depends on the data, not on when the read ran, so
it stays the same while nothing is revoked, every validator converges on the same one
(one cached rendering serves them all) and `If-None-Match` answers 304.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from broker.store.records import RevocationEntry
from broker.tokens.claims import epoch

FEED_TYP = "revocations+jwt"
SIGNED_FEED_LIFETIME = 60
"""Seconds between the signed feed's `iat` and `exp`."""
ISSUANCE_MARGIN = timedelta(seconds=60)
"""Added to the access-token lifetime: tokens minted by grants in flight when the
revocation committed, and clock skew between replicas."""
OVERLAP = timedelta(seconds=30)
"""How far before its `since` an incremental read looks (commit delay and clock skew)."""
_MAX_CURSOR_DIGITS = 15


def entry_lifetime(access_token_ttl: int) -> timedelta:
    """How long a `sid` or `fam` entry stays on the feed (see the module docstring)."""
    return timedelta(seconds=access_token_ttl) + ISSUANCE_MARGIN


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def millis(value: datetime) -> int:
    """Epoch milliseconds (exact integer arithmetic: the stores keep milliseconds)."""
    return (value - _EPOCH) // _MS


def exp_seconds(value: datetime) -> int:
    """An entry's `exp` in whole seconds, rounded up: never before the entry ends."""
    return -(-millis(value) // 1000)


def parse_cursor(since: str | None) -> int | None:
    """The cursor a client sent, or None when absent or malformed (then the read is full)."""
    if since is None or not since.isdigit() or len(since) > _MAX_CURSOR_DIGITS:
        return None
    return int(since)


@dataclass(frozen=True, slots=True)
class FeedPage:
    cursor: int
    full: bool
    entries: tuple[RevocationEntry, ...]


def select(
    live: Sequence[RevocationEntry],
    since: int | None,
    now: datetime,
    *,
    lifetime: timedelta,
    overlap: timedelta = OVERLAP,
) -> FeedPage:
    """The page a read at `now` with cursor `since` gets from `live` (the store's live
    entries, ordered by creation). Entries that have expired by `now` never appear.

    Full (`since` None, from the future beyond `overlap`, or older than `lifetime`, the
    longest an entry lives): every live entry. Incremental: the live entries created at or
    after `since - overlap`."""
    current = tuple(e for e in live if e.expires_at > now)
    newest = max((millis(e.created_at) for e in current), default=None)
    since = servable(since, now, lifetime=lifetime, overlap=overlap)
    if since is None:
        return FeedPage(millis(now) if newest is None else newest + 1, True, current)
    low = since - overlap // _MS
    picked = tuple(e for e in current if millis(e.created_at) >= low)
    return FeedPage(since if newest is None else max(since, newest + 1), False, picked)


def servable(
    since: int | None, now: datetime, *, lifetime: timedelta, overlap: timedelta = OVERLAP
) -> int | None:
    """`since` if a read at `now` can answer it incrementally, else None (a full page):
    the cursor a rendering depends on, so every full read shares one."""
    now_ms = millis(now)
    if since is None or since > now_ms + overlap // _MS or since < now_ms - lifetime // _MS:
        return None
    return since


def feed_object(issuer: str, now: datetime, page: FeedPage) -> dict[str, Any]:
    """The feed object of REVOCATION_FORMATS.md (the JSON body, or the signed form's claims
    without `exp`)."""
    return {
        "iss": issuer,
        "iat": epoch(now),
        "cursor": str(page.cursor),
        "full": page.full,
        "entries": [
            {e.kind.value: e.value, "exp": exp_seconds(e.expires_at)} for e in page.entries
        ],
    }


def etag(page: FeedPage, representation: str) -> str:
    """A weak validator of the page's content (RFC 9110 §8.8.1): `iat` and the signature
    change with every rendering, the cursor and entries only when a revocation happens."""
    content = json.dumps(
        [
            representation,
            page.cursor,
            page.full,
            [[e.kind.value, e.value, exp_seconds(e.expires_at)] for e in page.entries],
        ],
        separators=(",", ":"),
    )
    return 'W/"' + hashlib.sha256(content.encode()).hexdigest()[:32] + '"'
