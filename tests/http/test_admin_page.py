"""The admin page (`/admin`) through real HTTP: a real broker (uvicorn, SQLite), the
emulated ShotGrid deciding who is an administrator by permission group (`frank` is
`Admin`, `alice` and `bob` are `Artist`), people signing in from their own addresses.
Every change needs its confirmation page's CSRF token; refusals are pages, never a 5xx."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest

from shotgrid_emulator import ShotGridEmulator
from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock
from tests.support.flaky_store import broker_on_flaky_store
from tests.support.oidc import Flow, hidden_fields, login_code, query_of, submit_login

pytestmark = pytest.mark.timeout(60)

ADMIN_CLIENT = ("broker-admin", "broker-admin-secret")
RECHECK = 900


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
def site(tmp_path: Path, clock: MovableClock) -> Iterator[tuple[RunningBroker, ShotGridEmulator]]:
    with broker_with_emulator(tmp_path, clock, upstream_recheck=RECHECK) as (broker, emu, _s):
        yield broker, emu


@pytest.fixture
def running(site: tuple[RunningBroker, ShotGridEmulator]) -> RunningBroker:
    return site[0]


@contextmanager
def browser(running: RunningBroker, address: str = "127.0.0.1") -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=running.url,
        transport=httpx.HTTPTransport(local_address=address),
        headers={"User-Agent": f"test-browser/{address}"},
        timeout=10,
    ) as client:
        yield client


def sign_in(http: httpx.Client, login: str, path: str = "/admin") -> httpx.Response:
    """The login page `/admin` shows without a session, submitted: back to `path`."""
    page = http.get(path)
    assert page.status_code == 200 and 'name="username"' in page.text, page.text
    done = submit_login(http, page, login, f"{login}-pw", path="/admin")
    assert done.status_code == 302, done.text
    return done


@pytest.fixture
def frank(running: RunningBroker) -> Iterator[httpx.Client]:
    with browser(running) as http:
        sign_in(http, "frank")
        yield http


def form_token(page: httpx.Response) -> str:
    """The confirmation form's CSRF token (not the sign-out form's)."""
    match = re.search(
        r'<form[^>]*id="confirm-form".*?name="csrf_token" value="([^"]+)"', page.text, re.S
    )
    assert match, page.text
    return unescape(match.group(1))


def error_text(page: httpx.Response) -> str:
    match = re.search(r'id="admin-error"[^>]*>(.*?)</div>', page.text, re.S)
    assert match, page.text
    return unescape(re.sub(r"<[^>]+>", "", match.group(1))).strip()


def sids_shown(page: httpx.Response) -> list[str]:
    return re.findall(r'<tr data-sid="([^"]+)"', page.text)


def alice_tokens(running: RunningBroker, address: str = "127.0.0.2") -> dict[str, Any]:
    with browser(running, address) as person:
        response = running.password_grant(person, "alice")
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def refresh(running: RunningBroker, token: str) -> httpx.Response:
    with browser(running, "127.0.0.2") as person:
        return running.refresh(person, token)


def admin_events(running: RunningBroker, action: str) -> list[dict[str, Any]]:
    """The audit trail's admin events for `action`, read through the admin API."""
    with running.client() as http:
        token = http.post(
            "/token",
            data={"grant_type": "client_credentials", "scope": "admin"},
            auth=ADMIN_CLIENT,
        ).json()["access_token"]
        events = http.get(
            "/admin/api/audit",
            params={"event": "admin", "limit": 100},
            headers={"Authorization": f"Bearer {token}"},
        ).json()["events"]
    return [e for e in events if e.get("action") == action]


def counted(running: RunningBroker, action: str, outcome: str = "success") -> float:
    with running.client() as http:
        text = http.get("/metrics").text
    line = f'broker_admin_actions_total{{action="{action}",outcome="{outcome}"}} '
    found = [float(row[len(line) :]) for row in text.splitlines() if row.startswith(line)]
    return found[0] if found else 0.0


