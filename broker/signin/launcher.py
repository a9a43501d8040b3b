"""Sign-in through ShotGrid's App Session Launcher (research §6): the broker is the app.

A login page starts a request at the site (`appName` = the site name and a short random
code the page shows beside "approve only that", `machineId` = the broker's stable id),
the person approves it on the site, where SSO, Autodesk Identity and two-factor happen,
and the broker receives a ShotGrid session token it exchanges for the user's REST tokens.
No password passes through the broker.

One record per started request (`AppSessionRecord`) makes it safe to ask from anywhere:

- it is bound to the browser and the request that started it (`binding`), and found by a
  random handle only that page holds, so no other page can complete it, and it completes
  once (`approved` -> `completed`, a compare-and-swap);
- the upstream poll is paced in the store: whoever asks takes `next_poll_at` by
  compare-and-swap, so however many tabs, processes or replicas check one request, ShotGrid
  is polled at most every `POLL_INTERVAL` for it;
- the ShotGrid request id (a bearer capability for the poll) is kept sealed, and so is the
  session token between ShotGrid's answer and the exchange (kept only so that an outage in
  between can be retried: ShotGrid hands the token out once).
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from broker.clock import Clock, now_ms
from broker.store import AppSessionRecord, AppSessionStore
from broker.tokens.crypto import Sealer
from broker.tokens.secrets import sha256_b64
from broker.upstream import (
    AppSessionApproved,
    AppSessionGone,
    AppSessionUpstream,
    InactiveUser,
    LoginResult,
    SsoRequired,
    UnknownUser,
    UpstreamTokenRejected,
    UpstreamUnavailable,
)

POLL_INTERVAL = timedelta(seconds=2)
"""ShotGrid's own pace for the launcher's poll (research §6: tk-core polls every 2 s)."""

REQUEST_TTL = timedelta(seconds=300)
"""ShotGrid forgets an unapproved request after about 300 s (research §6)."""

PURGE_AFTER = timedelta(minutes=10)
"""A record stays this long after it expired, so a late check says "expired"."""

SITE_INFO_TTL = 60.0
"""Seconds the site's launcher setting is reused before asking ShotGrid again."""
SITE_INFO_RETRY = 5.0
"""Seconds before asking again after ShotGrid could not say."""

Ending = Literal["unknown", "denied", "expired", "completed", "refused"]


@dataclass(frozen=True, slots=True)
class Started:
    handle: str
    """The page's key to the request (random; the store knows only its hash)."""
    app_name: str
    """What ShotGrid asks the person to approve, e.g. "DNA sign-in 4821"."""
    url: str
    """ShotGrid's approval page for this request."""


@dataclass(frozen=True, slots=True)
class Waiting:
    """Not approved yet (or checked less than `POLL_INTERVAL` ago): check again later."""

    retry_after: float


@dataclass(frozen=True, slots=True)
class Approved:
    """Approved and exchanged: `complete` it, then start the broker session."""

    result: LoginResult


@dataclass(frozen=True, slots=True)
class Ended:
    """The request can no longer sign anyone in, and why."""

    reason: Ending


Check = Waiting | Approved | Ended


