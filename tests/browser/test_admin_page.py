"""The admin page in headless Chromium against a real broker and the ShotGrid emulator:
frank (permission group `Admin`) signs in at `/admin` through the broker's login page,
finds alice, ends one of her sessions (its refresh token then gets `invalid_grant`, the
other still works) and unlocks her after five wrong passwords; alice (`Artist`) gets 403.
Each change goes through its confirmation page. Her tokens come from the password grant
at her own address (127.0.0.2)."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from tests.support.broker import RunningBroker

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(120)]

ALICE_ADDRESS = "127.0.0.2"


def alice_at_her_desk(running: RunningBroker) -> httpx.Client:
    return httpx.Client(
        base_url=running.url,
        transport=httpx.HTTPTransport(local_address=ALICE_ADDRESS),
        headers={"User-Agent": "dna-cli/1.0"},
        timeout=10,
    )


def sid_of(tokens: dict[str, Any]) -> str:
    payload = tokens["access_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    sid: str = claims["sid"]
    return sid


def sign_in_at_admin(page: Any, running: RunningBroker, login: str) -> None:
    page.goto(running.url + "/admin")
    page.get_by_label("ShotGrid username").fill(login)
    page.get_by_label("Legacy Login password").fill(f"{login}-pw")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(running.url + "/admin")


def find(page: Any, login: str) -> None:
    page.get_by_label("ShotGrid login").fill(login)
    page.get_by_role("button", name="Find").click()
    page.locator("#person-login", has_text=login).wait_for()


def test_frank_ends_a_session_and_unlocks_alice(page: Any, broker: RunningBroker) -> None:
    with alice_at_her_desk(broker) as alice:
        kept, ended = (broker.password_grant(alice, "alice").json() for _ in range(2))

        sign_in_at_admin(page, broker, "frank")
        assert page.locator("#admin-name").inner_text() == "Frank Admin"
        find(page, "alice")
        rows = page.locator("#sessions tbody tr")
        assert rows.count() == 2
        assert ALICE_ADDRESS in page.locator("#sessions").inner_text()

        # End one session: its confirmation page first, nothing ended until confirmed.
        page.locator(f'tr[data-sid="{sid_of(ended)}"] a.end-session').click()
        page.locator("h1", has_text="End this session of alice?").wait_for()
        assert page.locator("#confirm-session").inner_text().count(sid_of(ended)) == 1
        page.get_by_role("button", name="End session").click()
        page.locator("#admin-notice", has_text="The session was ended").wait_for()
        assert page.locator("#sessions tbody tr").count() == 1
        assert page.locator(f'tr[data-sid="{sid_of(kept)}"]').count() == 1
        refused = broker.refresh(alice, ended["refresh_token"])
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
        assert broker.refresh(alice, kept["refresh_token"]).status_code == 200

        # Five wrong passwords lock her out at her address; frank unlocks her.
        for _ in range(5):
            wrong = broker.password_grant(alice, "alice", "not-her-password")
            assert wrong.json()["error"] == "invalid_grant"
        assert broker.password_grant(alice, "alice").status_code == 429
        page.locator("#unlock").click()
        page.locator("h1", has_text="Unlock alice?").wait_for()
        assert broker.password_grant(alice, "alice").status_code == 429  # not yet confirmed
        page.get_by_role("button", name="Unlock").click()
        page.locator("#admin-notice", has_text="failed sign-ins were cleared").wait_for()
        assert broker.password_grant(alice, "alice").status_code == 200


def test_alice_gets_403(page: Any, broker: RunningBroker) -> None:
    responses: list[int] = []
    page.on(
        "response",
        lambda r: responses.append(r.status) if r.url == broker.url + "/admin" else None,
    )
    sign_in_at_admin(page, broker, "alice")
    page.locator("#admin-error", has_text="(Artist)").wait_for()
    assert responses[-1] == 403
    assert page.locator("#sessions").count() == 0
    page.goto(broker.url + "/admin/keys")
    page.locator("#admin-error", has_text="may not administer").wait_for()
    assert page.locator("#keys").count() == 0