# --- signing in and who may ------------------------------------------------------------------
def test_without_a_session_the_login_page_then_back_to_the_search(running: RunningBroker) -> None:
    with browser(running) as http:
        page = http.get("/admin", params={"login": "alice"})
        assert page.status_code == 200
        assert 'name="username"' in page.text and 'id="sessions-title"' not in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for path in ("/admin/clients", "/admin/keys", "/admin/users/alice/unlock"):
            assert 'name="username"' in http.get(path).text
        fields = hidden_fields(page.text)
        done = http.post("/admin", data={**fields, "username": "frank", "password": "frank-pw"})
        assert done.status_code == 302
        assert done.headers["location"] == f"{running.url}/admin?login=alice"
        found = http.get(done.headers["location"])
        assert found.status_code == 200 and 'id="person-login">alice<' in found.text
        assert 'id="admin-name">Frank Admin<' in found.text


def test_a_wrong_password_stays_on_the_login_page(running: RunningBroker) -> None:
    with browser(running) as http:
        page = http.get("/admin")
        again = submit_login(http, page, "frank", "wrong", path="/admin")
        assert again.status_code in (200, 401) and 'name="username"' in again.text
        assert (
            http.get("/admin/keys").status_code == 200
            and 'id="keys"' not in http.get("/admin/keys").text
        )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin"),
        ("GET", "/admin?login=bob"),
        ("GET", "/admin/clients"),
        ("GET", "/admin/keys"),
        ("GET", "/admin/users/bob/unlock"),
        ("GET", "/admin/keys/rotate"),
        ("POST", "/admin/keys/rotate"),
    ],
)
def test_an_artist_gets_403(running: RunningBroker, method: str, path: str) -> None:
    with browser(running) as http:
        sign_in(http, "alice")
        page = http.request(method, path, data={"csrf_token": "x"} if method == "POST" else None)
        assert page.status_code == 403
        assert "(Artist)" in error_text(page)
        assert 'id="sessions"' not in page.text and 'id="keys"' not in page.text


def test_the_permission_group_is_read_again_after_the_recheck_period(
    site: tuple[RunningBroker, ShotGridEmulator], frank: httpx.Client, clock: MovableClock
) -> None:
    _running, emu = site
    assert frank.get("/admin/keys").status_code == 200
    emu.set_permission_group("frank", "Artist")
    clock.advance(RECHECK - 1)
    assert frank.get("/admin/keys").status_code == 200  # remembered within the period
    clock.advance(2)
    assert frank.get("/admin/keys").status_code == 403  # read again: no longer Admin
    emu.set_permission_group("frank", "Admin")
    clock.advance(RECHECK + 1)
    assert frank.get("/admin/keys").status_code == 200


def test_the_groups_setting_decides(tmp_path: Path, clock: MovableClock) -> None:
    with (
        broker_with_emulator(tmp_path, clock, admin_permission_groups="Artist, Manager") as (
            running,
            _emu,
            _site,
        ),
        browser(running) as alice,
        browser(running) as frank,
    ):
        sign_in(alice, "alice")
        sign_in(frank, "frank")
        assert alice.get("/admin/keys").status_code == 200
        assert frank.get("/admin/keys").status_code == 403


# --- people: find, end, unlock ---------------------------------------------------------------
def test_unknown_and_bad_logins_are_pages_beside_the_search(frank: httpx.Client) -> None:
    ghost = frank.get("/admin", params={"login": "ghost"})
    assert ghost.status_code == 404 and "ghost" in error_text(ghost)
    assert 'id="login"' in ghost.text  # the search is still there
    long = frank.get("/admin", params={"login": "x" * 300})
    assert long.status_code == 400 and error_text(long)
    for path in (
        "/admin/users/ghost/unlock",
        "/admin/users/ghost/end-sessions",
        "/admin/sessions/no-such-sid/end",
        f"/admin/sessions/{'s' * 500}/end",
    ):
        page = frank.get(path)
        assert page.status_code == 404, (path, page.text)
        assert error_text(page) and 'id="confirm-form"' not in page.text


def test_odd_input_is_never_a_5xx(frank: httpx.Client) -> None:
    for method, path, data in [
        ("GET", "/admin?login=%00", None),
        ("GET", "/admin?login=a&login=b", None),
        ("GET", "/admin/users/%20/unlock", None),
        ("GET", "/admin?done=%3Cscript%3E", None),
        ("POST", "/admin/users/alice/unlock", {"csrf_token": "a" * 5000}),
        ("POST", "/admin/users/alice/unlock", {"csrf_token": ["a", "b"]}),
        ("POST", "/admin/sessions/%FF/end", {"csrf_token": "x"}),
        ("DELETE", "/admin", None),
    ]:
        page = frank.request(method, path, data=data)
        assert page.status_code < 500, (method, path, page.status_code, page.text)
        assert "<script" not in page.text


