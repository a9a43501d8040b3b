"""Sign in with ShotGrid (App Session Launcher) on the login page, over HTTP: the page
offers it first when the site has it on; the plain-form flow and the script's JSON flow;
ShotGrid polled at most every 2 s per request across tabs and processes; each request
bound to the browser and the authorization request that started it, completed once;
denied, expired, refused, ShotGrid down mid-poll and during the exchange, the launcher
turned off. A real broker (and a second one on the same store) and the emulator."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from broker.components import machine_id
from shotgrid_emulator import ShotGridEmulator
from tests.support.broker import RunningBroker, broker_with_emulator, run_broker
from tests.support.clock import MovableClock
from tests.support.oidc import Flow, hidden_fields, query_of
from tests.support.servers import reserve_port

JSON = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningBroker, ShotGridEmulator, MovableClock, RunningBroker]]:
    clock = MovableClock()
    tmp = tmp_path_factory.mktemp("shotgrid-signin")
    # A second broker on the same store, as another process would be: what one polled,
    # the other knows.
    with (
        broker_with_emulator(tmp, clock) as (running, emu, _site),
        run_broker(running.settings, clock, reserve_port()) as second,
    ):
        yield running, emu, clock, second


@pytest.fixture
def running(env: tuple[Any, ...]) -> RunningBroker:
    return env[0]  # type: ignore[no-any-return]


@pytest.fixture
def emu(env: tuple[Any, ...]) -> ShotGridEmulator:
    return env[1]  # type: ignore[no-any-return]


@pytest.fixture
def clock(env: tuple[Any, ...]) -> MovableClock:
    return env[2]  # type: ignore[no-any-return]


@pytest.fixture
def second(env: tuple[Any, ...]) -> RunningBroker:
    return env[3]  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def clean(env: tuple[Any, ...]) -> Iterator[None]:
    yield
    env[1].faults.clear()
    env[1].set_app_session_launcher(True)
    env[1].set_active("alice", True)
    env[2].advance(61)  # past the cached site info


def login_page(http: httpx.Client, flow: Flow) -> httpx.Response:
    page = http.get("/authorize", params=flow.params())
    assert page.status_code == 200, page.text
    return page


def start(http: httpx.Client, page: httpx.Response, *, json: bool = False) -> httpx.Response:
    fields = {**hidden_fields(page.text), "signin": "shotgrid"}
    return http.post("/authorize", data=fields, headers=JSON if json else None)


def check(
    http: httpx.Client, page: httpx.Response, handle: str, *, url: str = "/authorize"
) -> httpx.Response:
    fields = {**hidden_fields(page.text), "signin": "shotgrid_check", "signin_handle": handle}
    return http.post(url, data=fields, headers=JSON)


def request_id(emu: ShotGridEmulator, app_name: str) -> str:
    (match,) = [r for r in emu.app_session_requests() if r["appName"] == app_name]
    return str(match["sessionRequestId"])


def polls(emu: ShotGridEmulator) -> int:
    return emu.calls["asl:poll"]


def test_login_page_offers_shotgrid_first(running: RunningBroker) -> None:
    with running.client() as http:
        page = login_page(http, Flow())
    text = page.text
    assert 'id="shotgrid-sign-in"' in text and "Sign in with ShotGrid" in text
    assert text.index('id="shotgrid-sign-in"') < text.index('name="password"')
    # One set of hidden fields and one submit button: a client that posts every hidden
    # input with the credentials (as stock test helpers do) posts no parameter twice.
    names = re.findall(r'<input type="hidden" name="([^"]+)"', text)
    assert len(names) == len(set(names)) and "signin" not in names
    assert text.count('type="submit"') == 1
    assert f'src="{running.url}/static/signin.js"' in text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and "<script>" not in text
    assert "<details" in text and "Why doesn't my password work?" in text
    assert "Personal Access Token" in text
    script = httpx.get(f"{running.url}/static/signin.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith(
        "text/javascript"
    )


def test_no_button_and_no_script_when_the_site_has_it_off(
    running: RunningBroker, emu: ShotGridEmulator, clock: MovableClock
) -> None:
    emu.set_app_session_launcher(False)
    clock.advance(61)
    with running.client() as http:
        page = login_page(http, Flow())
    assert 'id="shotgrid-sign-in"' not in page.text and "signin.js" not in page.text
    assert "script-src" not in page.headers["content-security-policy"]
    assert 'name="password"' in page.text


def shotgrid_link(page: httpx.Response) -> str:
    match = re.search(r'id="shotgrid-sign-in" class="button" href="([^"]+)"', page.text)
    assert match, page.text
    return html.unescape(match.group(1))


def test_the_link_starts_only_for_the_browser_of_the_page(
    running: RunningBroker, emu: ShotGridEmulator
) -> None:
    with running.client() as http:
        link = shotgrid_link(login_page(http, Flow()))
    before = len(emu.app_session_requests())
    with running.client() as crawler:  # no CSRF cookie: the login page, nothing started
        page = crawler.get(link)
    assert page.status_code == 200 and 'id="shotgrid-sign-in"' in page.text
    assert len(emu.app_session_requests()) == before


def test_without_script_flow(
    running: RunningBroker, emu: ShotGridEmulator, clock: MovableClock
) -> None:
    """What a browser without JavaScript does: follow the link, open ShotGrid's page from
    the next one, approve there, press Continue."""
    flow = Flow()
    with running.client() as http:
        page = login_page(http, flow)
        waiting = http.get(shotgrid_link(page))
        assert waiting.status_code == 200
        names = re.findall(r'<input type="hidden" name="([^"]+)"', waiting.text)
        assert len(names) == len(set(names))
        name = re.search(r'id="shotgrid-app-name">([^<]+)<', waiting.text).group(1)  # type: ignore[union-attr]
        assert re.fullmatch(r"ShotGrid sign-in \d{4}", name)
        assert "approve only that" in waiting.text
        (request,) = [r for r in emu.app_session_requests() if r["appName"] == name]
        assert request["machineId"] == machine_id(running.url)
        assert f'href="{request["url"]}"' in waiting.text  # a plain link to ShotGrid
        assert 'target="_blank"' in waiting.text
        not_yet = http.post("/authorize", data=hidden_fields(waiting.text))
        assert not_yet.status_code == 200 and "Not approved yet" in not_yet.text
        emu.approve_app_session(str(request["sessionRequestId"]), "erin")
        clock.advance(2)
        done = http.post("/authorize", data=hidden_fields(not_yet.text))
        assert done.status_code == 302, done.text
        assert "broker_session=" in done.headers["set-cookie"]
        code = query_of(done.headers["location"])["code"]
        tokens = flow.redeem(http, code)
    assert tokens.status_code == 200
    claims = jwt.decode(tokens.json()["access_token"], options={"verify_signature": False})
    assert claims["sub"] == "105" and claims["sg_login"] == "erin"
    session = running.broker.store.get_session(claims["sid"])
    assert session is not None and session.auth_method == "shotgrid"


def test_start_by_post_without_json_shows_the_waiting_page(running: RunningBroker) -> None:
    with running.client() as http:
        waiting = start(http, login_page(http, Flow()))
    assert waiting.status_code == 200 and "approve only that" in waiting.text


def test_script_flow_paced_across_tabs_and_processes(
    running: RunningBroker, second: RunningBroker, emu: ShotGridEmulator, clock: MovableClock
) -> None:
    flow = Flow()
    with running.client() as http:
        page = login_page(http, flow)
        started = start(http, page, json=True)
        assert started.status_code == 200 and started.headers["cache-control"] == "no-store"
        body = started.json()
        assert body["status"] == "started" and body["url"] and body["handle"]
        handle = body["handle"]
        before = polls(emu)
        for url in ("/authorize", f"{second.url}/authorize") * 4:  # two "tabs", two processes
            answer = check(http, page, handle, url=url)
            assert answer.status_code == 200 and answer.json()["status"] == "pending"
        assert polls(emu) == before + 1  # once per 2 s, whoever asks
        clock.advance(2)
        assert (
            check(http, page, handle, url=f"{second.url}/authorize").json()["status"] == "pending"
        )
        assert polls(emu) == before + 2
        emu.approve_app_session(request_id(emu, body["app_name"]), "erin")
        assert check(http, page, handle).json()["status"] == "pending"  # within the 2 s
        clock.advance(2)
        approved = check(http, page, handle)
        answer = approved.json()
        assert answer["status"] == "approved", answer
        assert answer["redirect"].startswith(flow.redirect_uri + "?code=")
        assert "broker_session=" in approved.headers["set-cookie"]
        assert flow.redeem(http, query_of(answer["redirect"])["code"]).status_code == 200
        # Once: a second check, from any tab, finds it completed.
        clock.advance(2)
        again = check(http, page, handle)
        assert again.status_code == 400 and again.json()["status"] == "completed"


def test_bound_to_the_browser_and_the_request(
    running: RunningBroker, emu: ShotGridEmulator, clock: MovableClock
) -> None:
    flow = Flow()
    with running.client() as http, running.client() as attacker:
        page = login_page(http, flow)
        handle = start(http, page, json=True).json()["handle"]
        # Another browser with the handle, on a page for the same request: unknown.
        stolen = check(attacker, login_page(attacker, flow), handle)
        assert stolen.status_code == 400 and stolen.json()["status"] == "unknown"
        # The same browser, another authorization request: unknown too.
        other = check(http, login_page(http, Flow(state="other")), handle)
        assert other.status_code == 400 and other.json()["status"] == "unknown"
        assert check(http, page, handle).json()["status"] == "pending"


def test_denied_and_expired(
    running: RunningBroker, emu: ShotGridEmulator, clock: MovableClock
) -> None:
    with running.client() as http:
        page = login_page(http, Flow())
        denied = start(http, page, json=True).json()
        emu.deny_app_session(request_id(emu, denied["app_name"]))
        clock.advance(2)
        answer = check(http, page, denied["handle"]).json()
        assert answer["status"] == "denied" and "denied" in answer["message"]
        expiring = start(http, page, json=True).json()
        clock.advance(300)
        assert check(http, page, expiring["handle"]).json()["status"] == "expired"
        plain = http.post(
            "/authorize",
            data={
                **hidden_fields(page.text),
                "signin": "shotgrid_check",
                "signin_handle": expiring["handle"],
            },
        )
        assert plain.status_code == 200 and "expired" in plain.text
        assert 'id="shotgrid-sign-in"' in plain.text  # back to the first step


def test_shotgrid_down_mid_poll(
    running: RunningBroker, emu: ShotGridEmulator, clock: MovableClock
) -> None:
    with running.client() as http:
        page = login_page(http, Flow())
        body = start(http, page, json=True).json()
        emu.faults.set("asl:poll", status=503, times=2)
        down = check(http, page, body["handle"])
        assert down.status_code == 503 and down.headers["retry-after"]
        assert down.json()["status"] == "unavailable"
        clock.advance(2)
        plain = http.post(
            "/authorize",
            data={
                **hidden_fields(page.text),
                "signin": "shotgrid_check",
                "signin_handle": body["handle"],
            },
        )
        assert plain.status_code == 503 and "not reachable" in plain.text
        assert body["url"] in plain.text  # the page still links to ShotGrid; Continue retries
        emu.approve_app_session(request_id(emu, body["app_name"]), "erin")
        clock.advance(2)
        assert check(http, page, body["handle"]).json()["status"] == "approved"


def test_shotgrid_down_during_the_exchange_keeps_the_approval(
    running: RunningBroker, emu: ShotGridEmulator, clock: MovableClock
) -> None:
    with running.client() as http:
        page = login_page(http, Flow())
        body = start(http, page, json=True).json()
        emu.approve_app_session(request_id(emu, body["app_name"]), "erin")
        emu.faults.set("token:session_token", status=503, times=1)
        before = polls(emu)
        down = check(http, page, body["handle"])
        assert down.status_code == 503 and down.json()["status"] == "unavailable"
        assert polls(emu) == before + 1  # ShotGrid handed the approval out, once
        clock.advance(2)
        done = check(http, page, body["handle"])
        assert done.json()["status"] == "approved"
        assert polls(emu) == before + 1  # the kept approval was used, not polled again


def test_an_account_refused_after_approval(
    running: RunningBroker, emu: ShotGridEmulator, clock: MovableClock
) -> None:
    with running.client() as http:
        page = login_page(http, Flow())
        body = start(http, page, json=True).json()
        emu.approve_app_session(request_id(emu, body["app_name"]), "alice")
        emu.set_active("alice", False)
        answer = check(http, page, body["handle"])
        assert answer.status_code == 200 and answer.json()["status"] == "refused"
        assert "broker_session" not in answer.headers.get("set-cookie", "")


def test_launcher_turned_off_after_the_page(running: RunningBroker, emu: ShotGridEmulator) -> None:
    with running.client() as http:
        page = login_page(http, Flow())
        emu.set_app_session_launcher(False)
        refused = start(http, page)
        assert refused.status_code == 400 and "not enabled" in refused.text
        assert 'id="shotgrid-sign-in"' not in refused.text  # the broker learnt it


@pytest.mark.parametrize("case", ["no csrf", "shotgrid down"])
def test_start_refusals(running: RunningBroker, emu: ShotGridEmulator, case: str) -> None:
    with running.client() as http:
        page = login_page(http, Flow())
        fields = {**hidden_fields(page.text), "signin": "shotgrid"}
        if case == "no csrf":
            del fields["csrf_token"]
            expected, status = 403, "error"
        else:
            emu.faults.set("asl:create", status=503, times=1)
            expected, status = 503, "unavailable"
        before = len(emu.app_session_requests())
        answer = http.post("/authorize", data=fields, headers=JSON)
        assert answer.status_code == expected and answer.json()["status"] == status
        assert len(emu.app_session_requests()) == before
