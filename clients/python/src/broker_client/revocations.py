"""The revocation set an offline validator checks every token against, and the broker's
revocation feed document it is filled from (REVOCATION_FORMATS.md, "Revocation feed").

An entry names one `sid` (a login session that ended), `fam` (a refresh family revoked)
or `jti` (one access token revoked), with the `exp` after which no token it can match is
still valid. The set keeps each entry until that `exp` plus a grace (the validator's
leeway: a validator accepts a token until `exp + leeway`, so the entry must outlive it
by as much), then forgets it.

Reads (`match`) take no lock: the three maps are replaced or updated by one writer at a
time under a lock, and a CPython dict lookup is atomic against that. Memory is bounded
twice: by time (expiry) and by `max_entries`; at the cap the entries closest to their
end are dropped first (they protect the shortest remaining window), `evicted` counts
them and one warning per overflow episode says so.
"""

from __future__ import annotations

import heapq
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "KINDS",
    "FeedPage",
    "MalformedFeed",
    "RevocationEntry",
    "RevocationSet",
    "parse_feed",
]

log = logging.getLogger("broker_client.revocations")

KINDS: Final = ("sid", "fam", "jti")
_INDEX: Final = {kind: i for i, kind in enumerate(KINDS)}


@dataclass(frozen=True, slots=True)
class RevocationEntry:
    kind: str  # "sid", "fam" or "jti"
    value: str
    exp: float


