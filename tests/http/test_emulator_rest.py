"""The emulator's REST surface over real HTTP: grants, errors, rotation, reads, permissions."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from shotgrid_emulator import ShotGridEmulator
from tests.support.emulator import MovableClock
from tests.support.servers import ServerThread, serve

TOKEN = "/api/v1/auth/access_token"
pytestmark = pytest.mark.timeout(30)


def claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def token(site: ServerThread, **form: str) -> httpx.Response:
    return httpx.post(site.url + TOKEN, data=form)


def password(site: ServerThread, login: str, pw: str | None = None) -> httpx.Response:
    return token(site, grant_type="password", username=login, password=pw or f"{login}-pw")


def script(site: ServerThread, **extra: str) -> httpx.Response:
    return token(
        site,
        grant_type="client_credentials",
        client_id="token-broker",
        client_secret="token-broker-key",
        **extra,
    )


def projects(site: ServerThread, access_token: str) -> list[str]:
    r = httpx.get(
        site.url + "/api/v1/entity/projects", headers={"Authorization": f"Bearer {access_token}"}
    )
    assert r.status_code == 200, r.text
    return [p["attributes"]["name"] for p in r.json()["data"]]


def assert_error(r: httpx.Response, status: int, code: int, title: str) -> None:
    assert r.status_code == status, r.text
    (error,) = r.json()["errors"]
    assert set(error) == {"id", "status", "code", "title", "source", "detail", "meta"}
    assert (error["status"], error["code"], error["title"]) == (status, code, title)
    assert len(error["id"]) == 32


def test_password_grant_success_body_is_exactly_shotgrids(site: ServerThread) -> None:
    r = password(site, "alice")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    body = r.json()
    assert list(body) == ["token_type", "access_token", "expires_in", "refresh_token"]
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 600)
    header = json.loads(base64.urlsafe_b64decode(body["access_token"].split(".")[0] + "=="))
    assert header == {"alg": "HS256"}
    c = claims(body["access_token"])
    assert c["user"] == {"type": "HumanUser", "id": 101}
    assert c["sudo_as_login"] is None and c["auth_type"] == "password"
    assert c["exp"] - c["iat"] == 600
    rc = claims(body["refresh_token"])
    assert rc["exp"] - rc["iat"] == 86400


def test_parameters_in_query_string_with_empty_body(site: ServerThread) -> None:
    r = httpx.post(
        site.url + TOKEN,
        params={"grant_type": "password", "username": "bob", "password": "bob-pw"},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200
    assert claims(r.json()["access_token"])["user"]["id"] == 102


def test_v1_1_prefix_serves_the_same_endpoint(site: ServerThread) -> None:
    r = httpx.post(
        site.url + "/api/v1.1/auth/access_token",
        data={"grant_type": "password", "username": "alice", "password": "alice-pw"},
    )
    assert r.status_code == 200


def test_client_credentials_grant(site: ServerThread) -> None:
    r = script(site)
    assert r.status_code == 200
    c = claims(r.json()["access_token"])
    assert c["user"] == {"type": "ApiUser", "id": 301} and c["auth_type"] == "api_key"


def test_session_token_grant(site: ServerThread, emulator: ShotGridEmulator) -> None:
    session = emulator.site.create_session(emulator.directory.user("bob"))  # type: ignore[arg-type]
    r = token(site, grant_type="session_token", session_token=session)
    assert r.status_code == 200
    c = claims(r.json()["access_token"])
    assert c["user"]["id"] == 102 and c["auth_type"] == "session_token"


@pytest.mark.parametrize(
    ("form", "status", "code", "title"),
    [
        (
            {"grant_type": "password", "username": "alice", "password": "nope"},
            400,
            102,
            "Can't authenticate user 'alice'.",
        ),
        (
            {"grant_type": "password", "username": "nobody", "password": "x"},
            400,
            102,
            "Can't authenticate user 'nobody'.",
        ),
        (
            {"grant_type": "password", "username": "carol", "password": "carol-pw"},
            400,
            102,
            "Can't authenticate user 'carol'. User account is disabled.",
        ),
        (
            {"grant_type": "password", "username": "carol", "password": "wrong"},
            400,
            102,
            "Can't authenticate user 'carol'.",
        ),
        (
            {"grant_type": "password", "username": "dave", "password": "dave-pw"},
            400,
            106,
            "Two factor authentication required",
        ),
        (
            {"grant_type": "password", "username": "erin", "password": "erin-pw"},
            400,
            108,
            "Authentication using username/password is not allowed for an "
            "SSO-enabled Flow Production Tracking site",
        ),
        (
            {"grant_type": "password", "username": "alice"},
            400,
            103,
            "Missing or invalid authentication arguments",
        ),
        (
            {"grant_type": "client_credentials", "client_id": "token-broker", "client_secret": "x"},
            400,
            102,
            "Can't authenticate script 'token-broker'",
        ),
        (
            {"grant_type": "client_credentials", "client_id": "token-broker"},
            400,
            103,
            "Missing or invalid authentication arguments",
        ),
        (
            {"grant_type": "session_token", "session_token": "0123456789abcdef"},
            400,
            102,
            "Can't authenticate session token ending with 'cdef'",
        ),
        ({"grant_type": "refresh_token", "refresh_token": "not.a.jwt"}, 401, 102, "Unauthorized"),
        ({"grant_type": "refresh", "refresh_token": "garbage"}, 401, 102, "Unauthorized"),
        ({"grant_type": "authorization_code", "code": "x"}, 400, 103, "Unsupported grant_type"),
        ({}, 400, 103, "Unsupported grant_type"),
    ],
)
def test_token_endpoint_errors(
    site: ServerThread, form: dict[str, str], status: int, code: int, title: str
) -> None:
    assert_error(token(site, **form), status, code, title)


@pytest.mark.parametrize(
    ("content_type", "body", "status", "title"),
    [
        ("text/plain", b"grant_type=password", 415, "Unsupported Content-Type 'text/plain'"),
        ("application/json", b"grant_type=password&username=alice", 400, "Invalid JSON body"),
        (
            "application/json",
            b'{"grant_type": "password"}',
            415,
            "Unsupported Content-Type 'application/json'",
        ),
    ],
)
def test_content_type_rules(
    site: ServerThread, content_type: str, body: bytes, status: int, title: str
) -> None:
    r = httpx.post(site.url + TOKEN, content=body, headers={"Content-Type": content_type})
    assert_error(r, status, 103, title)


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded; charset=bogus"])
def test_form_content_types_accepted(site: ServerThread, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    r = httpx.post(
        site.url + TOKEN,
        content=b"grant_type=password&username=alice&password=alice-pw",
        headers=headers,
    )
    assert r.status_code == 200


@pytest.mark.parametrize("grant", ["refresh_token", "refresh"])
def test_refresh_rotates_and_old_token_is_refused(site: ServerThread, grant: str) -> None:
    first = password(site, "alice").json()
    r = token(site, grant_type=grant, refresh_token=first["refresh_token"])
    assert r.status_code == 200
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert claims(second["access_token"])["user"]["id"] == 101
    assert_error(
        token(site, grant_type=grant, refresh_token=first["refresh_token"]),
        401,
        102,
        "Unauthorized",
    )
    assert token(site, grant_type=grant, refresh_token=second["refresh_token"]).status_code == 200


def test_reuse_tolerated_when_rotation_not_strict(clock: MovableClock) -> None:
    emu = ShotGridEmulator.default(clock=clock, strict_refresh_rotation=False)
    with serve(emu.app) as srv:
        rt = password(srv, "alice").json()["refresh_token"]
        for _ in range(2):
            assert token(srv, grant_type="refresh_token", refresh_token=rt).status_code == 200


def test_refresh_token_expires_after_refresh_ttl(site: ServerThread, clock: MovableClock) -> None:
    rt = password(site, "alice").json()["refresh_token"]
    clock.advance(86400)
    assert_error(
        token(site, grant_type="refresh_token", refresh_token=rt), 401, 102, "Unauthorized"
    )


def test_refresh_token_is_not_a_bearer(site: ServerThread) -> None:
    rt = password(site, "alice").json()["refresh_token"]
    r = httpx.get(site.url + "/api/v1/entity/projects", headers={"Authorization": f"Bearer {rt}"})
    assert_error(r, 401, 102, "Unauthorized")


def test_revoke_user_tokens_kills_refresh_and_sessions(
    site: ServerThread, emulator: ShotGridEmulator
) -> None:
    rt = password(site, "bob").json()["refresh_token"]
    session = emulator.site.create_session(emulator.directory.user("bob"))  # type: ignore[arg-type]
    emulator.revoke_user_tokens("bob")
    assert token(site, grant_type="refresh_token", refresh_token=rt).status_code == 401
    assert token(site, grant_type="session_token", session_token=session).status_code == 400


def test_disabled_user_loses_bearer_and_refresh(
    site: ServerThread, emulator: ShotGridEmulator
) -> None:
    body = password(site, "alice").json()
    emulator.set_active("alice", False)
    r = httpx.get(
        site.url + "/api/v1/entity/projects",
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert r.status_code == 401
    assert (
        token(site, grant_type="refresh_token", refresh_token=body["refresh_token"]).status_code
        == 401
    )
    assert_error(
        password(site, "alice"),
        400,
        102,
        "Can't authenticate user 'alice'. User account is disabled.",
    )


@pytest.mark.parametrize(
    ("target", "title"),
    [
        ("nobody", "Cannot 'sudo' - unknown or retired user: 'nobody'"),
        ("carol", "Cannot 'sudo' - inactive user account: 'carol'"),
        (
            "alice",
            "Cannot 'sudo' - user account has 'can_impersonate_this_user' turned off: 'alice'",
        ),
    ],
)
def test_sudo_refusals(
    site: ServerThread, emulator: ShotGridEmulator, target: str, title: str
) -> None:
    emulator.directory.user("alice").can_impersonate_this_user = False  # type: ignore[union-attr]
    assert_error(script(site, scope=f"sudo_as_login:{target}"), 400, 102, title)


def test_human_without_sudo_permission_is_refused(site: ServerThread) -> None:
    r = token(
        site,
        grant_type="password",
        username="alice",
        password="alice-pw",
        scope="sudo_as_login:bob",
    )
    assert_error(r, 400, 102, "The user does not have permission to 'sudo': bob")


def test_bare_sudo_field_is_ignored(site: ServerThread) -> None:
    r = script(site, sudo_as_login="bob")
    assert claims(r.json()["access_token"])["sudo_as_login"] is None


@pytest.mark.parametrize(
    ("login", "expected"),
    [("alice", ["Spring Shorts", "Harbor Lights"]), ("bob", ["Harbor Lights", "Night Market"])],
)
def test_projects_per_user_and_per_sudo_target(
    site: ServerThread, login: str, expected: list[str]
) -> None:
    assert projects(site, password(site, login).json()["access_token"]) == expected
    sudo = script(site, scope=f"sudo_as_login:{login}").json()
    c = claims(sudo["access_token"])
    assert c["user"] == {"type": "ApiUser", "id": 301} and c["sudo_as_login"] == login
    assert projects(site, sudo["access_token"]) == expected


def test_script_without_sudo_sees_every_project(site: ServerThread) -> None:
    names = projects(site, script(site).json()["access_token"])
    assert names == ["Spring Shorts", "Harbor Lights", "Night Market"]


def test_sudo_token_refresh_keeps_the_target(site: ServerThread) -> None:
    rt = script(site, scope="sudo_as_login:bob").json()["refresh_token"]
    body = token(site, grant_type="refresh_token", refresh_token=rt).json()
    assert projects(site, body["access_token"]) == ["Harbor Lights", "Night Market"]


def test_human_user_by_login_shape(site: ServerThread) -> None:
    at = password(site, "alice").json()["access_token"]
    r = httpx.get(
        site.url + "/api/v1/entity/human_users",
        params={"filter[login]": "bob", "fields": "login,name,email,sg_status_list,bogus"},
        headers={"Authorization": f"Bearer {at}"},
    )
    assert r.status_code == 200
    body = r.json()
    (record,) = body["data"]
    assert record["type"] == "HumanUser" and record["id"] == 102
    assert record["attributes"] == {
        "login": "bob",
        "email": "bob@example.com",
        "name": "Bob Builder",
        "sg_status_list": "act",
    }
    assert record["links"] == {"self": "/api/v1/entity/human_users/102"}
    assert set(body["links"]) == {"self", "next"}


def test_human_user_by_id_and_unknown_id(site: ServerThread) -> None:
    headers = {"Authorization": f"Bearer {script(site).json()['access_token']}"}
    r = httpx.get(site.url + "/api/v1/entity/human_users/103", headers=headers)
    assert r.status_code == 200
    data = r.json()["data"]
    assert data["attributes"]["sg_status_list"] == "dis"
    assert data["relationships"]["permission_rule_set"]["data"]["type"] == "PermissionRuleSet"
    r = httpx.get(site.url + "/api/v1/entity/human_users/999", headers=headers)
    assert_error(r, 404, 104, "Not Found")
    assert r.json()["errors"][0]["detail"] == "HumanUser: 999 not found"


@pytest.mark.parametrize(
    "authorization", [None, "Bearer", "Bearer garbage", "Basic YWxpY2U6YWxpY2UtcHc="]
)
def test_bad_bearer_is_401(site: ServerThread, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    r = httpx.get(site.url + "/api/v1/entity/human_users", headers=headers)
    assert_error(r, 401, 102, "Unauthorized")


def test_expired_bearer_is_401(site: ServerThread, clock: MovableClock) -> None:
    at = password(site, "alice").json()["access_token"]
    clock.advance(600)
    r = httpx.get(site.url + "/api/v1/entity/projects", headers={"Authorization": f"Bearer {at}"})
    assert_error(r, 401, 102, "Unauthorized")


def test_bearer_from_another_emulator_is_401(site: ServerThread) -> None:
    other = ShotGridEmulator.default()
    with serve(other.app) as srv:
        at = password(srv, "alice").json()["access_token"]
    r = httpx.get(site.url + "/api/v1/entity/projects", headers={"Authorization": f"Bearer {at}"})
    assert r.status_code == 401


def test_there_is_no_me(site: ServerThread) -> None:
    assert_error(httpx.get(site.url + "/api/v1/entity/human_users/me"), 404, 103, "Not Found")
    assert_error(httpx.get(site.url + "/api/v1/me"), 404, 103, "Not Found")


@pytest.mark.parametrize(("prefix", "version"), [("/api/v1", "1.0"), ("/api/v1.1", "1.1")])
def test_site_info(site: ServerThread, prefix: str, version: str) -> None:
    data = httpx.get(site.url + prefix).json()["data"]
    assert data["api_version"] == version
    assert data["user_authentication_method"] == "default"


def test_admin_routes_off_by_default(site: ServerThread) -> None:
    r = httpx.post(site.url + "/_emulator/faults", json={"target": "token", "status": 503})
    assert r.status_code == 404
    assert password(site, "alice").status_code == 200


def test_admin_routes_when_enabled() -> None:
    emu = ShotGridEmulator.default(admin_routes=True)
    with serve(emu.app) as srv:
        r = httpx.post(srv.url + "/_emulator/faults", json={"target": "token", "status": 503})
        assert r.status_code == 204
        assert password(srv, "alice").status_code == 503
        assert httpx.delete(srv.url + "/_emulator/faults").status_code == 204
        assert password(srv, "alice").status_code == 200
        assert (
            httpx.post(srv.url + "/_emulator/users/bob/active", json={"active": False}).status_code
            == 204
        )
        assert password(srv, "bob").status_code == 400
        assert httpx.get(srv.url + "/_emulator/calls").json()["token:password"] == 3


def test_call_counters_and_faults(site: ServerThread, emulator: ShotGridEmulator) -> None:
    password(site, "alice")
    script(site)
    assert emulator.calls["token:password"] == 1
    assert emulator.calls["token:client_credentials"] == 1
    assert emulator.calls["token"] == 2
    emulator.faults.set("token:password", status=503, times=1)
    assert password(site, "alice").status_code == 503
    assert password(site, "alice").status_code == 200
    emulator.faults.set("/api/v1/entity", status=502)
    assert script(site).status_code == 200
    r = httpx.get(site.url + "/api/v1/entity/projects")
    assert r.status_code == 502
    emulator.faults.set("token", drop=True)
    with pytest.raises(httpx.RemoteProtocolError):
        password(site, "alice")
    emulator.faults.clear()
    assert password(site, "alice").status_code == 200


# ---- site info, permission groups, the event log ----------------------------------------

ARRAY = "application/vnd+shotgun.api3_array+json"
HASH = "application/vnd+shotgun.api3_hash+json"


def bearer(site: ServerThread) -> dict[str, str]:
    return {"Authorization": f"Bearer {script(site).json()['access_token']}"}


def test_site_info_reports_launcher_and_auth_method(
    site: ServerThread, emulator: ShotGridEmulator
) -> None:
    data = httpx.get(site.url + "/api/v1").json()["data"]
    assert data["authentication_app_session_launcher_enabled"] is True
    assert data["user_authentication_method"] == "default"
    emulator.set_app_session_launcher(False)
    data = httpx.get(site.url + "/api/v1.1").json()["data"]
    assert data["authentication_app_session_launcher_enabled"] is False


def test_permission_group_is_a_relationship(site: ServerThread, emulator: ShotGridEmulator) -> None:
    def group(user_id: int) -> dict[str, Any]:
        r = httpx.get(
            f"{site.url}/api/v1/entity/human_users/{user_id}",
            params={"fields": "login,permission_rule_set"},
            headers=bearer(site),
        )
        data = r.json()["data"]
        assert "permission_rule_set" not in data["attributes"]
        return data["relationships"]["permission_rule_set"]  # type: ignore[no-any-return]

    frank = group(106)
    assert frank["data"] == {"id": 5, "name": "Admin", "type": "PermissionRuleSet"}
    assert frank["links"] == {
        "self": "/api/v1/entity/human_users/106/relationships/permission_rule_set",
        "related": "/api/v1/entity/permission_rule_sets/5",
    }
    assert group(101)["data"] == {"id": 8, "name": "Artist", "type": "PermissionRuleSet"}
    emulator.set_permission_group("alice", "Admin")
    assert group(101)["data"]["name"] == "Admin"


def test_admin_route_sets_the_permission_group() -> None:
    emu = ShotGridEmulator.default(admin_routes=True)
    with serve(emu.app) as srv:
        url = srv.url + "/_emulator/users/{}/permission_group"
        assert httpx.post(url.format("bob"), json={"group": "Admin"}).status_code == 204
        assert httpx.post(url.format("bob"), json={"group": "Admn"}).status_code == 400
        assert httpx.post(url.format("bob"), json={}).status_code == 400
        assert httpx.post(url.format("nobody"), json={"group": "Admin"}).status_code == 404
    assert emu.directory.user("bob").permission_rule_set == "Admin"  # type: ignore[union-attr]
    (event,) = emu.events
    assert event.attribute_name == "permission_rule_set"


def changes(emulator: ShotGridEmulator) -> None:
    """Four events: 1 bob off, 2 alice to Admin, 3 bob on, 4 erin off."""
    emulator.set_active("bob", False)
    emulator.set_permission_group("alice", "Admin")
    emulator.set_active("bob", True)
    emulator.set_active("erin", False)


def search(site: ServerThread, body: dict[str, Any], ctype: str = ARRAY) -> httpx.Response:
    return httpx.post(
        site.url + "/api/v1/entity/event_log_entries/_search",
        content=json.dumps(body),
        headers={**bearer(site), "Content-Type": ctype},
    )


def ids(r: httpx.Response) -> list[int]:
    assert r.status_code == 200, r.text
    return [row["id"] for row in r.json()["data"]]


def test_event_log_row_over_rest(
    site: ServerThread, emulator: ShotGridEmulator, clock: MovableClock
) -> None:
    emulator.set_active("dave", False)
    r = search(site, {"filters": [], "fields": ["event_type", "attribute_name", "entity", "meta"]})
    (row,) = r.json()["data"]
    assert row["type"] == "EventLogEntry" and row["id"] == 1
    assert row["links"] == {"self": "/api/v1/entity/event_log_entries/1"}
    assert row["attributes"]["event_type"] == "Shotgun_HumanUser_Change"
    assert row["attributes"]["attribute_name"] == "sg_status_list"
    meta = row["attributes"]["meta"]
    assert (meta["type"], meta["entity_id"], meta["old_value"], meta["new_value"]) == (
        "attribute_change",
        104,
        "act",
        "dis",
    )
    assert row["relationships"]["entity"]["data"] == {
        "id": 104,
        "name": "Dave Director",
        "type": "HumanUser",
    }
    r = httpx.get(
        site.url + "/api/v1/entity/event_log_entries/1",
        params={"fields": "created_at,user"},
        headers=bearer(site),
    )
    data = r.json()["data"]
    assert data["attributes"] == {"created_at": clock.now.strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert data["relationships"]["user"]["data"] is None


@pytest.mark.parametrize(
    ("body", "ctype", "expected"),
    [
        ({"filters": [["id", "greater_than", 2]]}, ARRAY, [3, 4]),
        ({"filters": [["id", "greater_than", 1]], "sort": "-id"}, ARRAY, [4, 3, 2]),
        ({"filters": [["attribute_name", "in", ["sg_status_list"]]]}, ARRAY, [1, 3, 4]),
        ({"filters": [["event_type", "is", "Shotgun_HumanUser_Change"]]}, ARRAY, [1, 2, 3, 4]),
        ({"filters": [["event_type", "in", ["Shotgun_Shot_Change"]]]}, ARRAY, []),
        ({"filters": [["entity", "is", {"type": "HumanUser", "id": 102}]]}, ARRAY, [1, 3]),
        ({"filters": [], "sort": "-id", "page": {"size": 2, "number": 2}}, ARRAY, [2, 1]),
        ({"filters": [], "sort": "meta"}, ARRAY, [1, 2, 3, 4]),  # unsortable: id order
        (
            {
                "filters": {
                    "logical_operator": "or",
                    "conditions": [["id", "is", 1], ["id", "is", 4]],
                }
            },
            HASH,
            [1, 4],
        ),
    ],
)
def test_event_log_search(
    site: ServerThread,
    emulator: ShotGridEmulator,
    body: dict[str, Any],
    ctype: str,
    expected: list[int],
) -> None:
    changes(emulator)
    assert ids(search(site, body, ctype)) == expected


@pytest.mark.parametrize(
    ("body", "ctype", "status", "title"),
    [
        ({"filters": []}, "application/json", 415, "Unsupported Content-Type 'application/json'"),
        (
            {"filters": [["meta", "is", None]]},
            ARRAY,
            400,
            "API read() EventLogEntry.meta's 'serializable' data type cannot be used in a filter.",
        ),
        (
            {"filters": [["bogus", "is", 1]]},
            ARRAY,
            400,
            "API read() EventLogEntry.bogus doesn't exist.",
        ),
        ({"filters": [["id", "is", 1]]}, HASH, 400, "Query is not an Hash: [['id', 'is', 1]]"),
        ({"filters": [], "page": {"size": 0}}, ARRAY, 400, "Request Parameters invalid."),
    ],
)
def test_event_log_search_errors(
    site: ServerThread, body: dict[str, Any], ctype: str, status: int, title: str
) -> None:
    assert_error(search(site, body, ctype), status, 103, title)


def test_event_log_search_needs_a_bearer(site: ServerThread) -> None:
    r = httpx.post(
        site.url + "/api/v1/entity/event_log_entries/_search",
        content=b'{"filters": []}',
        headers={"Content-Type": ARRAY},
    )
    assert_error(r, 401, 102, "Unauthorized")


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"sort": "id"}, [1, 2, 3, 4]),
        ({"sort": "-id"}, [4, 3, 2, 1]),
        ({"sort": "-id", "page[size]": "3"}, [4, 3, 2]),
        ({"sort": "-id", "page[size]": "3", "page[number]": "2"}, [1]),
        ({"sort": "id", "page[size]": "3", "page[number]": "3"}, []),
        ({"filter[attribute_name]": "permission_rule_set"}, [2]),
    ],
)
def test_event_log_get_sort_and_pages(
    site: ServerThread, emulator: ShotGridEmulator, params: dict[str, str], expected: list[int]
) -> None:
    changes(emulator)
    r = httpx.get(
        site.url + "/api/v1/entity/event_log_entries",
        params={**params, "fields": "event_type"},
        headers=bearer(site),
    )
    assert ids(r) == expected
    body = r.json()
    for row in body["data"]:
        assert set(row["attributes"]) == {"event_type"}
    assert "page%5Bnumber%5D=" in body["links"]["next"]  # emitted even on an empty page


def test_human_users_search(site: ServerThread) -> None:
    r = httpx.post(
        site.url + "/api/v1/entity/human_users/_search",
        content=json.dumps({"filters": [["login", "is", "frank"]], "fields": "login,name"}),
        headers={**bearer(site), "Content-Type": ARRAY},
    )
    (row,) = r.json()["data"]
    assert row["id"] == 106
    assert row["attributes"] == {"login": "frank", "name": "Frank Admin"}
    assert row["relationships"] == {}


def test_unknown_query_filter_field_is_400(site: ServerThread) -> None:
    r = httpx.get(
        site.url + "/api/v1/entity/human_users",
        params={"filter[bogus]": "x"},
        headers=bearer(site),
    )
    assert_error(r, 400, 103, "API read() HumanUser.bogus doesn't exist.")
