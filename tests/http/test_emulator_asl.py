"""The emulator's App Session Launcher over real HTTP: the two internal_api endpoints, the
approval page that stands in for the site's sign-in, the test hooks and the admin routes."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from shotgrid_emulator import ShotGridEmulator
from tests.support.emulator import MovableClock, dave_totp
from tests.support.servers import ServerThread, serve

CREATE = "/internal_api/app_session_request"
pytestmark = pytest.mark.timeout(30)


def create(site: ServerThread, **form: str) -> httpx.Response:
    return httpx.post(site.url + CREATE, data=form or {"appName": "Broker 7Q4K", "machineId": "m1"})


def poll(site: ServerThread, request_id: str) -> httpx.Response:
    return httpx.put(f"{site.url}{CREATE}/{request_id}")


def page_path(created: httpx.Response) -> str:
    parts = urlsplit(created.json()["url"])
    return parts.path


def submit(site: ServerThread, path: str, **form: str) -> httpx.Response:
    return httpx.post(site.url + path, data=form)


def approve(site: ServerThread, path: str, login: str, **extra: str) -> httpx.Response:
    return submit(site, path, username=login, password=f"{login}-pw", action="approve", **extra)


def input_names(html: str) -> set[str]:
    return set(re.findall(r'<input[^>]*\bname="([^"]+)"', html))


def hidden(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, html
    return match.group(1)


def token_of(site: ServerThread, request_id: str) -> dict[str, Any]:
    r = poll(site, request_id)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_create_answers_id_and_absolute_url(site: ServerThread) -> None:
    r = create(site)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert list(body) == ["sessionRequestId", "url"]
    rid = body["sessionRequestId"]
    assert body["url"] == f"{site.url}/app_session_request/{rid}?sticky_id={rid}"


def test_create_takes_json_too(site: ServerThread) -> None:
    r = httpx.post(site.url + CREATE, json={"appName": "x", "machineId": "y"})
    assert r.status_code == 200 and r.json()["sessionRequestId"]


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({}, "Missing params: appName, machineId"),
        ({"appName": "x"}, "Missing params: machineId"),
        ({"machineId": "m"}, "Missing params: appName"),
        ({"appName": "", "machineId": "m"}, "Missing params: appName"),
    ],
)
def test_missing_params_are_named(site: ServerThread, form: dict[str, str], message: str) -> None:
    r = httpx.post(site.url + CREATE, data=form)
    assert r.status_code == 400
    assert r.json() == {"message": message}


def test_launcher_off_is_403_json(site: ServerThread, emulator: ShotGridEmulator) -> None:
    emulator.set_app_session_launcher(False)
    r = create(site)
    assert r.status_code == 403
    assert set(r.json()) == {"message"}
    assert (
        httpx.get(site.url + "/api/v1").json()["data"][
            "authentication_app_session_launcher_enabled"
        ]
        is False
    )


def test_page_shows_app_name_and_the_contract_fields(site: ServerThread) -> None:
    created = create(site, appName="Broker <K7-Q4>", machineId="m")
    r = httpx.get(created.json()["url"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<p id="app-name">Broker &lt;K7-Q4&gt;</p>' in r.text  # shown, and escaped
    assert input_names(r.text) == {"username", "password"}  # no code until it is needed
    assert '<button type="submit" name="action" value="approve">' in r.text
    assert '<button type="submit" name="action" value="deny">' in r.text
    assert r.headers["cache-control"] == "no-store"


def test_approve_then_one_poll_hands_the_token_then_404(
    site: ServerThread, emulator: ShotGridEmulator
) -> None:
    created = create(site)
    rid = created.json()["sessionRequestId"]
    assert token_of(site, rid) == {"approved": False}
    r = approve(site, page_path(created), "alice")
    assert r.status_code == 200 and "approved" in r.text
    body = token_of(site, rid)
    assert set(body) == {"approved", "sessionToken", "userLogin"}
    assert body["approved"] is True and body["userLogin"] == "alice"
    gone = poll(site, rid)
    assert gone.status_code == 404 and gone.json() == {"message": "Not Found"}
    # The token is a session like any other: the REST session_token grant takes it.
    r = httpx.post(
        site.url + "/api/v1/auth/access_token",
        data={"grant_type": "session_token", "session_token": body["sessionToken"]},
    )
    assert r.status_code == 200
    assert emulator.calls["asl:create"] == 1 and emulator.calls["asl:poll"] == 3


def test_deny_needs_no_credentials_and_ends_the_request(site: ServerThread) -> None:
    created = create(site)
    rid = created.json()["sessionRequestId"]
    r = submit(site, page_path(created), action="deny")
    assert r.status_code == 200 and "denied" in r.text
    assert poll(site, rid).status_code == 404
    assert httpx.get(created.json()["url"]).status_code == 404
    assert approve(site, page_path(created), "alice").status_code == 404


@pytest.mark.parametrize(
    ("username", "password", "status"),
    [
        ("alice", "wrong", 401),
        ("nobody", "nobody-secret", 401),
        ("alice", "", 400),
        ("", "alice-pw", 400),
        ("carol", "carol-pw", 403),  # exists, right password, but disabled
    ],
)
def test_bad_credentials_reshow_the_form_and_approve_nothing(
    site: ServerThread, username: str, password: str, status: int
) -> None:
    created = create(site)
    r = submit(site, page_path(created), username=username, password=password, action="approve")
    assert r.status_code == status
    assert 'class="error"' in r.text and input_names(r.text) >= {"username", "password"}
    assert f'name="username" value="{username}"' in r.text
    if password:
        assert password not in r.text  # never echoed
    assert token_of(site, created.json()["sessionRequestId"]) == {"approved": False}


def test_sso_only_user_approves_with_the_page_standing_in_for_the_idp(
    site: ServerThread,
) -> None:
    created = create(site)
    assert approve(site, page_path(created), "erin").status_code == 200
    assert token_of(site, created.json()["sessionRequestId"])["userLogin"] == "erin"


def test_two_factor_user_without_code_is_asked_for_it(site: ServerThread) -> None:
    created = create(site)
    rid = created.json()["sessionRequestId"]
    r = approve(site, page_path(created), "dave")
    assert r.status_code == 200
    assert input_names(r.text) == {"username", "password", "code", "step"}
    assert 'name="username" value="dave"' in r.text and "dave-pw" not in r.text
    assert token_of(site, rid) == {"approved": False}
    # The code step: the password was checked already, so the code alone completes it.
    code = dave_totp().now()
    step = hidden(r.text, "step")
    r = submit(site, page_path(created), username="dave", code=code, step=step, action="approve")
    assert r.status_code == 200 and "approved" in r.text
    assert token_of(site, rid)["userLogin"] == "dave"


def test_two_factor_step_token_is_bound_to_its_user(site: ServerThread) -> None:
    created = create(site)
    step = hidden(approve(site, page_path(created), "dave").text, "step")
    code = dave_totp().now()
    r = submit(site, page_path(created), username="alice", code=code, step=step, action="approve")
    assert r.status_code == 400  # not dave's step: a password is needed again
    assert token_of(site, created.json()["sessionRequestId"]) == {"approved": False}


def test_two_factor_user_with_all_three_fields_at_once(
    site: ServerThread, clock: MovableClock
) -> None:
    created = create(site)
    code = dave_totp().at(clock.now)
    assert approve(site, page_path(created), "dave", code=code).status_code == 200
    assert token_of(site, created.json()["sessionRequestId"])["userLogin"] == "dave"


def test_two_factor_wrong_code_is_refused(site: ServerThread, clock: MovableClock) -> None:
    created = create(site)
    rid = created.json()["sessionRequestId"]
    totp = dave_totp()
    stale = totp.at(clock.now.timestamp() - 120)  # four steps old: outside the ±1 window
    r = approve(site, page_path(created), "dave", code=stale)
    assert r.status_code == 401 and "code" in input_names(r.text)
    assert token_of(site, rid) == {"approved": False}
    r = approve(site, page_path(created), "dave", code="12345")
    assert r.status_code == 401
    assert token_of(site, rid) == {"approved": False}
    # One step of drift either way is accepted (RFC 6238 §5.2).
    previous = totp.at(clock.now.timestamp() - 30)
    assert approve(site, page_path(created), "dave", code=previous).status_code == 200


def test_too_many_wrong_codes_on_one_step_ask_for_the_password_again(
    site: ServerThread,
) -> None:
    created = create(site)
    step = hidden(approve(site, page_path(created), "dave").text, "step")
    statuses = []
    for _ in range(5):
        r = submit(
            site, page_path(created), username="dave", code="000000", step=step, action="approve"
        )
        statuses.append(r.status_code)
    assert statuses == [401] * 5
    assert "step" not in input_names(r.text)  # the step is spent
    code = dave_totp().now()
    r = submit(site, page_path(created), username="dave", code=code, step=step, action="approve")
    assert r.status_code == 400


def test_request_expires_300_seconds_after_creation(
    site: ServerThread, clock: MovableClock
) -> None:
    created = create(site)
    rid = created.json()["sessionRequestId"]
    clock.advance(299)
    assert token_of(site, rid) == {"approved": False}
    clock.advance(1)
    assert poll(site, rid).status_code == 404
    assert httpx.get(created.json()["url"]).status_code == 404


def test_approved_but_unpolled_request_also_expires(
    site: ServerThread, emulator: ShotGridEmulator, clock: MovableClock
) -> None:
    rid = create(site).json()["sessionRequestId"]
    emulator.approve_app_session(rid, "bob")
    clock.advance(300)
    assert poll(site, rid).status_code == 404


@pytest.mark.parametrize("request_id", ["0" * 32, "nope"])
def test_unknown_id_is_404(site: ServerThread, request_id: str) -> None:
    r = poll(site, request_id)
    assert r.status_code == 404 and r.json() == {"message": "Not Found"}
    assert httpx.get(f"{site.url}/app_session_request/{request_id}").status_code == 404


def test_hooks_list_approve_and_deny(site: ServerThread, emulator: ShotGridEmulator) -> None:
    first = create(site, appName="Broker AAAA", machineId="m").json()["sessionRequestId"]
    second = create(site, appName="Broker BBBB", machineId="m").json()["sessionRequestId"]
    listed = {r["sessionRequestId"]: r["appName"] for r in emulator.app_session_requests()}
    assert listed == {first: "Broker AAAA", second: "Broker BBBB"}
    emulator.approve_app_session(first, "frank")
    emulator.deny_app_session(second)
    assert token_of(site, first)["userLogin"] == "frank"
    assert poll(site, second).status_code == 404
    assert emulator.app_session_requests() == []
    with pytest.raises(LookupError):
        emulator.deny_app_session(second)
    third = create(site).json()["sessionRequestId"]
    with pytest.raises(KeyError):
        emulator.approve_app_session(third, "carol")  # inactive


def test_poll_times_are_recorded(site: ServerThread, emulator: ShotGridEmulator) -> None:
    rid = create(site).json()["sessionRequestId"]
    poll(site, rid)
    poll(site, rid)
    (record,) = emulator.app_session_requests()
    assert record["polls"] == 2
    assert record["poll_times"][0] <= record["poll_times"][1]


def test_admin_routes_for_app_sessions_and_site() -> None:
    emu = ShotGridEmulator.default(admin_routes=True)
    with serve(emu.app) as srv:
        rid = create(srv).json()["sessionRequestId"]
        listed = httpx.get(srv.url + "/_emulator/app_session_requests").json()
        assert [r["appName"] for r in listed] == ["Broker 7Q4K"]
        path = f"{srv.url}/_emulator/app_session_requests/{rid}"
        assert httpx.post(path, json={"action": "approve", "login": "nobody"}).status_code == 400
        assert httpx.post(path, json={"action": "maybe"}).status_code == 400
        assert httpx.post(path, json={"action": "approve", "login": "bob"}).status_code == 204
        assert token_of(srv, rid)["userLogin"] == "bob"
        assert httpx.post(path, json={"action": "deny"}).status_code == 404
        other = create(srv).json()["sessionRequestId"]
        r = httpx.post(f"{srv.url}/_emulator/app_session_requests/{other}", json={"action": "deny"})
        assert r.status_code == 204 and poll(srv, other).status_code == 404
        site_url = srv.url + "/_emulator/site"
        off = {"authentication_app_session_launcher_enabled": False}
        assert httpx.post(site_url, json=off).status_code == 204
        assert create(srv).status_code == 403
        assert (
            httpx.post(
                site_url, json={"authentication_app_session_launcher_enabled": 1}
            ).status_code
            == 400
        )


def test_faults_reach_the_launcher(site: ServerThread, emulator: ShotGridEmulator) -> None:
    emulator.faults.set("asl:poll", status=503, times=1)
    rid = create(site).json()["sessionRequestId"]
    assert poll(site, rid).status_code == 503
    assert poll(site, rid).status_code == 200
