"""OIDC Back-Channel Logout 1.0 §2.5-§2.8, the sending side: logout tokens POSTed from the
store's outbox.

A session's end writes one notice per client to tell (`Sessions.end_session`), in the same
store step. Any broker process then claims due notices under a lease (a compare-and-swap
per notice, so two processes never send the same one at once), signs a logout token and
POSTs it with a short timeout. A 2xx ends the notice; a 400 is the receiver refusing the
token (§2.8), retrying the same token cannot help, so it ends too (logged); anything else
(timeout, connection refused, 5xx, another status) is retried with exponential backoff
until `max_attempts`, then given up (logged and counted). A restart loses nothing: an
unfinished notice is due again once its lease passes.

Delivery is at least once: a process that dies after the receiver answered but before
the notice was finished sends it again after the lease. The logout token's `jti` is the
notice's id on every attempt, so a receiver recognises the repeat (§2.6 replay check).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Protocol

import httpx

from broker.clock import Clock, now_ms
from broker.events import audit
from broker.store import ClientStore, LogoutNotice, LogoutOutboxStore
from broker.tokens.claims import LOGOUT_TOKEN_TYP, logout_token_claims
from broker.tokens.keys import ID_TOKEN_ALG, KeyManager

log = logging.getLogger("broker.revocation.backchannel")

MAX_BACKOFF = timedelta(minutes=5)
BATCH = 16
"""Notices claimed at once by one process (each delivered on its own worker thread)."""


class BackchannelStore(LogoutOutboxStore, ClientStore, Protocol):
    """What delivery needs of a store: the outbox, and the clients' registered URIs."""


def retry_delay(attempts: int, base: float) -> timedelta:
    """Wait after the `attempts`-th failed attempt: base x 2^(attempts-1), at most 5 min."""
    return min(timedelta(seconds=base * 2 ** max(0, attempts - 1)), MAX_BACKOFF)


class BackchannelDelivery:
    def __init__(
        self,
        store: BackchannelStore,
        keys: KeyManager,
        issuer: str,
        clock: Clock,
        *,
        owner: str,
        timeout: float,
        max_attempts: int,
        backoff: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.store = store
        self.keys = keys
        self.issuer = issuer
        self.clock = clock
        self.owner = owner
        self.max_attempts = max_attempts
        self.backoff = backoff
        # Each of connect, write, read and pool waits may take `timeout`: the lease covers
        # all four, so no other process claims a notice whose attempt is still running.
        self.lease = timedelta(seconds=4 * timeout + 5)
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=BATCH, max_keepalive_connections=4),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def claim(self) -> list[LogoutNotice]:
        return self.store.claim_logout_notices(now_ms(self.clock), self.owner, self.lease, BATCH)

    def run_once(self) -> int:
        """Claim what is due and deliver it here, one after the other; notices handled."""
        notices = self.claim()
        for notice in notices:
            self.deliver(notice)
        return len(notices)

    def deliver(self, notice: LogoutNotice) -> str:
        """One attempt at one claimed notice; returns the outcome (also audited)."""
        client = self.store.get_client(notice.client_id)
        uri = client.backchannel_logout_uri if client is not None else None
        if uri is None:
            # The client was removed or no longer listens: nobody left to tell.
            return self._finish(notice, "dropped", None)
        token = self.keys.sign(
            logout_token_claims(
                issuer=self.issuer,
                client_id=notice.client_id,
                sid=notice.sid,
                user_id=notice.user_id,
                jti=notice.notice_id,
                issued_at=now_ms(self.clock),
            ),
            LOGOUT_TOKEN_TYP,
            alg=ID_TOKEN_ALG,
        )
        error: str
        try:
            response = self._http.post(uri, data={"logout_token": token})
        except httpx.TimeoutException:
            error = "timeout"
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        else:
            status = response.status_code
            response.close()
            if 200 <= status < 300:
                return self._finish(notice, "delivered", status)
            if status == 400:
                return self._finish(notice, "rejected", status)
            error = f"HTTP {status}"
        attempts = notice.attempts + 1
        if attempts >= self.max_attempts:
            return self._finish(notice, "gave_up", None, error=error)
        due = now_ms(self.clock) + retry_delay(attempts, self.backoff)
        if self.store.retry_logout_notice(notice, due, error):
            self._audit(notice, "retry", attempts=attempts, error=error)
        return "retry"

    def _finish(
        self, notice: LogoutNotice, outcome: str, status: int | None, *, error: str | None = None
    ) -> str:
        if not self.store.finish_logout_notice(notice):
            # Our lease passed and another process took the notice over: it decides.
            log.warning("back-channel logout %s: lease lost", notice.notice_id)
            return "lease_lost"
        self._audit(notice, outcome, attempts=notice.attempts + 1, status=status, error=error)
        if outcome in ("rejected", "gave_up"):
            log.warning(
                "back-channel logout to client %s %s after %d attempt(s): %s",
                notice.client_id,
                "refused by the receiver" if outcome == "rejected" else "given up",
                notice.attempts + 1,
                error or f"HTTP {status}",
            )
        return outcome

    @staticmethod
    def _audit(notice: LogoutNotice, outcome: str, **fields: object) -> None:
        audit(
            "backchannel_logout",
            outcome=outcome,
            client_id=notice.client_id,
            sid=notice.sid,
            user_id=notice.user_id,
            **fields,
        )
