"""Revocation reaching a real offline validator within seconds (issue 15): a
`broker_client.TokenValidator(..., revocations=True)` polling the broker's signed feed
refuses a logged-out token within its poll + 2 s, and a user deactivated in ShotGrid
within the broker's event poll + its poll + 2 s; a back-channel logout to
`broker_client`'s own receiver refuses the session's tokens before any feed read.

Real time must pass here (the validator's background thread polls on its own clock), so
each test polls its condition with a deadline; the broker's clock is the shared movable
one, which only matters for leases and expiry and stays put.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import broker_client
import httpx
import pytest
from starlette.applications import Starlette

from broker.revocation.watcher import WATERMARK
from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock
from tests.support.oidc import Flow, login_code
from tests.support.servers import ServerThread

pytestmark = [
    pytest.mark.skipif(
        not hasattr(broker_client, "TokenRevoked"),
        reason="broker_client has no revocation feed support yet (issue 15, client side)",
    ),
    pytest.mark.timeout(60),
]

POLL = 0.5
EVENTS_POLL = 1.0


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


def browser_sign_in(running: RunningBroker, http: httpx.Client) -> dict[str, str]:
    flow = Flow()
    response = flow.redeem(http, login_code(http, flow))
    assert response.status_code == 200, response.text
    tokens: dict[str, str] = response.json()
    return tokens


def refused_within(validator: broker_client.TokenValidator, token: str, seconds: float) -> float:
    """Seconds until `validate(token)` raises TokenRevoked; fails past `seconds`."""
    started = time.monotonic()
    while True:
        try:
            validator.validate(token)
        except broker_client.TokenRevoked:
            return time.monotonic() - started
        elapsed = time.monotonic() - started
        assert elapsed < seconds, f"still accepted after {elapsed:.1f} s"
        time.sleep(0.05)


def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


@pytest.fixture
def validator_for() -> Iterator[Callable[..., broker_client.TokenValidator]]:
    made: list[broker_client.TokenValidator] = []

    def make(issuer: str, **options: object) -> broker_client.TokenValidator:
        # A key fetch the test waits for must finish on a loaded machine (parallel
        # workers): the default 0.25 s bound is for production.
        options.setdefault("kid_wait", 5.0)
        validator = broker_client.TokenValidator(
            issuer, audience="dna-api", revocations=True, **options
        )
        made.append(validator)
        return validator

    yield make
    for validator in made:
        validator.close()


def test_logged_out_token_is_refused_within_a_poll(
    tmp_path: Path,
    clock: MovableClock,
    validator_for: Callable[..., broker_client.TokenValidator],
) -> None:
    with broker_with_emulator(tmp_path, clock) as (running, _emu, _site), running.client() as http:
        validator = validator_for(running.url, poll=POLL)
        tokens = browser_sign_in(running, http)
        access = tokens["access_token"]
        assert validator.validate(access).sub == "101"
        assert validator.refresh()  # the feed has been read once before the logout
        response = http.get("/logout", params={"id_token_hint": tokens["id_token"]})
        assert response.status_code == 200, response.text
        elapsed = refused_within(validator, access, POLL + 2)
        assert elapsed < POLL + 2


def test_user_deactivated_in_shotgrid_is_refused_within_two_polls(
    tmp_path: Path,
    clock: MovableClock,
    validator_for: Callable[..., broker_client.TokenValidator],
) -> None:
    with broker_with_emulator(
        tmp_path,
        clock,
        shotgrid_events_poll=EVENTS_POLL,
        app_options={"revocation_tasks": True},
    ) as (running, emu, _site):
        store = running.broker.store
        wait_for(lambda: store.get_watermark(WATERMARK) is not None)  # the watcher started
        validator = validator_for(running.url, poll=POLL)
        with running.client() as http:
            token = running.password_grant(http, "alice").json()["access_token"]
            other = running.password_grant(http, "bob").json()["access_token"]
        assert validator.validate(token).sg_login == "alice"
        emu.set_active("alice", False)
        refused_within(validator, token, EVENTS_POLL + POLL + 2)
        assert validator.validate(other).sg_login == "bob"  # only that user


def test_backchannel_logout_reaches_broker_clients_receiver_before_the_feed(
    tmp_path: Path,
    clock: MovableClock,
    validator_for: Callable[..., broker_client.TokenValidator],
) -> None:
    from broker_client.integrations.backchannel import backchannel_logout_endpoint

    with broker_with_emulator(
        tmp_path,
        clock,
        backchannel_poll=0.1,
        app_options={"revocation_tasks": True},
    ) as (running, _emu, _site):
        # The feed is read once at start and then not for a minute: only the
        # back-channel logout can make the validator refuse within the test.
        validator = validator_for(running.url, poll=60)
        app = Starlette()
        app.add_route(
            "/backchannel",
            backchannel_logout_endpoint(validator, client_id="dna-frontend"),
            methods=["POST"],
        )
        receiver = ServerThread(app).start()
        try:
            store = running.broker.store
            record = store.get_client("dna-frontend")
            assert record is not None
            store.put_client(
                dataclasses.replace(record, backchannel_logout_uri=f"{receiver.url}/backchannel")
            )
            with running.client() as http:
                tokens = browser_sign_in(running, http)
                access = tokens["access_token"]
                assert validator.refresh()
                assert validator.validate(access).sub == "101"
                http.get("/logout", params={"id_token_hint": tokens["id_token"]})
            refused_within(validator, access, 5)
            wait_for(lambda: store.pending_logout_notices() == [])
        finally:
            receiver.stop()
