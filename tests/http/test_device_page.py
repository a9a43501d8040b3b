"""The device verification page `/device` (RFC 8628 §3.3): sign-in first (any way, SSO
reused), what it shows (the application, the scopes, the code to compare, the warning),
that a pre-filled code is never approved by following the link, typed codes in any case
with spaces, one decision per code, CSRF, and wrong codes throttled per address."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from broker.tokens.device import device_code_hash
from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock
from tests.support.device import authorize_device, decide, sign_in_on_device_page
from tests.support.emulator import dave_totp
from tests.support.oidc import hidden_fields, submit_login


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningBroker, MovableClock]]:
    clock = MovableClock()
    tmp = tmp_path_factory.mktemp("device-page")
    with broker_with_emulator(tmp, clock, device_max_wrong_codes_per_ip=3) as (running, _e, _s):
        yield running, clock


@pytest.fixture
def running(env: tuple[RunningBroker, MovableClock]) -> RunningBroker:
    return env[0]


@pytest.fixture
def clock(env: tuple[RunningBroker, MovableClock]) -> MovableClock:
    return env[1]


def status_of(running: RunningBroker, device: dict[str, str]) -> str:
    record = running.broker.store.get_device_code(device_code_hash(device["device_code"]))
    assert record is not None
    return record.status


def alert(page: httpx.Response) -> str:
    match = re.search(r'role="alert"[^>]*>(.*?)</div>', page.text, re.S)
    return match.group(1).strip() if match else ""


def test_sign_in_then_the_prefilled_code_waits_for_an_explicit_approval(
    running: RunningBroker,
) -> None:
    with running.client() as http:
        device = authorize_device(http, scope="openid profile email offline_access")
        login = http.get("/device", params={"user_code": device["user_code"]})
        assert login.status_code == 200
        assert 'name="username"' in login.text and 'name="password"' in login.text
        assert hidden_fields(login.text)["user_code"] == device["user_code"]
        done = submit_login(http, login, "alice", "alice-pw", path="/device")
        assert done.status_code == 302
        assert done.headers["location"].startswith(running.url + "/device?user_code=")
        session_cookie = done.headers["set-cookie"]
        assert session_cookie.startswith("broker_session=") and "HttpOnly" in session_cookie
        page = http.get(done.headers["location"])
        assert page.status_code == 200
        assert "DNA command line" in page.text  # which application asks
        assert "Your email address" in page.text and "Stay signed in" in page.text  # scopes
        assert "Only continue if you started this yourself" in page.text
        assert f'value="{device["user_code"]}"' in page.text
        assert 'name="action" value="approve"' in page.text
        assert 'name="action" value="deny"' in page.text
        assert "Compare it with the code your device shows" in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src" not in csp and "frame-ancestors 'none'" in csp
        # Following the link, even twice, decided nothing.
        http.get("/device", params={"user_code": device["user_code"]})
        assert status_of(running, device) == "pending"
        result = decide(http, page, device["user_code"])
        assert result.status_code == 200 and 'data-result="approved"' in result.text
        assert status_of(running, device) == "approved"


@pytest.mark.parametrize("typed", ["lower", "spaces", "no dash"])
def test_typed_codes_in_any_case_with_spaces(running: RunningBroker, typed: str) -> None:
    with running.client() as http:
        device = authorize_device(http)
        code = device["user_code"]
        variant = {
            "lower": code.lower(),
            "spaces": " " + code.replace("-", " ")[:2] + " " + code.replace("-", " ")[2:] + " ",
            "no dash": code.replace("-", ""),
        }[typed]
        page = sign_in_on_device_page(http, None)
        assert 'name="user_code"' in page.text and 'value="approve"' in page.text
        assert decide(http, page, variant).status_code == 200
        assert status_of(running, device) == "approved"


def test_deny(running: RunningBroker) -> None:
    with running.client() as http:
        device = authorize_device(http)
        page = sign_in_on_device_page(http, device["user_code"])
        result = decide(http, page, device["user_code"], "deny")
        assert result.status_code == 200 and 'data-result="denied"' in result.text
        assert status_of(running, device) == "denied"


def test_one_decision_per_code(running: RunningBroker) -> None:
    with running.client() as http:
        device = authorize_device(http)
        page = sign_in_on_device_page(http, device["user_code"])
        assert decide(http, page, device["user_code"]).status_code == 200
        again = decide(http, page, device["user_code"], "deny")
        assert again.status_code == 400 and alert(again)
        assert status_of(running, device) == "approved"


def test_expired_code(running: RunningBroker, clock: MovableClock) -> None:
    with running.client() as http:
        device = authorize_device(http)
        page = sign_in_on_device_page(http, None)
        clock.advance(600)
        result = decide(http, page, device["user_code"])
        assert result.status_code == 400 and "expire" in alert(result)
        assert status_of(running, device) == "pending"


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"csrf_token": None}, 403),
        ({"csrf_token": "1.forged"}, 403),
        ({"action": "maybe"}, 400),
    ],
)
def test_csrf_and_action_are_checked(
    running: RunningBroker, fields: dict[str, str | None], status: int
) -> None:
    with running.client() as http:
        device = authorize_device(http)
        page = sign_in_on_device_page(http, device["user_code"])
        data = {
            "csrf_token": hidden_fields(page.text)["csrf_token"],
            "user_code": device["user_code"],
            "action": "approve",
            **fields,
        }
        result = http.post("/device", data={k: v for k, v in data.items() if v is not None})
        assert result.status_code == status
        assert status_of(running, device) == "pending"


def test_deciding_needs_a_session(running: RunningBroker) -> None:
    """A decision posted without a session shows the login page; nothing is decided."""
    with running.client() as http:
        device = authorize_device(http)
        response = http.post(
            "/device",
            data={"user_code": device["user_code"], "action": "approve", "csrf_token": "x"},
        )
        assert response.status_code == 200 and 'name="password"' in response.text
        assert status_of(running, device) == "pending"


def test_wrong_codes_are_throttled_per_address(running: RunningBroker) -> None:
    """Three wrong codes (this broker's setting) from one address, then 429 even for a
    right code from that address; another address is unaffected."""
    with running.client() as http:
        device = authorize_device(http)
    with httpx.Client(base_url=running.url, timeout=10, transport=_from("127.0.0.2")) as guesser:
        page = sign_in_on_device_page(guesser, None, username="bob")
        for wrong in ("BBBB-BBBB", "not a code", "CCCC-CCCC"):
            result = decide(guesser, page, wrong)
            assert result.status_code == 400
        blocked = decide(guesser, page, device["user_code"])
        assert blocked.status_code == 429 and blocked.headers["retry-after"]
        assert status_of(running, device) == "pending"
    with httpx.Client(base_url=running.url, timeout=10, transport=_from("127.0.0.3")) as other:
        page = sign_in_on_device_page(other, None)
        assert decide(other, page, device["user_code"]).status_code == 200


def test_two_factor_sign_in_on_the_device_page(running: RunningBroker) -> None:
    with running.client() as http:
        device = authorize_device(http)
        login = http.get("/device", params={"user_code": device["user_code"]})
        step = submit_login(http, login, "dave", "dave-pw", path="/device")
        assert step.status_code == 200 and 'name="code"' in step.text
        fields = hidden_fields(step.text)
        fields["code"] = dave_totp().at(running.broker.now())
        done = http.post("/device", data=fields)
        assert done.status_code == 302, done.text
        page = http.get(done.headers["location"])
        assert "Dave Director" in page.text
        assert decide(http, page, device["user_code"]).status_code == 200
        assert status_of(running, device) == "approved"


def _from(address: str) -> httpx.HTTPTransport:
    return httpx.HTTPTransport(local_address=address)
