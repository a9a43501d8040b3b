"""ShotGridClient against the emulator under real uvicorn: mapping, faults, pooling."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from broker.upstream import (
    Identity,
    InactiveUser,
    InvalidCredentials,
    SsoRequired,
    TwoFactorRequired,
    UnknownUser,
    UpstreamError,
    UpstreamMisconfigured,
    UpstreamTokenRejected,
    UpstreamUnavailable,
)
from broker.upstream.shotgrid import ShotGridClient
from shotgrid_emulator import ShotGridEmulator
from tests.support.emulator import MovableClock
from tests.support.servers import ServerThread, free_port, serve

pytestmark = pytest.mark.timeout(30)
T = TypeVar("T")
ALICE = Identity(
    user_id=101, login="alice", email="alice@example.com", name="Alice Artist", active=True
)


def run(site_url: str, clock: MovableClock, use: Callable[[ShotGridClient], T], **kw: Any) -> T:
    kw.setdefault("script_name", "token-broker")
    kw.setdefault("script_key", "token-broker-key")
    with ShotGridClient(site_url, clock=clock, **kw) as client:
        return use(client)


def test_login_returns_identity_and_tokens(
    site: ServerThread, clock: MovableClock, emulator: ShotGridEmulator
) -> None:
    result = run(site.url, clock, lambda c: c.login("alice", "alice-pw"))
    assert result.identity == ALICE
    assert result.tokens.expires_at == clock() + timedelta(seconds=600)
    assert result.tokens.refresh_expires_at == clock() + timedelta(seconds=86400)
    assert emulator.calls["token:password"] == 1
    assert "alice-pw" not in repr(result) and result.tokens.access_token not in repr(result)


@pytest.mark.parametrize(
    ("login", "password", "error"),
    [
        ("alice", "wrong", InvalidCredentials),
        ("nobody", "x", InvalidCredentials),
        ("alice", "", InvalidCredentials),
        ("carol", "carol-pw", InactiveUser),
        ("carol", "wrong", InvalidCredentials),
        ("dave", "dave-pw", TwoFactorRequired),
        ("erin", "erin-pw", SsoRequired),
    ],
)
def test_login_errors(
    site: ServerThread, clock: MovableClock, login: str, password: str, error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        run(site.url, clock, lambda c: c.login(login, password))
    assert type(info.value) is error


def _frames_hold(exc: BaseException, secret: str) -> bool:
    """Whether a broker frame kept alive by the exception (as a logged traceback would keep
    it) still references the secret, or the exception chains another that might."""
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        if "broker/upstream" not in frame.f_code.co_filename:
            continue  # the test's own frames hold the secret, of course
        for value in frame.f_locals.values():
            if value == secret or (isinstance(value, dict) and secret in value.values()):
                return True
    return exc.__context__ is not None or exc.__cause__ is not None


@pytest.mark.parametrize("fault", [None, "drop", "status"])
def test_password_not_kept_by_errors(
    site: ServerThread, clock: MovableClock, emulator: ShotGridEmulator, fault: str | None
) -> None:
    if fault == "drop":
        emulator.faults.set("token", drop=True)
    elif fault == "status":
        emulator.faults.set("token", status=503)
    secret = "a-Very-secret-pw"
    with pytest.raises(UpstreamError) as info:
        run(site.url, clock, lambda c: c.login("alice", secret))
    assert secret not in str(info.value)
    assert not _frames_hold(info.value, secret)


@pytest.mark.parametrize(
    "fault", [{"status": 503}, {"status": 500}, {"drop": True}], ids=["503", "500", "drop"]
)
def test_faults_are_upstream_unavailable(
    site: ServerThread, clock: MovableClock, emulator: ShotGridEmulator, fault: dict[str, Any]
) -> None:
    emulator.faults.set("token", **fault)
    with pytest.raises(UpstreamUnavailable):
        run(site.url, clock, lambda c: c.login("alice", "alice-pw"))


def test_fault_on_the_user_read_is_upstream_unavailable(
    site: ServerThread, clock: MovableClock, emulator: ShotGridEmulator
) -> None:
    emulator.faults.set("rest:human_users", drop=True)
    with pytest.raises(UpstreamUnavailable):
        run(site.url, clock, lambda c: c.login("alice", "alice-pw"))


def test_latency_beyond_read_timeout_is_bounded(
    site: ServerThread, clock: MovableClock, emulator: ShotGridEmulator
) -> None:
    emulator.faults.set("token", latency=4.0)
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable, match="timed out"):
        run(site.url, clock, lambda c: c.login("alice", "alice-pw"), read_timeout=0.3)
    # Given up long before the answer came (a wide margin: parallel workers load the machine;
    # 0.3 + 0.6 s failed once at a load average of 13).
    assert time.monotonic() - started < 2.0


def test_nothing_listening_is_upstream_unavailable(clock: MovableClock) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UpstreamUnavailable):
        run(url, clock, lambda c: c.login("alice", "alice-pw"))


def test_malformed_json_is_upstream_unavailable(clock: MovableClock) -> None:
    async def garbage(request: Any) -> Response:
        return Response("<html>not json</html>", media_type="application/json")

    app = Starlette(routes=[Route("/api/v1/auth/access_token", garbage, methods=["POST"])])
    with serve(app) as srv, pytest.raises(UpstreamUnavailable, match="malformed"):
        run(srv.url, clock, lambda c: c.login("alice", "alice-pw"))


def test_many_calls_share_one_connection(
    site: ServerThread, clock: MovableClock, emulator: ShotGridEmulator
) -> None:
    def many(client: ShotGridClient) -> None:
        for _ in range(5):
            client.login("alice", "alice-pw")
        for user_id in (101, 102, 103, 104, 105) * 2:
            client.user_by_id(user_id)

    run(site.url, clock, many)
    assert sum(emulator.calls[k] for k in ("token", "rest")) == 21
    assert len(emulator.peers) == 1  # distinct client ports seen by the server


def test_refresh_success_and_rejections(site: ServerThread, clock: MovableClock) -> None:
    def flow(client: ShotGridClient) -> None:
        first = (client.login("bob", "bob-pw")).tokens
        second = client.refresh(first.refresh_token)
        assert second.refresh_token != first.refresh_token
        assert second.expires_at == clock() + timedelta(seconds=600)
        with pytest.raises(UpstreamTokenRejected):
            client.refresh(first.refresh_token)  # rotated away (strict emulator)
        with pytest.raises(UpstreamTokenRejected):
            client.refresh("garbage")
        clock.advance(86400)
        with pytest.raises(UpstreamTokenRejected):
            client.refresh(second.refresh_token)  # stale after 24 h

    run(site.url, clock, flow)


def test_user_by_id_with_cached_script_token(
    site: ServerThread, clock: MovableClock, emulator: ShotGridEmulator
) -> None:
    def flow(client: ShotGridClient) -> None:
        bob = client.user_by_id(102)
        assert (bob.login, bob.email, bob.name, bob.active) == (
            "bob",
            "bob@example.com",
            "Bob Builder",
            True,
        )
        assert (client.user_by_id(103)).active is False
        with pytest.raises(UnknownUser):
            client.user_by_id(999)
        assert emulator.calls["token:client_credentials"] == 1
        clock.advance(600 - 30)  # inside the renewal margin: a fresh script token
        client.user_by_id(101)
        assert emulator.calls["token:client_credentials"] == 2

    run(site.url, clock, flow)


def test_user_by_id_with_user_token(site: ServerThread, clock: MovableClock) -> None:
    def flow(client: ShotGridClient) -> None:
        tokens = (client.login("alice", "alice-pw")).tokens
        assert client.user_by_id(101, access_token=tokens.access_token) == ALICE
        with pytest.raises(UpstreamTokenRejected):
            client.user_by_id(101, access_token="garbage")

    run(site.url, clock, flow, script_name=None, script_key=None)


def test_script_credentials_missing_or_wrong(site: ServerThread, clock: MovableClock) -> None:
    with pytest.raises(UpstreamMisconfigured):
        run(site.url, clock, lambda c: c.user_by_id(101), script_key="wrong")
    with pytest.raises(UpstreamMisconfigured):
        run(site.url, clock, lambda c: c.user_by_id(101), script_name=None)


def test_permission_group_read_with_the_script(
    site: ServerThread, clock: MovableClock, emulator: ShotGridEmulator
) -> None:
    def flow(client: ShotGridClient) -> None:
        frank = client.permission_group("frank")
        assert frank.permission_group == "Admin"
        assert (frank.identity.user_id, frank.identity.login, frank.identity.active) == (
            106,
            "frank",
            True,
        )
        alice = client.permission_group("alice")
        assert (alice.identity, alice.permission_group) == (ALICE, "Artist")
        # A disabled person is still read (whether they may act is the caller's call).
        carol = client.permission_group("carol")
        assert carol.identity.active is False and carol.permission_group == "Artist"
        with pytest.raises(UnknownUser):
            client.permission_group("nobody")
        # A change in ShotGrid shows at the next read: nothing is cached.
        emulator.set_permission_group("alice", "Admin")
        assert client.permission_group("alice").permission_group == "Admin"
        assert emulator.calls["token:client_credentials"] == 1

    run(site.url, clock, flow)


def test_permission_group_needs_the_script(site: ServerThread, clock: MovableClock) -> None:
    with pytest.raises(UpstreamMisconfigured):
        run(site.url, clock, lambda c: c.permission_group("frank"), script_key="wrong")
    with pytest.raises(UpstreamMisconfigured):
        run(site.url, clock, lambda c: c.permission_group("frank"), script_name=None)


def test_permission_group_fault_is_upstream_unavailable(
    site: ServerThread, clock: MovableClock, emulator: ShotGridEmulator
) -> None:
    emulator.faults.set("/api/v1/entity", status=503)
    with pytest.raises(UpstreamUnavailable):
        run(site.url, clock, lambda c: c.permission_group("frank"))


@pytest.mark.parametrize(
    ("login", "expected"),
    [("alice", ["Spring Shorts", "Harbor Lights"]), ("bob", ["Harbor Lights", "Night Market"])],
)
def test_sudo_token_sees_only_that_users_projects(
    site: ServerThread, clock: MovableClock, login: str, expected: list[str]
) -> None:
    tokens = run(site.url, clock, lambda c: c.sudo_token(login))
    r = httpx.get(
        site.url + "/api/v1/entity/projects",
        headers={"Authorization": f"Bearer {tokens.access_token}"},
    )
    assert [p["attributes"]["name"] for p in r.json()["data"]] == expected


@pytest.mark.parametrize(("login", "error"), [("carol", InactiveUser), ("nobody", UnknownUser)])
def test_sudo_token_refusals(
    site: ServerThread, clock: MovableClock, login: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        run(site.url, clock, lambda c: c.sudo_token(login))


# --- the event log (EventLogUpstream) ----------------------------------------------------------


def test_event_log_reads(
    site: ServerThread, clock: MovableClock, emulator: ShotGridEmulator
) -> None:
    assert run(site.url, clock, lambda c: c.latest_event_id()) == 0
    emulator.set_active("alice", False)
    emulator.set_permission_group("bob", "Admin")
    emulator.set_active("alice", True)
    changes = run(
        site.url, clock, lambda c: c.user_changes(0, ("sg_status_list", "permission_rule_set"), 50)
    )
    assert [(c.event_id, c.user_id, c.attribute, c.old_value, c.new_value) for c in changes] == [
        (1, 101, "sg_status_list", "act", "dis"),
        (2, 102, "permission_rule_set", "Artist", "Admin"),
        (3, 101, "sg_status_list", "dis", "act"),
    ]
    assert changes[0].created_at == clock()
    # After an id, of some fields only, a page at a time; the newest id of any kind.
    later = run(site.url, clock, lambda c: c.user_changes(1, ("sg_status_list",), 50))
    assert [c.event_id for c in later] == [3]
    page = run(site.url, clock, lambda c: c.user_changes(0, ("sg_status_list",), 1))
    assert [c.event_id for c in page] == [1]
    assert run(site.url, clock, lambda c: c.latest_event_id()) == 3
    assert emulator.calls["rest:event_log_entries:search"] == 3


def test_event_log_failures(
    site: ServerThread, clock: MovableClock, emulator: ShotGridEmulator
) -> None:
    emulator.faults.set("/api/v1/entity", status=503, times=1)
    with pytest.raises(UpstreamUnavailable):
        run(site.url, clock, lambda c: c.user_changes(0, ("sg_status_list",), 10))
    with pytest.raises(UpstreamMisconfigured):
        run(site.url, clock, lambda c: c.latest_event_id(), script_key="wrong")
