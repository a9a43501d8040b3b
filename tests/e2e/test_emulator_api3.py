"""The real `shotgun_api3.Shotgun` client (blocking httplib2, in the test thread) against
the emulator served by uvicorn in its own thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
import shotgun_api3

from shotgrid_emulator import ShotGridEmulator
from tests.support.emulator import MovableClock, dave_totp
from tests.support.servers import ServerThread, serve

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
    assert [u["login"] for u in users] == ["alice", "bob", "carol", "dave", "erin", "frank"]
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


# ---- two-factor (research §3.2) ---------------------------------------------------------


def test_two_factor_code_gets_a_session_token(
    Shotgun: Factory, site: ServerThread, clock: MovableClock
) -> None:
    sg = Shotgun(login="dave", password="dave-pw", auth_token=dave_totp().at(clock.now))
    token = sg.get_session_token()
    assert len(token) == 32
    # The client switched itself to the session token; it reads as dave.
    assert sg.find_one("HumanUser", [["login", "is", "dave"]], ["login"])["id"] == 104
    assert project_names(Shotgun(session_token=token)) == ["Night Market"]


@pytest.mark.parametrize(
    ("code", "fault"),
    [
        (None, shotgun_api3.MissingTwoFactorAuthenticationFault),
        ("000000", shotgun_api3.AuthenticationFault),
        ("12345", shotgun_api3.AuthenticationFault),
        ("stale", shotgun_api3.AuthenticationFault),
    ],
)
def test_two_factor_without_or_with_a_wrong_code(
    Shotgun: Factory,
    site: ServerThread,
    clock: MovableClock,
    code: str | None,
    fault: type[Exception],
) -> None:
    if code == "stale":
        code = dave_totp().at(clock.now.timestamp() - 90)  # three steps old
    elif code == "000000" and dave_totp().verify(code, for_time=clock.now, valid_window=1):
        code = "999999"  # the one-in-a-million draw where 000000 is right
    sg = Shotgun(login="dave", password="dave-pw", connect=False)
    # What the constructor's auth_token sets; set afterwards so that the failing call is
    # not made inside the constructor, which would leave its socket unclosed.
    sg.config.auth_token = code
    with pytest.raises(fault) as info:
        sg.get_session_token()
    if fault is shotgun_api3.AuthenticationFault:
        assert not isinstance(info.value, shotgun_api3.MissingTwoFactorAuthenticationFault)


def test_two_factor_code_does_not_rescue_a_wrong_password(
    Shotgun: Factory, site: ServerThread, clock: MovableClock
) -> None:
    sg = Shotgun(login="dave", password="nope", connect=False)
    sg.config.auth_token = dave_totp().at(clock.now)
    # The password refusal itself, not the wrong-code one.
    with pytest.raises(
        shotgun_api3.AuthenticationFault, match=r"^Can't authenticate user 'dave'\.$"
    ):
        sg.get_session_token()


def test_two_factor_code_single_use_when_asked(clock: MovableClock) -> None:
    emu = ShotGridEmulator.default(clock=clock, totp_single_use=True)
    code = dave_totp().at(clock.now)
    with serve(emu.app) as srv:
        first = shotgun_api3.Shotgun(srv.url, login="dave", password="dave-pw", auth_token=code)
        assert first.get_session_token()
        again = shotgun_api3.Shotgun(srv.url, login="dave", password="dave-pw", connect=False)
        again.config.auth_token = code
        with pytest.raises(shotgun_api3.AuthenticationFault):
            again.get_session_token()
        clock.advance(30)
        later = shotgun_api3.Shotgun(
            srv.url, login="dave", password="dave-pw", auth_token=dave_totp().at(clock.now)
        )
        assert later.get_session_token()
        for sg in (first, again, later):
            sg.close()


def test_two_factor_code_reusable_by_default(
    Shotgun: Factory, site: ServerThread, clock: MovableClock
) -> None:
    code = dave_totp().at(clock.now)
    for _ in range(2):
        assert Shotgun(login="dave", password="dave-pw", auth_token=code).get_session_token()


# ---- site info, permission groups, the event log ----------------------------------------


def test_info_reports_launcher_and_auth_method(Shotgun: Factory, site: ServerThread) -> None:
    info = Shotgun(session_token="unused", connect=False).info()
    assert info["authentication_app_session_launcher_enabled"] is True
    assert info["user_authentication_method"] == "default"


def test_info_follows_the_users_file(tmp_path: Path) -> None:
    path = tmp_path / "users.toml"
    path.write_text(
        '[site]\nuser_authentication_method = "oxygen"\n'
        "authentication_app_session_launcher_enabled = false\n"
    )
    emu = ShotGridEmulator.from_users_file(str(path))
    with serve(emu.app) as srv:
        sg = shotgun_api3.Shotgun(srv.url, session_token="unused", connect=False)
        info = sg.info()
        sg.close()
    assert info["authentication_app_session_launcher_enabled"] is False
    assert info["user_authentication_method"] == "oxygen"


def test_permission_groups_read_as_entity_links(
    Shotgun: Factory, site: ServerThread, emulator: ShotGridEmulator
) -> None:
    sg = Shotgun(script_name="token-broker", api_key="token-broker-key")
    users = sg.find("HumanUser", [], ["login", "permission_rule_set"])
    groups = {u["login"]: u["permission_rule_set"] for u in users}
    assert groups["frank"] == {"type": "PermissionRuleSet", "id": 5, "name": "Admin"}
    assert {g["name"] for login, g in groups.items() if login != "frank"} == {"Artist"}
    admin = {"type": "PermissionRuleSet", "id": 5}
    found = sg.find("HumanUser", [["permission_rule_set", "is", admin]], ["login"])
    assert [u["login"] for u in found] == ["frank"]
    emulator.set_permission_group("alice", "Admin")
    found = sg.find("HumanUser", [["permission_rule_set", "is", admin]], ["login"])
    assert [u["login"] for u in found] == ["alice", "frank"]


def test_frank_is_an_active_admin_in_every_project(Shotgun: Factory, site: ServerThread) -> None:
    sg = Shotgun(login="frank", password="frank-pw")
    me = sg.find_one("HumanUser", [["login", "is", "frank"]], ["name", "email", "sg_status_list"])
    assert me == {
        "type": "HumanUser",
        "id": 106,
        "name": "Frank Admin",
        "email": "frank@example.com",
        "sg_status_list": "act",
    }
    assert project_names(sg) == ["Spring Shorts", "Harbor Lights", "Night Market"]


def test_set_permission_group_refuses_unknowns(emulator: ShotGridEmulator) -> None:
    with pytest.raises(ValueError, match="unknown permission group"):
        emulator.set_permission_group("alice", "Admn")
    with pytest.raises(KeyError):
        emulator.set_permission_group("nobody", "Admin")
    assert emulator.events == []


def make_events(emulator: ShotGridEmulator, clock: MovableClock) -> None:
    """Five changes, ids 1-5: bob off, carol on, alice to Admin, bob on, alice to Manager."""
    emulator.set_active("bob", False)
    clock.advance(1)
    emulator.set_active("carol", True)
    emulator.set_active("carol", True)  # no change: no event
    emulator.set_permission_group("alice", "Admin")
    emulator.set_active("bob", True)
    emulator.set_permission_group("alice", "Manager")


def test_event_log_rows_are_shotgrids(
    Shotgun: Factory, site: ServerThread, emulator: ShotGridEmulator, clock: MovableClock
) -> None:
    make_events(emulator, clock)
    sg = Shotgun(script_name="token-broker", api_key="token-broker-key")
    fields = ["event_type", "attribute_name", "entity", "meta", "created_at", "user", "project"]
    first, _, third = sg.find("EventLogEntry", [["id", "less_than", 4]], fields)
    assert first["id"] == 1 and first["type"] == "EventLogEntry"
    assert first["event_type"] == "Shotgun_HumanUser_Change"
    assert first["attribute_name"] == "sg_status_list"
    assert first["entity"] == {"type": "HumanUser", "id": 102, "name": "Bob Builder"}
    assert first["meta"] == {
        "type": "attribute_change",
        "attribute_name": "sg_status_list",
        "entity_type": "HumanUser",
        "entity_id": 102,
        "in_create": False,
        "field_data_type": "status_list",
        "old_value": "act",
        "new_value": "dis",
        "platform_id": None,
    }
    # shotgun_api3 parses the timestamp; the client turns it into local time by default.
    assert first["created_at"].astimezone(UTC) == clock.now - timedelta(seconds=1)
    assert first["user"] is None and first["project"] is None
    assert third["attribute_name"] == "permission_rule_set"
    assert third["meta"]["field_data_type"] == "entity"
    assert third["meta"]["old_value"] == {"type": "PermissionRuleSet", "id": 8, "name": "Artist"}
    assert third["meta"]["new_value"] == {"type": "PermissionRuleSet", "id": 5, "name": "Admin"}


@pytest.mark.parametrize(
    ("filters", "order", "expected"),
    [
        ([["id", "greater_than", 2]], "asc", [3, 4, 5]),
        ([["id", "greater_than", 2]], "desc", [5, 4, 3]),
        ([["event_type", "is", "Shotgun_HumanUser_Change"]], "asc", [1, 2, 3, 4, 5]),
        ([["event_type", "in", ["Shotgun_Project_Change"]]], "asc", []),
        ([["attribute_name", "in", ["sg_status_list"]]], "asc", [1, 2, 4]),
        (
            [["id", "greater_than", 1], ["attribute_name", "in", ["permission_rule_set"]]],
            "desc",
            [5, 3],
        ),
        ([["entity", "is", {"type": "HumanUser", "id": 102}]], "asc", [1, 4]),
    ],
)
def test_event_log_filters_and_order(
    Shotgun: Factory,
    site: ServerThread,
    emulator: ShotGridEmulator,
    clock: MovableClock,
    filters: list[Any],
    order: str,
    expected: list[int],
) -> None:
    make_events(emulator, clock)
    sg = Shotgun(script_name="token-broker", api_key="token-broker-key")
    rows = sg.find(
        "EventLogEntry", filters, ["id"], order=[{"field_name": "id", "direction": order}]
    )
    assert [r["id"] for r in rows] == expected


def test_event_log_paging_from_the_last_seen_id(
    Shotgun: Factory, site: ServerThread, emulator: ShotGridEmulator, clock: MovableClock
) -> None:
    make_events(emulator, clock)
    sg = Shotgun(script_name="token-broker", api_key="token-broker-key")
    asc = [{"field_name": "id", "direction": "asc"}]
    assert [r["id"] for r in sg.find("EventLogEntry", [], ["id"], order=asc, limit=2)] == [1, 2]
    page = sg.find("EventLogEntry", [], ["id"], order=asc, limit=2, page=3)
    assert [r["id"] for r in page] == [5]
    newest = sg.find_one(
        "EventLogEntry", [], ["id"], order=[{"field_name": "id", "direction": "desc"}]
    )
    assert newest["id"] == 5
    assert sg.find("EventLogEntry", [["id", "greater_than", 5]], ["id"]) == []
    emulator.set_active("erin", False)
    assert [r["id"] for r in sg.find("EventLogEntry", [["id", "greater_than", 5]], ["id"])] == [6]


def test_event_log_refuses_a_filter_on_meta(
    Shotgun: Factory, site: ServerThread, emulator: ShotGridEmulator
) -> None:
    sg = Shotgun(script_name="token-broker", api_key="token-broker-key")
    with pytest.raises(shotgun_api3.Fault, match="'serializable' data type cannot be used"):
        sg.find("EventLogEntry", [["meta", "is", None]], ["id"])
