"""Every path that ends a session or revokes a family reaches the revocation feed and the
back-channel outbox, also those that arrived beside the feed: the admin API's session ends,
the device grant's sessions and families, refresh-token reuse and authorization-code
replay, each driven over HTTP against a real broker, the emulator and a real receiver."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from broker.store import ClientRecord
from tests.support.broker import RunningBroker
from tests.support.clock import MovableClock
from tests.support.device import DEVICE_GRANT, approve, authorize_device, poll
from tests.support.oidc import Flow, clock, http, login_code, running
from tests.support.receiver import Receiver, logout_receiver
from tests.support.services import claims_of, login, revoke

EVENT = "http://schemas.openid.net/event/backchannel-logout"
ADMIN = ("broker-admin", "broker-admin-secret")


__all__ = ["clock", "http", "running"]  # the shared fixtures, used by name


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with logout_receiver() as running_receiver:
        yield running_receiver


def listen(running: RunningBroker, client_id: str, uri: str) -> None:
    store = running.broker.store
    record = store.get_client(client_id)
    assert record is not None
    store.put_client(dataclasses.replace(record, backchannel_logout_uri=uri))


def admin(http: httpx.Client) -> dict[str, str]:
    response = http.post(
        "/token", data={"grant_type": "client_credentials", "scope": "admin"}, auth=ADMIN
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def on_feed(http: httpx.Client) -> set[tuple[str, str]]:
    """(kind, value) of every live entry; read once per broker (the feed caches a second)."""
    response = http.get("/revocations")
    assert response.status_code == 200, response.text
    return {(k, v) for e in response.json()["entries"] for k, v in e.items() if k != "exp"}


def told(receiver: Receiver) -> set[tuple[str, str]]:
    """(aud, sid) of every logout token the receiver got."""
    out = set()
    for token in receiver.received():
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["events"] == {EVENT: {}} and "nonce" not in claims
        out.add((claims["aud"], claims["sid"]))
    return out


def device_tokens(
    running: RunningBroker, http: httpx.Client, clock: MovableClock, client_id: str
) -> dict[str, Any]:
    device = authorize_device(http, client_id=client_id, scope="openid")
    with running.client() as browser:
        assert approve(browser, device["user_code"]).status_code == 200
    clock.advance(5)
    response = poll(http, device["device_code"], client_id=client_id)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_admin_ending_one_session(
    running: RunningBroker, http: httpx.Client, receiver: Receiver
) -> None:
    listen(running, "dna-cli", receiver.url)
    ended, kept = login(running, http), login(running, http)
    sid = claims_of(ended["access_token"])["sid"]
    response = http.delete(f"/admin/api/sessions/{sid}", headers=admin(http))
    assert response.status_code == 204, response.text
    assert on_feed(http) == {("sid", sid)}
    assert running.broker.backchannel.run_once() == 1
    assert told(receiver) == {("dna-cli", sid)}
    assert claims_of(kept["access_token"])["sid"] != sid


def test_admin_ending_every_session_of_a_person(
    running: RunningBroker, http: httpx.Client, receiver: Receiver
) -> None:
    listen(running, "dna-cli", receiver.url)
    listen(running, "dna-frontend", receiver.url)
    password = login(running, http)
    flow = Flow()
    code = flow.redeem(http, login_code(http, flow)).json()
    sids = {claims_of(t["access_token"])["sid"] for t in (password, code)}
    response = http.delete("/admin/api/users/alice/sessions", headers=admin(http))
    assert response.status_code == 200, response.text
    assert set(response.json()["ended"]) == sids
    assert on_feed(http) == {("sid", sid) for sid in sids}
    assert running.broker.backchannel.run_once() == 2
    assert told(receiver) == {
        ("dna-cli", claims_of(password["access_token"])["sid"]),
        ("dna-frontend", claims_of(code["access_token"])["sid"]),
    }


def test_device_grant_tokens_are_revocable(
    running: RunningBroker, http: httpx.Client, clock: MovableClock, receiver: Receiver
) -> None:
    """Device tokens name their session and family; a device client without refresh
    tokens holds no family, yet hears of its session's end (the session names it)."""
    store = running.broker.store
    store.put_client(
        ClientRecord(
            client_id="device-only",
            grant_types=(DEVICE_GRANT,),
            backchannel_logout_uri=receiver.url,
        )
    )
    listen(running, "dna-cli", receiver.url)
    with_family = device_tokens(running, http, clock, "dna-cli")
    without = device_tokens(running, http, clock, "device-only")
    family_claims = claims_of(with_family["access_token"])
    assert family_claims["sid"] and family_claims["fam"] and family_claims["jti"]
    lone = claims_of(without["access_token"])
    assert lone["sid"] and lone["jti"] and "fam" not in lone
    assert revoke(http, with_family["refresh_token"]).status_code == 200
    response = http.delete(f"/admin/api/sessions/{lone['sid']}", headers=admin(http))
    assert response.status_code == 204, response.text
    assert on_feed(http) == {("fam", family_claims["fam"]), ("sid", lone["sid"])}
    assert running.broker.backchannel.run_once() == 1
    assert told(receiver) == {("device-only", lone["sid"])}


def test_refresh_reuse_and_code_replay_land_on_the_feed(
    running: RunningBroker, http: httpx.Client, clock: MovableClock
) -> None:
    first = login(running, http)
    assert running.refresh(http, first["refresh_token"]).status_code == 200
    clock.advance(running.settings.refresh_reuse_grace + 1)
    reused = running.refresh(http, first["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    flow = Flow()
    code = login_code(http, flow)
    redeemed = flow.redeem(http, code)
    assert redeemed.status_code == 200, redeemed.text
    replayed = flow.redeem(http, code)
    assert replayed.status_code == 400 and replayed.json()["error"] == "invalid_grant"
    assert on_feed(http) == {
        ("fam", claims_of(first["access_token"])["fam"]),
        ("fam", claims_of(redeemed.json()["access_token"])["fam"]),
    }
