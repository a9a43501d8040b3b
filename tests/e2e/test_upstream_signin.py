"""ShotGridClient's password-less and two-factor capabilities against the emulator under
real uvicorn: site info, the App Session Launcher (start, poll, approval handed out once,
denial, expiry, the site turning it off, faults), the REST `session_token` exchange, and
api3 `get_session_token` with a two-factor code."""

from __future__ import annotations

import traceback
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from broker.upstream import (
    AppSessionApproved,
    AppSessionGone,
    AppSessionLauncherDisabled,
    AppSessionPending,
    Identity,
    InactiveUser,
    InvalidCredentials,
    InvalidTwoFactorCode,
    SsoRequired,
    UpstreamTokenRejected,
    UpstreamUnavailable,
)
from broker.upstream.shotgrid import ShotGridClient
from shotgrid_emulator import ShotGridEmulator
from tests.support.emulator import dave_totp
from tests.support.servers import ServerThread, serve

pytestmark = pytest.mark.timeout(30)

ERIN = Identity(
    user_id=105, login="erin", email="erin@example.com", name="Erin Editor", active=True
)


@pytest.fixture
def client(site: ServerThread, clock: object) -> Iterator[ShotGridClient]:
    with ShotGridClient(site.url, clock=clock) as sg:  # type: ignore[arg-type]
        yield sg


def test_site_info(client: ShotGridClient, emulator: ShotGridEmulator) -> None:
    info = client.site_info()
    assert info.app_session_launcher is True
    assert info.authentication_method == "default"
    emulator.set_app_session_launcher(False)
    assert client.site_info().app_session_launcher is False


def test_app_session_pending_approved_once_then_gone(
    client: ShotGridClient, emulator: ShotGridEmulator, site: ServerThread
) -> None:
    started = client.create_app_session("DNA sign-in 4821", "broker-1")
    assert started.url.startswith(site.url + "/app_session_request/")
    assert started.request_id not in repr(started)
    (pending,) = emulator.app_session_requests()
    assert pending["appName"] == "DNA sign-in 4821" and pending["machineId"] == "broker-1"
    assert isinstance(client.poll_app_session(started.request_id), AppSessionPending)
    emulator.approve_app_session(started.request_id, "erin")
    approved = client.poll_app_session(started.request_id)
    assert isinstance(approved, AppSessionApproved) and approved.login == "erin"
    assert approved.session_token not in repr(approved)
    assert isinstance(client.poll_app_session(started.request_id), AppSessionGone)
    # The token works for the REST session_token grant, as the research recorded.
    result = client.session_login(approved.session_token, approved.login)
    assert result.identity == ERIN and result.tokens.refresh_token
    assert emulator.calls["token:session_token"] == 1


def test_denied_expired_and_unknown_requests_are_gone(
    client: ShotGridClient, emulator: ShotGridEmulator, clock: object
) -> None:
    denied = client.create_app_session("app", "m")
    emulator.deny_app_session(denied.request_id)
    assert isinstance(client.poll_app_session(denied.request_id), AppSessionGone)
    stale = client.create_app_session("app", "m")
    clock.advance(300)  # type: ignore[attr-defined]
    assert isinstance(client.poll_app_session(stale.request_id), AppSessionGone)
    assert isinstance(client.poll_app_session("0" * 32), AppSessionGone)


def test_launcher_off_is_its_own_error(client: ShotGridClient, emulator: ShotGridEmulator) -> None:
    emulator.set_app_session_launcher(False)
    with pytest.raises(AppSessionLauncherDisabled):
        client.create_app_session("app", "m")


def test_poll_outage_hides_the_request_id(
    client: ShotGridClient, emulator: ShotGridEmulator
) -> None:
    started = client.create_app_session("app", "m")
    emulator.faults.set("asl:poll", status=503, times=1)
    with pytest.raises(UpstreamUnavailable) as info:
        client.poll_app_session(started.request_id)
    assert started.request_id not in "".join(traceback.format_exception(info.value))
    assert isinstance(client.poll_app_session(started.request_id), AppSessionPending)


def test_off_site_approval_url_is_refused() -> None:
    """The approval URL goes to a person's browser: one that is not on the configured
    site (a compromised or misrouted answer) is refused rather than shown."""

    async def create(request: Request) -> Response:
        return JSONResponse({"sessionRequestId": "abc", "url": "https://evil.example/approve"})

    app = Starlette(routes=[Route("/internal_api/app_session_request", create, methods=["POST"])])
    with (
        serve(app) as fake,
        ShotGridClient(fake.url) as client,
        pytest.raises(UpstreamUnavailable),
    ):
        client.create_app_session("app", "m")


def test_unknown_session_token_is_rejected(client: ShotGridClient) -> None:
    with pytest.raises(UpstreamTokenRejected):
        client.session_login("0" * 32, "alice")


def test_two_factor_login(client: ShotGridClient, emulator: ShotGridEmulator) -> None:
    result = client.two_factor_login("dave", "dave-pw", dave_totp().at(emulator.site.clock()))
    assert result.identity.login == "dave" and result.identity.user_id == 104
    assert emulator.calls["api3:get_session_token"] == 1
    assert emulator.calls["token:session_token"] == 1


@pytest.mark.parametrize(
    ("login", "password", "code", "error"),
    [
        ("dave", "dave-pw", "000000", InvalidTwoFactorCode),
        ("dave", "wrong-pw", None, InvalidCredentials),
        ("erin", "erin-pw", "123456", SsoRequired),
        ("carol", "carol-pw", "123456", InactiveUser),
    ],
)
def test_two_factor_refusals(
    client: ShotGridClient,
    emulator: ShotGridEmulator,
    login: str,
    password: str,
    code: str | None,
    error: type[Exception],
) -> None:
    if code is None:
        code = dave_totp().at(emulator.site.clock())
    with pytest.raises(error) as info:
        client.two_factor_login(login, password, code)
    text = "".join(traceback.format_exception(info.value))
    assert password not in text and code not in text
    assert emulator.calls["token:session_token"] == 0


def test_two_factor_outage(client: ShotGridClient, emulator: ShotGridEmulator) -> None:
    emulator.faults.set("api3", status=503, times=1)
    with pytest.raises(UpstreamUnavailable):
        client.two_factor_login("dave", "dave-pw", dave_totp().at(emulator.site.clock()))