class Launcher:
    """Synchronous (store and ShotGrid calls): use it from a worker thread."""

    def __init__(
        self,
        store: AppSessionStore,
        sealer: Sealer,
        upstream: AppSessionUpstream,
        clock: Clock,
        *,
        site_name: str,
        machine_id: str,
    ) -> None:
        self.store = store
        self.sealer = sealer
        self.upstream = upstream
        self.clock = clock
        self.site_name = site_name
        self.machine_id = machine_id
        self._lock = threading.Lock()
        self._offered: bool | None = None
        self._asked_at: float | None = None

    def now(self) -> datetime:
        return now_ms(self.clock)

    # --- is it offered ---------------------------------------------------------------------
    def offered(self) -> bool:
        """Whether the site has the launcher on (cached per process). While ShotGrid
        cannot say, the last answer stands (off if there was none)."""
        now = self.now().timestamp()
        with self._lock:
            if self._asked_at is not None:
                ttl = SITE_INFO_TTL if self._offered is not None else SITE_INFO_RETRY
                if now - self._asked_at < ttl:
                    return bool(self._offered)
            self._asked_at = now
        try:
            offered: bool | None = self.upstream.site_info().app_session_launcher
        except UpstreamUnavailable:
            offered = None
        with self._lock:
            if offered is not None:
                self._offered = offered
            elif self._offered is not None:
                return self._offered  # keep the last answer; ask again after the TTL
            return bool(offered)

    def forget_site_info(self) -> None:
        """Ask ShotGrid again next time (the site answered that the launcher is off)."""
        with self._lock:
            self._offered = False
            self._asked_at = self.now().timestamp()

    # --- a request ---------------------------------------------------------------------------
    def start(self, binding: str) -> Started:
        """Start a request at the site for the page whose `binding` is given.
        AppSessionLauncherDisabled when the site has it off, UpstreamUnavailable when
        ShotGrid is down: nothing is stored then."""
        app_name = f"{self.site_name} sign-in {secrets.randbelow(10_000):04d}"
        started = self.upstream.create_app_session(app_name, self.machine_id)
        handle = secrets.token_urlsafe(32)
        key = sha256_b64(handle)
        now = self.now()
        request = json.dumps({"id": started.request_id, "url": started.url}).encode()
        self.store.create_app_session(
            AppSessionRecord(
                handle_hash=key,
                binding=binding,
                request=self.sealer.seal(request, f"asl:{key}"),
                app_name=app_name,
                created_at=now,
                expires_at=now + REQUEST_TTL,
                next_poll_at=now,
                purge_at=now + REQUEST_TTL + PURGE_AFTER,
            )
        )
        return Started(handle=handle, app_name=app_name, url=started.url)

    def view(self, handle: str, binding: str) -> Started | None:
        """The started request again (to re-render its page), if it is this page's."""
        record = self._record(handle, binding)
        if record is None:
            return None
        request = json.loads(self.sealer.open(record.request, f"asl:{record.handle_hash}"))
        return Started(handle=handle, app_name=record.app_name, url=str(request["url"]))

    def check(self, handle: str, binding: str) -> Check:
        """Has the person approved? Polls ShotGrid only if nobody did in the last
        `POLL_INTERVAL` (across processes); on approval, exchanges the session token for
        the user's tokens. UpstreamUnavailable when ShotGrid is down: check again later
        (an approval already received is kept, sealed, for that)."""
        record = self._record(handle, binding)
        if record is None:
            return Ended("unknown")
        now = self.now()
        if record.state == "completed":
            return Ended("completed")
        if record.state == "failed":
            return Ended("refused")
        if record.state in ("denied", "expired"):
            return Ended("denied" if record.state == "denied" else "expired")
        if record.state == "pending" and now >= record.expires_at:
            return Ended("expired")
        key = record.handle_hash
        if not self.store.claim_app_session_poll(key, now, now + POLL_INTERVAL):
            latest = self.store.get_app_session(key) or record
            return Waiting(max(0.0, (latest.next_poll_at - now).total_seconds()))
        if record.state == "approved" and record.session_token is not None:
            kept = json.loads(self.sealer.open(record.session_token, f"asl-token:{key}"))
            return self._exchange(key, str(kept["token"]), str(kept["login"]))
        request = json.loads(self.sealer.open(record.request, f"asl:{key}"))
        answer = self.upstream.poll_app_session(str(request["id"]))
        if isinstance(answer, AppSessionGone):
            # ShotGrid answers 404 alike for denied, expired and unknown (research §6):
            # before its lifetime is up, only a denial explains it.
            ending: Ending = "denied" if now < record.expires_at else "expired"
            self.store.set_app_session_state(key, "pending", ending, None)
            return Ended(ending)
        if not isinstance(answer, AppSessionApproved):
            return Waiting(POLL_INTERVAL.total_seconds())
        # Keep the approval (sealed) before the exchange: ShotGrid will not hand it out
        # again, and an outage during the exchange must leave something to retry with.
        kept_blob = json.dumps({"token": answer.session_token, "login": answer.login}).encode()
        self.store.set_app_session_state(
            key, "pending", "approved", self.sealer.seal(kept_blob, f"asl-token:{key}")
        )
        return self._exchange(key, answer.session_token, answer.login)

    def complete(self, handle: str) -> bool:
        """Mark an approved request completed, once (the caller starts the session only if
        this returns True); the sealed session token is dropped."""
        return self.store.set_app_session_state(sha256_b64(handle), "approved", "completed", None)

    # --- helpers -----------------------------------------------------------------------------
    def _record(self, handle: str, binding: str) -> AppSessionRecord | None:
        if not handle or len(handle) > 100:
            return None
        record = self.store.get_app_session(sha256_b64(handle))
        if record is None or not secrets.compare_digest(record.binding, binding):
            return None  # another browser or request: as if it did not exist
        return record

    def _exchange(self, key: str, token: str, login: str) -> Check:
        try:
            result = self.upstream.session_login(token, login)
        except (InactiveUser, UnknownUser, SsoRequired, UpstreamTokenRejected):
            self.store.set_app_session_state(key, "approved", "failed", None)
            return Ended("refused")
        return Approved(result)
