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
