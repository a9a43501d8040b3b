"""The login page's two-factor step for Legacy Login accounts (dave): the password, then the
code, with the first step carried sealed (never the password in clear), bound to the
browser and the request, short-lived and single use; throttling counts wrong codes, not
the two-factor answer; ShotGrid down at the code step."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import jwt
import pytest

from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock
from tests.support.emulator import dave_totp
from tests.support.oidc import Flow, hidden_fields, query_of, submit_login


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningBroker, object, MovableClock]]:
    clock = MovableClock()
    tmp = tmp_path_factory.mktemp("two-factor")
    with broker_with_emulator(tmp, clock, login_max_failures_per_user=3) as (running, emu, _s):
        yield running, emu, clock


@pytest.fixture
def running(env: tuple[RunningBroker, object, MovableClock]) -> RunningBroker:
    return env[0]


@pytest.fixture
def emu(env: tuple[RunningBroker, object, MovableClock]) -> object:
    return env[1]


@pytest.fixture
def clock(env: tuple[RunningBroker, object, MovableClock]) -> MovableClock:
    return env[2]


@pytest.fixture(autouse=True)
def clean(env: tuple[RunningBroker, object, MovableClock]) -> Iterator[None]:
    yield
    env[1].faults.clear()  # type: ignore[attr-defined]
    # Throttle counters are per username: start each test from zero.
    env[2].advance(901)


def code_step(http: httpx.Client, flow: Flow | None = None) -> httpx.Response:
    page = http.get("/authorize", params=(flow or Flow()).params())
    step = submit_login(http, page, "dave", "dave-pw")
    assert step.status_code == 200, step.text
    return step


def send_code(http: httpx.Client, step: httpx.Response, code: str, **extra: str) -> httpx.Response:
    fields = hidden_fields(step.text)
    fields.update(code=code, **extra)
    return http.post("/authorize", data=fields)


def current_code(clock: MovableClock) -> str:
    return dave_totp().at(clock())


def alert(page: httpx.Response) -> str:
    match = re.search(r'role="alert"[^>]*>(.*?)</div>', page.text, re.S)
    return match.group(1).strip() if match else ""


def test_password_then_code(running: RunningBroker, clock: MovableClock, emu: object) -> None:
    flow = Flow()
    with running.client() as http:
        step = code_step(http, flow)
        assert 'name="code"' in step.text and 'autocomplete="one-time-code"' in step.text
        assert 'name="password"' not in step.text
        assert "dave-pw" not in step.text  # the password is sealed, never in clear
        state = hidden_fields(step.text)["signin_state"]
        assert len(state) > 40
        names = re.findall(r'<input type="hidden" name="([^"]+)"', step.text)
        assert len(names) == len(set(names))
        assert (
            "set-cookie" not in step.headers or "broker_session" not in step.headers["set-cookie"]
        )
        before = emu.calls["api3:get_session_token"]  # type: ignore[attr-defined]
        done = send_code(http, step, current_code(clock))
        assert done.status_code == 302, done.text
        query = query_of(done.headers["location"])
        assert query["state"] == flow.state and query["code"]
        assert emu.calls["api3:get_session_token"] == before + 1  # type: ignore[attr-defined]
        tokens = flow.redeem(http, query["code"])
    assert tokens.status_code == 200
    claims = jwt.decode(tokens.json()["access_token"], options={"verify_signature": False})
    assert claims["sub"] == "104" and claims["sg_login"] == "dave"


def test_session_records_the_method_address_and_agent(
    running: RunningBroker, clock: MovableClock
) -> None:
    flow = Flow()
    with httpx.Client(
        base_url=running.url, timeout=10, headers={"User-Agent": "Firefox/140 " + "x" * 400}
    ) as http:
        page = http.get("/authorize", params=flow.params())
        step = submit_login(http, page, "dave", "dave-pw")
        done = send_code(http, step, current_code(clock))
        code = query_of(done.headers["location"])["code"]
        body = flow.redeem(http, code).json()
    sid = jwt.decode(body["access_token"], options={"verify_signature": False})["sid"]
    session = running.broker.store.get_session(sid)
    assert session is not None and session.auth_method == "two_factor"
    assert session.client_ip == "127.0.0.1"
    assert session.user_agent is not None and session.user_agent.startswith("Firefox/140")
    assert len(session.user_agent) == 256


def test_codes_with_spaces_are_accepted(running: RunningBroker, clock: MovableClock) -> None:
    with running.client() as http:
        step = code_step(http)
        code = current_code(clock)
        done = send_code(http, step, f" {code[:3]} {code[3:]} ")
        assert done.status_code == 302


def test_wrong_code_shows_the_step_again(running: RunningBroker, clock: MovableClock) -> None:
    with running.client() as http:
        step = code_step(http)
        again = send_code(http, step, "000000")
        assert again.status_code == 200 and 'name="code"' in again.text and alert(again)
        assert "000000" not in again.text
        done = send_code(http, again, current_code(clock))
        assert done.status_code == 302


def test_malformed_code_never_reaches_shotgrid(running: RunningBroker, emu: object) -> None:
    with running.client() as http:
        step = code_step(http)
        before = emu.calls["api3:get_session_token"]  # type: ignore[attr-defined]
        for bad in ("12ab56", "1234567", ""):
            again = send_code(http, step, bad)
            assert again.status_code == 400 and 'name="code"' in again.text
        assert emu.calls["api3:get_session_token"] == before  # type: ignore[attr-defined]


def test_two_factor_answer_is_not_a_failed_login_but_wrong_codes_are(
    running: RunningBroker, clock: MovableClock
) -> None:
    """This broker throttles after 3 failures: five right passwords (each answered with
    the code step) are not failures; three wrong codes are, and then the step refuses."""
    with running.client() as http:
        for _ in range(5):
            code_step(http)
        step = code_step(http)
        for _ in range(3):
            step = send_code(http, step, "000000")
            assert step.status_code == 200
        throttled = send_code(http, step, current_code(clock))
        assert throttled.status_code == 429 and throttled.headers["retry-after"]
        assert 'name="password"' in throttled.text


@pytest.mark.parametrize("case", ["forged", "other browser", "other request", "expired"])
def test_state_that_does_not_belong_here(
    running: RunningBroker, clock: MovableClock, emu: object, case: str
) -> None:
    flow = Flow()
    with running.client() as http:
        step = code_step(http, flow)
        fields = hidden_fields(step.text)
        before = emu.calls["api3:get_session_token"]  # type: ignore[attr-defined]
        if case == "forged":
            state = fields["signin_state"]
            fields["signin_state"] = state[:-6] + ("AAAAAA" if state[-6:] != "AAAAAA" else "BBBBBB")
            target = http
        elif case == "other browser":
            target = running.client()
            # The other browser has its own CSRF cookie: render a page there, keep the
            # state and the request from this one.
            other_page = target.get("/authorize", params=flow.params())
            fields["csrf_token"] = hidden_fields(other_page.text)["csrf_token"]
        elif case == "other request":
            other = http.get("/authorize", params=Flow(state="another").params())
            other_fields = hidden_fields(other.text)
            fields = {**other_fields, "signin": "code", "signin_state": fields["signin_state"]}
            target = http
        else:
            clock.advance(301)
            target = http
        fields["code"] = current_code(clock)
        response = target.post("/authorize", data=fields)
        if target is not http:
            target.close()
        assert response.status_code == 400, response.text
        assert 'name="password"' in response.text and alert(response)
        assert emu.calls["api3:get_session_token"] == before  # type: ignore[attr-defined]


def test_state_signs_in_once(running: RunningBroker, clock: MovableClock) -> None:
    with running.client() as http:
        step = code_step(http)
        assert send_code(http, step, current_code(clock)).status_code == 302
        replay = send_code(http, step, current_code(clock))
        assert replay.status_code == 400 and 'name="password"' in replay.text


def test_shotgrid_down_at_the_code_step(
    running: RunningBroker, clock: MovableClock, emu: object
) -> None:
    with running.client() as http:
        step = code_step(http)
        emu.faults.set("api3", status=503, times=1)  # type: ignore[attr-defined]
        down = send_code(http, step, current_code(clock))
        assert down.status_code == 503 and down.headers["retry-after"]
        assert 'name="code"' in down.text and alert(down)
        assert send_code(http, down, current_code(clock)).status_code == 302


def test_password_grant_refuses_dave_without_counting_a_failure(
    running: RunningBroker,
) -> None:
    with running.client() as http:
        for _ in range(5):
            response = running.password_grant(http, "dave")
            assert response.json()["error"] == "invalid_grant"
        page = http.get("/authorize", params=Flow().params())
        assert submit_login(http, page, "dave", "dave-pw").status_code == 200
