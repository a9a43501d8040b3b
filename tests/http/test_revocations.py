"""`GET /revocations`, the revocation feed (REVOCATION_FORMATS.md), against a real broker:
what each kind of revocation puts on it, the cursor, the signed form, ETag/304, the
one-read-per-second cache, and the store being down."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from broker.tokens.revocation_feed import entry_lifetime
from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock
from tests.support.flaky_store import FlakyStore
from tests.support.oidc import Flow, clock, http, login_code, running
from tests.support.services import BACKEND, claims_of, exchange, header_of, login, revoke

__all__ = ["clock", "http", "running"]  # the shared fixtures, used by name


class FrozenMonotonic:
    """The feed cache's clock, moved by the test (no waiting for a second to pass)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def expire(self) -> None:
        self.now += 1.0


@pytest.fixture
def cache_clock(running: RunningBroker) -> FrozenMonotonic:
    frozen = FrozenMonotonic()
    running.broker.feed._monotonic = frozen
    return frozen


def feed(http: httpx.Client, **params: str) -> dict[str, Any]:
    response = http.get("/revocations", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


def kinds(body: dict[str, Any]) -> set[tuple[str, str]]:
    return {(k, v) for entry in body["entries"] for k, v in entry.items() if k != "exp"}


def test_discovery_advertises_the_feed_and_backchannel_logout(
    running: RunningBroker, http: httpx.Client
) -> None:
    for path in ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"):
        meta = http.get(path).json()
        assert meta["revocation_feed_endpoint"] == f"{running.url}/revocations"
        assert meta["backchannel_logout_supported"] is True
        assert meta["backchannel_logout_session_supported"] is True


def test_empty_feed(running: RunningBroker, http: httpx.Client, clock: MovableClock) -> None:
    response = http.get("/revocations")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=1"
    assert response.headers["etag"].startswith('W/"')
    body = response.json()
    assert body == {
        "iss": running.url,
        "iat": int(clock.now.timestamp()),
        "cursor": body["cursor"],
        "full": True,
        "entries": [],
    }
    assert body["cursor"].isdigit()


def test_each_revocation_lands_on_the_feed(
    running: RunningBroker, http: httpx.Client, clock: MovableClock, cache_clock: FrozenMonotonic
) -> None:
    ttl = running.settings.access_token_ttl
    lifetime = entry_lifetime(ttl).total_seconds()
    first = login(running, http)
    revoked_at = clock.now.timestamp()
    assert revoke(http, first["refresh_token"]).status_code == 200
    second = login(running, http)
    assert revoke(http, second["access_token"]).status_code == 200
    third = login(running, http, scope="openid")
    sid = claims_of(third["access_token"])["sid"]
    assert running.broker.sessions.end_session(sid, "logout")
    cache_clock.expire()
    body = feed(http)
    fam = claims_of(first["access_token"])["fam"]
    jti = claims_of(second["access_token"])["jti"]
    assert body["full"] is True
    assert body["entries"] == [
        {"fam": fam, "exp": math.ceil(revoked_at + lifetime)},
        {"jti": jti, "exp": claims_of(second["access_token"])["exp"]},
        {"sid": sid, "exp": math.ceil(revoked_at + lifetime)},
    ]
    # Each access token names what revoked it.
    assert claims_of(first["access_token"])["sid"] != sid
    assert claims_of(third["access_token"])["sid"] == sid


def test_cursor_gives_increments_and_expired_entries_leave(
    running: RunningBroker, http: httpx.Client, clock: MovableClock, cache_clock: FrozenMonotonic
) -> None:
    one = login(running, http)
    revoke(http, one["refresh_token"])
    cache_clock.expire()
    full = feed(http)
    assert full["full"] is True and len(full["entries"]) == 1
    # Nothing new: the cursor stays put, and the overlap repeats the recent entry.
    cache_clock.expire()
    same = feed(http, since=full["cursor"])
    assert same["full"] is False and same["cursor"] == full["cursor"]
    # Later, something new: it comes (with the old entry again while its creation is
    # within the overlap before the client's cursor), and the cursor moves past it.
    clock.advance(120)
    two = login(running, http)
    revoke(http, two["access_token"])
    jti = ("jti", claims_of(two["access_token"])["jti"])
    cache_clock.expire()
    step = feed(http, since=full["cursor"])
    assert step["full"] is False and jti in kinds(step)
    assert int(step["cursor"]) > int(full["cursor"])
    assert kinds(feed(http, since=step["cursor"])) == {jti}  # only what is new to it
    # Past every entry's life: nothing is served, and an old cursor gets a full page.
    clock.advance(entry_lifetime(running.settings.access_token_ttl).total_seconds() + 1)
    cache_clock.expire()
    late = feed(http, since=full["cursor"])
    assert late == {**late, "full": True, "entries": []}


@pytest.mark.parametrize("since", ["", "abc", "-5", "1" * 40, "99999999999999"])
def test_unusable_cursor_gives_a_full_page(
    running: RunningBroker, http: httpx.Client, since: str
) -> None:
    body = feed(http, since=since)
    assert body["full"] is True


def test_etag_and_304(
    running: RunningBroker, http: httpx.Client, cache_clock: FrozenMonotonic
) -> None:
    body = http.get("/revocations")
    cursor, etag = body.json()["cursor"], body.headers["etag"]
    incremental = http.get("/revocations", params={"since": cursor})
    assert incremental.headers["etag"] != etag  # another page (full: false)
    tag = incremental.headers["etag"]
    cache_clock.expire()  # a new store read, the same content: the same validator
    again = http.get("/revocations", params={"since": cursor}, headers={"If-None-Match": tag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == tag and again.headers["cache-control"] == "public, max-age=1"
    other = http.get("/revocations", params={"since": cursor}, headers={"If-None-Match": '"x"'})
    assert other.status_code == 200
    # A revocation changes the content, so the old validator no longer matches.
    token = login(running, http)["access_token"]
    revoke(http, token)
    cache_clock.expire()
    changed = http.get("/revocations", params={"since": cursor}, headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["etag"] != tag


def test_signed_form(running: RunningBroker, http: httpx.Client, clock: MovableClock) -> None:
    token = login(running, http)["access_token"]
    revoke(http, token)
    plain = feed(http)
    response = http.get("/revocations", headers={"Accept": "application/jwt"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/jwt"
    assert response.headers["etag"] != http.get("/revocations").headers["etag"]
    signed = response.text
    header = header_of(signed)
    assert header["typ"] == "revocations+jwt" and header["alg"] == "RS256"
    assert header["kid"] == header_of(token)["kid"]  # the current access-token key
    jwks = jwt.PyJWKSet.from_dict(http.get("/jwks.json").json())
    key = next(k for k in jwks.keys if k.key_id == header["kid"])
    claims = jwt.decode(
        signed, key.key, algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False}
    )
    assert claims == {**plain, "exp": plain["iat"] + 60}


@pytest.mark.parametrize(
    ("accept", "signed"),
    [
        (None, False),
        ("*/*", False),
        ("application/json", False),
        ("application/jwt", True),
        ("application/json;q=0.5, application/jwt", True),
        ("application/jwt;q=0.2, application/json", False),
        ("application/jwt;q=0", False),
        ("text/html", False),
    ],
)
def test_content_negotiation(http: httpx.Client, accept: str | None, signed: bool) -> None:
    headers = {"Accept": accept} if accept is not None else {}
    response = http.get("/revocations", headers=headers)
    assert response.status_code == 200
    expected = "application/jwt" if signed else "application/json"
    assert response.headers["content-type"] == expected
    assert response.headers["vary"] == "Accept"


def test_one_store_read_and_rendering_per_second(
    running: RunningBroker, http: httpx.Client, cache_clock: FrozenMonotonic
) -> None:
    feed_part = running.broker.feed
    http.get("/revocations")
    reads, renderings = feed_part.store_reads, feed_part.renderings
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: httpx.get(f"{running.url}/revocations"), range(32)))
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1
    assert (feed_part.store_reads, feed_part.renderings) == (reads, renderings)
    cache_clock.expire()
    cache_clock.now += 0.5
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: httpx.get(f"{running.url}/revocations"), range(32)))
    assert (feed_part.store_reads, feed_part.renderings) == (reads + 1, renderings + 1)


def test_store_down_is_503(tmp_path: Path, clock: MovableClock) -> None:
    store = FlakyStore(f"sqlite:///{tmp_path / 'flaky.db'}")
    with broker_with_emulator(tmp_path, clock, app_options={"store": store}) as (broker, _, _):
        store.down = True
        response = httpx.get(f"{broker.url}/revocations")
        assert response.status_code == 503
        assert response.json()["error"] == "temporarily_unavailable"
        assert response.headers["retry-after"] == "5"
        assert response.headers["cache-control"] == "no-store"
        store.down = False
        assert httpx.get(f"{broker.url}/revocations").status_code == 200


def test_every_grant_names_what_the_feed_matches(
    running: RunningBroker, http: httpx.Client
) -> None:
    """REVOCATION_FORMATS.md, "Access-token claims the validator matches": `sid` on every
    user token, `fam` on tokens from a refresh family (exchanged ones keep their
    subject's), `jti` always; client-credentials tokens only `jti`."""

    password = login(running, http)
    refreshed = running.refresh(http, password["refresh_token"]).json()
    flow = Flow()
    code = flow.redeem(http, login_code(http, flow)).json()
    exchanged = exchange(http, password["access_token"], audience="review-api").json()
    service = http.post("/token", data={"grant_type": "client_credentials"}, auth=BACKEND).json()
    fam = claims_of(password["access_token"])["fam"]
    for body in (password, refreshed, code, exchanged):
        claims = claims_of(body["access_token"])
        assert claims["sid"] and claims["fam"] and claims["jti"]
    assert claims_of(refreshed["access_token"])["fam"] == fam
    assert claims_of(exchanged["access_token"])["fam"] == fam
    assert claims_of(exchanged["access_token"])["sid"] == claims_of(password["access_token"])["sid"]
    only = claims_of(service["access_token"])
    assert only["jti"] and "sid" not in only and "fam" not in only


def test_no_access_token_outlives_the_feed_entry_bound(
    running: RunningBroker, http: httpx.Client
) -> None:
    """The bound a sid/fam entry's life rests on: every access token expires within the
    access-token lifetime of its issue, exchanged ones too, whatever a client's
    max_exchange_lifetime says."""

    record = running.broker.store.get_client("dna-backend")
    assert record is not None
    running.broker.store.put_client(dataclasses.replace(record, max_exchange_lifetime=30 * 86400))
    subject = login(running, http)["access_token"]
    exchanged = claims_of(exchange(http, subject, audience="review-api").json()["access_token"])
    assert exchanged["exp"] - exchanged["iat"] <= running.settings.access_token_ttl
