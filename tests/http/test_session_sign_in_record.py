"""Every session records how it signed in, from where and with what (for the admin API's
session list): the password grant and the login page's password form, over real HTTP from
a second loopback address."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock
from tests.support.oidc import Flow, query_of, submit_login


@pytest.fixture
def running(tmp_path: Path) -> Iterator[RunningBroker]:
    with broker_with_emulator(tmp_path, MovableClock()) as (broker, _emu, _site):
        yield broker


AGENT = "dna-cli/3.2 (Linux)"


def client_from(running: RunningBroker, address: str) -> httpx.Client:
    return httpx.Client(
        base_url=running.url,
        timeout=10,
        headers={"User-Agent": AGENT},
        transport=httpx.HTTPTransport(local_address=address),
    )


def session_of(running: RunningBroker, access_token: str) -> object:
    sid = jwt.decode(access_token, options={"verify_signature": False})["sid"]
    return running.broker.store.get_session(sid)


def test_password_grant_session(running: RunningBroker) -> None:
    with client_from(running, "127.0.0.2") as http:
        body = running.password_grant(http).json()
    session = session_of(running, body["access_token"])
    assert session.auth_method == "password"  # type: ignore[attr-defined]
    assert session.client_ip == "127.0.0.2"  # type: ignore[attr-defined]
    assert session.user_agent == AGENT  # type: ignore[attr-defined]


def test_login_page_session(running: RunningBroker) -> None:
    flow = Flow()
    with client_from(running, "127.0.0.3") as http:
        page = http.get("/authorize", params=flow.params())
        done = submit_login(http, page, "bob", "bob-pw")
        body = flow.redeem(http, query_of(done.headers["location"])["code"]).json()
    session = session_of(running, body["access_token"])
    assert session.auth_method == "password"  # type: ignore[attr-defined]
    assert session.client_ip == "127.0.0.3"  # type: ignore[attr-defined]
    assert session.user_agent == AGENT and session.cookie_hash  # type: ignore[attr-defined]