def test_end_one_session_after_confirmation_with_its_token(
    running: RunningBroker, frank: httpx.Client
) -> None:
    first, second = alice_tokens(running), alice_tokens(running, "127.0.0.3")
    listing = frank.get("/admin", params={"login": "alice"})
    assert listing.status_code == 200
    shown = sids_shown(listing)
    assert len(shown) == 2 and "127.0.0.2" in listing.text and "127.0.0.3" in listing.text
    ended = shown[0]

    confirm = frank.get(f"/admin/sessions/{ended}/end")
    assert confirm.status_code == 200 and 'id="confirm-form"' in confirm.text
    assert sorted(sids_shown(frank.get("/admin", params={"login": "alice"}))) == sorted(shown)

    # no token, a made-up one, and one bound to another action: refused, nothing ended
    assert frank.post(f"/admin/sessions/{ended}/end").status_code in (400, 403)
    assert frank.post(f"/admin/sessions/{ended}/end", data={"csrf_token": "1.x"}).status_code == 403
    other = form_token(frank.get("/admin/users/alice/unlock"))
    assert frank.post(f"/admin/sessions/{ended}/end", data={"csrf_token": other}).status_code == 403
    assert sorted(sids_shown(frank.get("/admin", params={"login": "alice"}))) == sorted(shown)

    done = frank.post(f"/admin/sessions/{ended}/end", data={"csrf_token": form_token(confirm)})
    assert done.status_code == 303
    assert query_of(done.headers["location"]) == {"login": "alice", "done": "session_end"}
    after = frank.get(done.headers["location"])
    assert 'id="admin-notice"' in after.text
    assert sids_shown(after) == [sid for sid in shown if sid != ended]

    results = [refresh(running, t["refresh_token"]) for t in (first, second)]
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 400]
    refused = next(r for r in results if r.status_code == 400)
    assert refused.json()["error"] == "invalid_grant"
    events = admin_events(running, "session_end")
    assert events and events[-1]["admin"] == "user:frank" and events[-1]["outcome"] == "success"


def test_a_token_from_another_browser_is_refused(
    running: RunningBroker, frank: httpx.Client
) -> None:
    alice_tokens(running)
    token = form_token(frank.get("/admin/users/alice/end-sessions"))
    with browser(running) as other:
        sign_in(other, "frank")
        refused = other.post("/admin/users/alice/end-sessions", data={"csrf_token": token})
        assert refused.status_code == 403
    assert len(sids_shown(frank.get("/admin", params={"login": "alice"}))) == 1


def test_end_every_session(running: RunningBroker, frank: httpx.Client) -> None:
    tokens = [alice_tokens(running), alice_tokens(running, "127.0.0.3")]
    before = counted(running, "sessions_end_all")
    confirm = frank.get("/admin/users/alice/end-sessions")
    assert confirm.status_code == 200 and confirm.text.count("<li>") >= 2
    done = frank.post("/admin/users/alice/end-sessions", data={"csrf_token": form_token(confirm)})
    assert done.status_code == 303
    assert sids_shown(frank.get(done.headers["location"])) == []
    for t in tokens:
        assert refresh(running, t["refresh_token"]).json()["error"] == "invalid_grant"
    assert counted(running, "sessions_end_all") == before + 1
    nothing = frank.get("/admin/users/alice/end-sessions")
    assert nothing.status_code == 200 and 'id="confirm-nothing"' in nothing.text
    assert 'id="confirm-form"' not in nothing.text


def test_unlock_after_five_failures(running: RunningBroker, frank: httpx.Client) -> None:
    with browser(running, "127.0.0.2") as person:
        for _ in range(5):
            assert (
                running.password_grant(person, "alice", "wrong").json()["error"] == "invalid_grant"
            )
        assert running.password_grant(person, "alice").status_code == 429
        confirm = frank.get("/admin/users/alice/unlock")
        assert confirm.status_code == 200
        assert running.password_grant(person, "alice").status_code == 429  # a GET changes nothing
        done = frank.post("/admin/users/alice/unlock", data={"csrf_token": form_token(confirm)})
        assert done.status_code == 303
        assert query_of(done.headers["location"])["done"] == "user_unlock"
        assert running.password_grant(person, "alice").status_code == 200
    events = admin_events(running, "user_unlock")
    assert events and events[-1]["admin"] == "user:frank"