class RevocationSet:
    """Revoked sessions, refresh families and token ids, each until its `exp` + `grace`."""

    def __init__(self, max_entries: int = 100_000, *, grace: float = 0.0) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self.grace = grace
        self.evicted = 0
        self._overflowing = False
        # One map per kind, value -> deadline (exp + grace). Replaced whole on `full`.
        self._maps: tuple[dict[str, float], ...] = ({}, {}, {})
        # (deadline, kind index, value), lazily pruned: a heap item is live only while
        # its map still holds that very deadline for that value.
        self._heap: list[tuple[float, int, str]] = []
        self._lock = threading.Lock()

    # --- reading (the validator's hot path) ------------------------------------------

    def match(self, claims: Mapping[str, Any], now: float) -> str | None:
        """The kind of the first live entry the token's claims match, or None."""
        sids, fams, jtis = self._maps
        if sids:
            deadline = sids.get(claims.get("sid"))  # type: ignore[arg-type]
            if deadline is not None and now < deadline:
                return "sid"
        if fams:
            deadline = fams.get(claims.get("fam"))  # type: ignore[arg-type]
            if deadline is not None and now < deadline:
                return "fam"
        if jtis:
            deadline = jtis.get(claims.get("jti"))  # type: ignore[arg-type]
            if deadline is not None and now < deadline:
                return "jti"
        return None

    def __len__(self) -> int:
        return sum(len(m) for m in self._maps)

    def deadline(self, kind: str, value: str) -> float | None:
        return self._maps[_INDEX[kind]].get(value)

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Every entry as {kind: {value: deadline}} (for tests and debugging)."""
        return {kind: dict(m) for kind, m in zip(KINDS, self._maps, strict=True)}

    # --- writing (the background thread, the back-channel receiver) -------------------

    def replace(self, entries: Iterable[RevocationEntry], now: float) -> None:
        """The feed said `full: true`: its entries are the whole set."""
        maps: tuple[dict[str, float], ...] = ({}, {}, {})
        heap: list[tuple[float, int, str]] = []
        for entry in entries:
            deadline = entry.exp + self.grace
            if deadline <= now:
                continue
            index = _INDEX[entry.kind]
            old = maps[index].get(entry.value)
            if old is None or deadline > old:
                maps[index][entry.value] = deadline
                heap.append((deadline, index, entry.value))
        heapq.heapify(heap)
        with self._lock:
            self._heap = heap
            self._maps = maps  # one assignment: readers see the old set or the new one
            self._enforce_cap()

    def merge(self, entries: Iterable[RevocationEntry], now: float) -> None:
        """The feed said `full: false`, or a back-channel logout arrived: add entries.

        Idempotent: an entry seen again keeps the later of its two deadlines.
        """
        with self._lock:
            for entry in entries:
                self._add(entry.kind, entry.value, entry.exp + self.grace, now)
            self._enforce_cap()

    def add(self, kind: str, value: str, exp: float, now: float) -> None:
        self.merge([RevocationEntry(kind, value, exp)], now)

    def purge(self, now: float) -> int:
        """Forget entries past their deadline; returns how many went."""
        removed = 0
        with self._lock:
            heap = self._heap
            while heap and heap[0][0] <= now:
                deadline, index, value = heapq.heappop(heap)
                if self._maps[index].get(value) == deadline:
                    del self._maps[index][value]
                    removed += 1
            self._compact()
        return removed

    def _add(self, kind: str, value: str, deadline: float, now: float) -> None:
        if deadline <= now:
            return
        index = _INDEX[kind]
        current = self._maps[index].get(value)
        if current is not None and current >= deadline:
            return
        self._maps[index][value] = deadline
        heapq.heappush(self._heap, (deadline, index, value))

    def _enforce_cap(self) -> None:
        size = len(self)
        if size <= self.max_entries:
            self._overflowing = False
            return
        if not self._overflowing:
            self._overflowing = True
            log.warning(
                "the revocation set is full (%d entries): dropping those closest to expiry "
                "first; raise max_entries above the broker's revocations per token lifetime",
                self.max_entries,
            )
        heap = self._heap
        while size > self.max_entries and heap:
            deadline, index, value = heapq.heappop(heap)
            if self._maps[index].get(value) == deadline:
                del self._maps[index][value]
                size -= 1
                self.evicted += 1
        self._compact()

    def _compact(self) -> None:
        # Superseded heap items (an entry re-sent with a later exp) are dropped lazily;
        # rebuild when they outnumber the live ones so the heap stays O(entries).
        live = len(self)
        if len(self._heap) > 2 * live + 64:
            self._heap = [
                (deadline, index, value)
                for index, m in enumerate(self._maps)
                for value, deadline in m.items()
            ]
            heapq.heapify(self._heap)


# --- the feed document -------------------------------------------------------------------


class MalformedFeed(ValueError):
    """The feed answered something that is not the documented object."""


@dataclass(frozen=True, slots=True)
class FeedPage:
    cursor: str
    full: bool
    entries: tuple[RevocationEntry, ...]
    skipped: int  # malformed entries left out


def _entry(item: Any) -> RevocationEntry | None:
    if not isinstance(item, dict):
        return None
    exp = item.get("exp")
    if exp.__class__ not in (int, float):  # bools are not NumericDates
        return None
    named = [kind for kind in KINDS if kind in item]
    if len(named) != 1:
        return None
    value = item[named[0]]
    if not isinstance(value, str) or not value:
        return None
    return RevocationEntry(named[0], value, float(exp))


def parse_feed(document: Any, issuer: str) -> FeedPage:
    """Check the feed object (JSON body, or the claims of its signed form).

    A document of the wrong shape is refused whole (`MalformedFeed`); a malformed entry
    in a good document is left out and counted, so that one bad entry cannot stop every
    other revocation from arriving.
    """
    if not isinstance(document, dict):
        raise MalformedFeed("the revocation feed is not a JSON object")
    if document.get("iss") != issuer:
        raise MalformedFeed("the revocation feed names another issuer")
    cursor, full, items = document.get("cursor"), document.get("full"), document.get("entries")
    if not isinstance(cursor, str) or not cursor:
        raise MalformedFeed("the revocation feed has no cursor")
    if not isinstance(full, bool):
        raise MalformedFeed("the revocation feed's 'full' is not a boolean")
    if not isinstance(items, list):
        raise MalformedFeed("the revocation feed's 'entries' is not a list")
    entries = [_entry(item) for item in items]
    good = tuple(e for e in entries if e is not None)
    return FeedPage(cursor, full, good, len(entries) - len(good))
