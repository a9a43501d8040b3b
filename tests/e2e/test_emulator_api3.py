"""The real `shotgun_api3.Shotgun` client (blocking httplib2, in the test thread) against
the emulator served by uvicorn in its own thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import shotgun_api3

from shotgrid_emulator import ShotGridEmulator
from tests.support.emulator import MovableClock
from tests.support.servers import ServerThread

Factory = Callable[..., shotgun_api3.Shotgun]
pytestmark = pytest.mark.timeout(30)
ALICE = ["Spring Shorts", "Harbor Lights"]
BOB = ["Harbor Lights", "Night Market"]


@pytest.fixture
def Shotgun(site: ServerThread) -> Iterator[Factory]:
    """`Shotgun(**kwargs)` against the emulator; closes every client's httplib2 sockets."""
    made: list[shotgun_api3.Shotgun] = []

    def make(**kwargs: Any) -> shotgun_api3.Shotgun:
        made.append(shotgun_api3.Shotgun(site.url, **kwargs))
        return made[-1]

    yield make
    for sg in made:
        sg.close()


def project_names(sg: shotgun_api3.Shotgun) -> list[str]:
    return [p["name"] for p in sg.find("Project", [], ["name"], order=[])]


def test_password_login_reads_user_and_own_projects(Shotgun: Factory, site: ServerThread) -> None:
    sg = Shotgun(login="alice", password="alice-pw", connect=True)
    assert sg.server_info["version"][:3] == [8, 50, 0]
    me = sg.find_one("HumanUser", [["login", "is", "alice"]], ["login", "email", "sg_status_list"])
    assert me == {
        "type": "HumanUser",
        "id": 101,
        "login": "alice",
        "email": "alice@example.com",
        "sg_status_list": "act",
    }
    assert project_names(sg) == ALICE
    assert sg.authenticate_human_user("bob", "bob-pw") == {
        "type": "HumanUser",
        "id": 102,
        "login": "bob",
    }


def test_session_token_route(Shotgun: Factory, site: ServerThread) -> None:
    token = Shotgun(login="bob", password="bob-pw").get_session_token()
    sg = Shotgun(session_token=token, connect=True)
    assert project_names(sg) == BOB
    assert sg.find_one("HumanUser", [["id", "is", 102]], ["login"])["login"] == "bob"


def test_script_with_sudo_route(Shotgun: Factory, site: ServerThread) -> None:
    sg = Shotgun(
        script_name="token-broker",
        api_key="token-broker-key",
        sudo_as_login="alice",
        connect=True,
    )
    assert project_names(sg) == ALICE
    admin = Shotgun(script_name="token-broker", api_key="token-broker-key")
    assert project_names(admin) == ["Spring Shorts", "Harbor Lights", "Night Market"]


def test_paging_walks_every_page(Shotgun: Factory, site: ServerThread) -> None:
    sg = Shotgun(script_name="token-broker", api_key="token-broker-key")
    users = sg.find("HumanUser", [], ["login"])
    assert [u["login"] for u in users] == ["alice", "bob", "carol", "dave", "erin"]
    second = sg.find("HumanUser", [], ["login"], limit=2, page=2)
    assert [u["login"] for u in second] == ["carol", "dave"]
    active = sg.find("HumanUser", [["sg_status_list", "is", "act"]], ["login"], limit=2)
    assert [u["login"] for u in active] == ["alice", "bob"]


@pytest.mark.parametrize(
    ("login", "password", "fault"),
    [
        ("alice", "wrong", shotgun_api3.AuthenticationFault),
        ("nobody", "x", shotgun_api3.AuthenticationFault),
        ("carol", "carol-pw", shotgun_api3.AuthenticationFault),
        ("dave", "dave-pw", shotgun_api3.MissingTwoFactorAuthenticationFault),
        ("erin", "erin-pw", shotgun_api3.UserCredentialsNotAllowedForSSOAuthenticationFault),
    ],
)
def test_password_faults(
    Shotgun: Factory, site: ServerThread, login: str, password: str, fault: type[Exception]
) -> None:
    sg = Shotgun(login=login, password=password, connect=True)
    with pytest.raises(fault):
        sg.find_one("HumanUser", [["login", "is", login]], ["login"])


def test_bad_script_key_is_authentication_fault(Shotgun: Factory, site: ServerThread) -> None:
    sg = Shotgun(script_name="token-broker", api_key="nope")
    with pytest.raises(shotgun_api3.AuthenticationFault, match="Can't authenticate script"):
        sg.find("Project", [])


def test_unknown_sudo_target_is_authentication_fault(Shotgun: Factory, site: ServerThread) -> None:
    sg = Shotgun(script_name="token-broker", api_key="token-broker-key", sudo_as_login="nobody")
    with pytest.raises(shotgun_api3.AuthenticationFault, match="unknown or retired user"):
        sg.find("Project", [])


def test_human_without_sudo_permission_gets_plain_fault(
    Shotgun: Factory, site: ServerThread
) -> None:
    sg = Shotgun(login="alice", password="alice-pw", sudo_as_login="bob")
    with pytest.raises(shotgun_api3.Fault, match="does not have permission to 'sudo'") as info:
        sg.find("Project", [])
    assert not isinstance(info.value, shotgun_api3.AuthenticationFault)


def test_session_token_expires_after_idle_window_and_slides(
    Shotgun: Factory, site: ServerThread, clock: MovableClock
) -> None:
    token = Shotgun(login="alice", password="alice-pw").get_session_token()
    sg = Shotgun(session_token=token)
    clock.advance(86000)
    assert project_names(sg) == ALICE  # used before the window closed: it slides
    clock.advance(86000)
    assert project_names(sg) == ALICE
    clock.advance(86400)
    with pytest.raises(shotgun_api3.AuthenticationFault):
        project_names(sg)


def test_unknown_session_token_and_revocation(
    Shotgun: Factory, site: ServerThread, emulator: ShotGridEmulator
) -> None:
    with pytest.raises(shotgun_api3.AuthenticationFault):
        project_names(Shotgun(session_token="0" * 32))
    token = Shotgun(login="bob", password="bob-pw").get_session_token()
    emulator.revoke_user_tokens("bob")
    with pytest.raises(shotgun_api3.AuthenticationFault):
        project_names(Shotgun(session_token=token))


def test_calls_are_counted(
    Shotgun: Factory, site: ServerThread, emulator: ShotGridEmulator
) -> None:
    sg = Shotgun(login="alice", password="alice-pw", connect=True)
    sg.find("Project", [])
    assert emulator.calls["api3:info"] == 1
    assert emulator.calls["api3:read"] == 1