# --- clients and keys ------------------------------------------------------------------------
def test_clients_are_listed_without_secrets(running: RunningBroker, frank: httpx.Client) -> None:
    page = frank.get("/admin/clients")
    assert page.status_code == 200
    listed = re.findall(r'<tr data-client-id="([^"]+)"', page.text)
    assert {"dna-cli", "dna-frontend", "broker-admin"} <= set(listed)
    assert "broker-admin-secret" not in page.text and "secret_hash" not in page.text


def test_rotate_keys_after_confirmation(running: RunningBroker, frank: httpx.Client) -> None:
    def states() -> dict[str, str]:
        return dict(
            re.findall(
                r'<tr data-kid="([^"]+)" data-state="([^"]+)"', frank.get("/admin/keys").text
            )
        )

    before = states()
    confirm = frank.get("/admin/keys/rotate")
    assert confirm.status_code == 200 and states() == before
    assert frank.post("/admin/keys/rotate", data={"csrf_token": "0.bad"}).status_code == 403
    assert states() == before
    done = frank.post("/admin/keys/rotate", data={"csrf_token": form_token(confirm)})
    assert done.status_code == 303 and done.headers["location"].endswith(
        "/admin/keys?done=keys_rotate"
    )
    after = states()
    assert after != before
    current_before = {k for k, s in before.items() if s == "current"}
    assert all(after[k] == "retired" for k in current_before)
    assert admin_events(running, "keys_rotate")[-1]["admin"] == "user:frank"


# --- SSO, outages and the rate limit ---------------------------------------------------------
def test_a_browser_signed_in_to_the_broker_goes_straight_in(running: RunningBroker) -> None:
    with browser(running) as http:
        login_code(http, Flow(), "frank")  # signed in at /authorize for dna-frontend
        page = http.get("/admin/keys")
        assert page.status_code == 200 and 'id="keys"' in page.text
        assert 'name="username"' not in page.text


def test_shotgrid_unreachable_when_the_group_is_due_is_503_never_a_stale_yes(
    site: tuple[RunningBroker, ShotGridEmulator], frank: httpx.Client, clock: MovableClock
) -> None:
    _running, emu = site
    assert frank.get("/admin/keys").status_code == 200
    emu.faults.set("/api", status=503)
    try:
        assert frank.get("/admin/keys").status_code == 200  # the answer is still fresh
        clock.advance(RECHECK + 1)
        page = frank.get("/admin/keys")
        assert page.status_code == 503 and int(page.headers["retry-after"]) > 0
        assert 'id="keys"' not in page.text and error_text(page)
    finally:
        emu.faults.clear()
    assert frank.get("/admin/keys").status_code == 200


def test_store_down_is_a_503_page(tmp_path: Path, clock: MovableClock) -> None:
    with (
        broker_on_flaky_store(tmp_path, clock) as b,
        httpx.Client(base_url=b.url, timeout=10) as http,
    ):
        store = b.store
        sign_in(http, "frank")
        confirm = http.get("/admin/keys/rotate")
        store.down = True
        for method, path, data in [
            ("GET", "/admin?login=alice", None),
            ("GET", "/admin/keys", None),
            ("POST", "/admin/keys/rotate", {"csrf_token": form_token(confirm)}),
        ]:
            page = http.request(method, path, data=data)
            assert page.status_code == 503, (path, page.text)
            assert int(page.headers["retry-after"]) > 0
        store.down = False
        assert http.get("/admin/keys").status_code == 200


def test_the_rate_limit_is_a_429_page(tmp_path: Path, clock: MovableClock) -> None:
    with (
        broker_with_emulator(tmp_path, clock, admin_rate_limit=3) as (running, _emu, _site),
        browser(running) as http,
    ):
        sign_in(http, "frank")
        statuses = [http.get("/admin/keys").status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        page = http.get("/admin/clients")
        assert page.status_code == 429 and int(page.headers["retry-after"]) > 0
        clock.advance(61)
        assert http.get("/admin/keys").status_code == 200
