"""OIDC Back-Channel Logout 1.0, the broker's side: a session's end puts one logout notice
per listening client in the store's outbox, and delivery POSTs a logout token to a real
receiver on loopback, retrying with backoff, giving up after the last attempt, exactly
once across a broker restart and with two brokers on one store."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from broker import metrics
from shotgrid_emulator import IDLE_KEEPALIVE_SECONDS, ShotGridEmulator
from tests.support.broker import RunningBroker, broker_settings, broker_with_emulator, run_broker
from tests.support.clock import MovableClock
from tests.support.oidc import Flow, login_code, query_of
from tests.support.receiver import Receiver, logout_receiver
from tests.support.servers import ServerThread, reserve_port
from tests.support.services import claims_of, login

EVENT = "http://schemas.openid.net/event/backchannel-logout"


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with logout_receiver() as running_receiver:
        yield running_receiver


@pytest.fixture
def running(tmp_path: Path, clock: MovableClock) -> Iterator[RunningBroker]:
    with broker_with_emulator(
        tmp_path, clock, backchannel_retry_backoff=2.0, backchannel_max_attempts=4
    ) as (broker, _emu, _site):
        yield broker


@pytest.fixture
def http(running: RunningBroker) -> Iterator[httpx.Client]:
    with running.client() as client:
        yield client


def listen(running: RunningBroker, client_id: str, uri: str | None) -> None:
    store = running.broker.store
    record = store.get_client(client_id)
    assert record is not None
    store.put_client(dataclasses.replace(record, backchannel_logout_uri=uri))


def verified(running: RunningBroker, token: str, audience: str) -> dict[str, Any]:
    """The logout token checked as a receiver must (§2.6), with the broker's JWKS."""
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "logout+jwt" and header["alg"] == "RS256"
    jwks = jwt.PyJWKSet.from_dict(httpx.get(f"{running.url}/jwks.json").json())
    key = next(k for k in jwks.keys if k.key_id == header["kid"])
    claims: dict[str, Any] = jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience=audience,
        issuer=running.url,
        options={"verify_iat": False},
    )
    return claims


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def counter(outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "broker_backchannel_logouts_total", {"outcome": outcome}
    )
    return value or 0.0


def test_logout_sends_one_logout_token_per_listening_client(
    running: RunningBroker, http: httpx.Client, receiver: Receiver, clock: MovableClock
) -> None:
    """The browser signs in to two clients (one SSO session), logs out through the
    end_session_endpoint; each listening client gets its own token, the other nothing."""
    listen(running, "dna-frontend", receiver.url)
    listen(running, "review-tool", receiver.url + "?rp=review")
    first, second = Flow(), Flow(client_id="review-tool")
    tokens = first.redeem(http, login_code(http, first)).json()
    sso = http.get("/authorize", params=second.params())  # the same session answers at once
    assert sso.status_code == 302, sso.text
    assert second.redeem(http, query_of(sso.headers["location"])["code"]).status_code == 200
    sid = claims_of(tokens["access_token"])["sid"]
    response = http.get("/logout", params={"id_token_hint": tokens["id_token"]})
    assert response.status_code == 200, response.text
    assert running.broker.store.get_session(sid).revoked  # type: ignore[union-attr]
    notices = running.broker.store.pending_logout_notices()
    assert sorted(n.client_id for n in notices) == ["dna-frontend", "review-tool"]
    assert running.broker.backchannel.run_once() == 2
    got = receiver.received()
    assert len(got) == 2
    assert set(receiver.content_types) == {"application/x-www-form-urlencoded"}
    by_audience = {}
    for token in got:
        aud = jwt.decode(token, options={"verify_signature": False})["aud"]
        by_audience[aud] = verified(running, token, aud)
    assert set(by_audience) == {"dna-frontend", "review-tool"}
    claims = by_audience["dna-frontend"]
    assert claims == {
        "iss": running.url,
        "aud": "dna-frontend",
        "iat": int(clock.now.timestamp()),
        "exp": int(clock.now.timestamp()) + 120,
        "jti": claims["jti"],
        "sid": sid,
        "sub": "101",
        "events": {EVENT: {}},
    }
    assert "nonce" not in claims
    assert claims["jti"] != by_audience["review-tool"]["jti"]
    assert running.broker.store.pending_logout_notices() == []
    assert running.broker.backchannel.run_once() == 0  # nothing twice


def test_password_sign_in_is_told_even_without_a_family(
    tmp_path: Path, clock: MovableClock, receiver: Receiver
) -> None:
    """A client with the password grant only holds no refresh family; it made the sign-in,
    so it still hears of its end."""
    with broker_with_emulator(tmp_path, clock) as (running, _emu, _site):
        listen(running, "dna-cli", receiver.url)
        record = running.broker.store.get_client("dna-cli")
        assert record is not None
        running.broker.store.put_client(dataclasses.replace(record, grant_types=("password",)))
        with running.client() as http:
            body = login(running, http)
        assert "refresh_token" not in body
        sid = claims_of(body["access_token"])["sid"]
        assert running.broker.sessions.end_session(sid, "admin")
        assert running.broker.backchannel.run_once() == 1
        assert verified(running, receiver.received()[0], "dna-cli")["sid"] == sid


def test_clients_not_listening_get_nothing(
    running: RunningBroker, http: httpx.Client, receiver: Receiver
) -> None:
    body = login(running, http)
    sid = claims_of(body["access_token"])["sid"]
    assert running.broker.sessions.end_session(sid, "logout")
    assert running.broker.store.pending_logout_notices() == []
    assert running.broker.backchannel.run_once() == 0
    assert receiver.received() == []


def test_failing_receiver_is_retried_with_backoff(
    running: RunningBroker, http: httpx.Client, receiver: Receiver, clock: MovableClock
) -> None:
    listen(running, "dna-cli", receiver.url)
    receiver.answer(503, 500)
    sid = claims_of(login(running, http)["access_token"])["sid"]
    before = counter("delivered"), counter("retry")
    assert running.broker.sessions.end_session(sid, "logout")
    delivery = running.broker.backchannel
    assert delivery.run_once() == 1  # 503
    (pending,) = running.broker.store.pending_logout_notices()
    assert pending.attempts == 1 and pending.last_error == "HTTP 503"
    assert delivery.run_once() == 0  # not due before the backoff (2 s)
    clock.advance(2)
    assert delivery.run_once() == 1  # 500
    clock.advance(3)
    assert delivery.run_once() == 0  # the second retry waits twice as long (4 s)
    clock.advance(1)
    assert delivery.run_once() == 1  # 200
    got = receiver.received()
    assert len(got) == 3
    # The same notice each time: one jti a receiver can recognise a repeat by.
    assert len({jwt.decode(t, options={"verify_signature": False})["jti"] for t in got}) == 1
    assert running.broker.store.pending_logout_notices() == []
    assert (counter("delivered"), counter("retry")) == (before[0] + 1, before[1] + 2)


def test_gives_up_after_the_last_attempt(
    running: RunningBroker, http: httpx.Client, receiver: Receiver, clock: MovableClock
) -> None:
    listen(running, "dna-cli", receiver.url)
    receiver.answer(*[502] * 10)
    sid = claims_of(login(running, http)["access_token"])["sid"]
    gave_up = counter("gave_up")
    running.broker.sessions.end_session(sid, "logout")
    for _ in range(4):  # BROKER_BACKCHANNEL_MAX_ATTEMPTS=4
        assert running.broker.backchannel.run_once() == 1
        clock.advance(300)
    assert running.broker.backchannel.run_once() == 0
    assert len(receiver.received()) == 4
    assert running.broker.store.pending_logout_notices() == []
    assert counter("gave_up") == gave_up + 1


def test_a_receiver_refusing_the_token_is_not_retried(
    running: RunningBroker, http: httpx.Client, receiver: Receiver, clock: MovableClock
) -> None:
    listen(running, "dna-cli", receiver.url)
    receiver.answer(400)
    sid = claims_of(login(running, http)["access_token"])["sid"]
    running.broker.sessions.end_session(sid, "logout")
    assert running.broker.backchannel.deliver(running.broker.backchannel.claim()[0]) == "rejected"
    clock.advance(600)
    assert running.broker.backchannel.run_once() == 0
    assert len(receiver.received()) == 1


def test_unreachable_receiver_and_removed_client(
    running: RunningBroker, http: httpx.Client, clock: MovableClock
) -> None:
    listen(running, "dna-cli", f"http://127.0.0.1:{reserve_port()}/nobody")
    sid = claims_of(login(running, http)["access_token"])["sid"]
    running.broker.sessions.end_session(sid, "logout")
    delivery = running.broker.backchannel
    assert delivery.deliver(delivery.claim()[0]) == "retry"
    (pending,) = running.broker.store.pending_logout_notices()
    assert pending.last_error == "ConnectError"
    # The client stops listening before the retry: nobody is left to tell.
    listen(running, "dna-cli", None)
    clock.advance(10)
    assert delivery.deliver(delivery.claim()[0]) == "dropped"
    assert running.broker.store.pending_logout_notices() == []


def test_delivered_exactly_once_across_a_restart_and_two_brokers(
    tmp_path: Path, clock: MovableClock, receiver: Receiver
) -> None:
    """A broker stops with a logout notice due (its delivery never ran); two new brokers
    on the same SQLite file, each running its delivery loop, deliver it exactly once."""
    emu = ShotGridEmulator.default(clock=clock)
    site = ServerThread(emu.app, timeout_keep_alive=IDLE_KEEPALIVE_SECONDS).start()
    try:
        port = reserve_port()
        settings = broker_settings(tmp_path, site.url, port, backchannel_poll=0.05)
        with run_broker(settings, clock, port) as first:
            listen(first, "dna-cli", receiver.url)
            with first.client() as http:
                sid = claims_of(login(first, http)["access_token"])["sid"]
            assert first.broker.sessions.end_session(sid, "logout")
        assert receiver.received() == []
        other = reserve_port()
        again = settings.model_copy(update={"issuer": f"http://127.0.0.1:{other}"})
        with (
            run_broker(settings, clock, port, revocation_tasks=True) as second,
            run_broker(again, clock, other, revocation_tasks=True) as third,
        ):
            wait_for(lambda: len(receiver.received()) >= 1)
            wait_for(lambda: second.broker.store.pending_logout_notices() == [])
            # Both loops keep polling the (now empty) outbox; nothing more arrives.
            for broker in (second, third):
                assert broker.broker.backchannel.run_once() == 0
        (token,) = receiver.received()
        assert jwt.decode(token, options={"verify_signature": False})["sid"] == sid
    finally:
        site.stop()
