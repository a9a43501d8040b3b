"""Token revocation (RFC 7009) at `/revoke` against a real broker + emulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shotgrid_emulator import ShotGridEmulator
from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock
from tests.support.services import (
    BACKEND,
    broker,
    clock,
    env,
    exchange,
    http,
    is_active,
    login,
    revoke,
)

__all__ = ["broker", "clock", "env", "http"]

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("hint", [None, "refresh_token", "access_token"])
def test_refresh_token_revokes_its_family(
    broker: RunningBroker, http: httpx.Client, hint: str | None
) -> None:
    tokens = login(broker, http)
    extra = {"token_type_hint": hint} if hint else {}
    response = revoke(http, tokens["refresh_token"], **extra)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    refreshed = broker.refresh(http, tokens["refresh_token"])
    assert refreshed.json()["error"] == "invalid_grant"
    # The access token of the family is inactive for the broker too (offline validators
    # still accept it until exp).
    assert not is_active(http, tokens["access_token"])


def test_revoking_a_rotated_token_revokes_the_successor(
    broker: RunningBroker, http: httpx.Client
) -> None:
    first = login(broker, http)
    second = broker.refresh(http, first["refresh_token"]).json()
    assert revoke(http, first["refresh_token"]).status_code == 200
    assert broker.refresh(http, second["refresh_token"]).json()["error"] == "invalid_grant"
    assert not is_active(http, second["access_token"])


@pytest.mark.parametrize("hint", [None, "access_token", "refresh_token"])
def test_access_token_is_denylisted_family_untouched(
    broker: RunningBroker, http: httpx.Client, hint: str | None
) -> None:
    tokens = login(broker, http)
    extra = {"token_type_hint": hint} if hint else {}
    assert revoke(http, tokens["access_token"], **extra).status_code == 200
    assert not is_active(http, tokens["access_token"])
    refreshed = broker.refresh(http, tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert is_active(http, refreshed.json()["access_token"])


def test_client_credentials_token_revoked_by_its_confidential_client(
    http: httpx.Client,
) -> None:
    token = http.post("/token", data={"grant_type": "client_credentials"}, auth=BACKEND).json()[
        "access_token"
    ]
    assert revoke(http, token, auth=BACKEND).status_code == 200
    assert not is_active(http, token)


def test_exchanged_token_revoked_by_the_exchanging_client(
    broker: RunningBroker, http: httpx.Client
) -> None:
    tokens = login(broker, http)
    exchanged = exchange(http, tokens["access_token"], audience="review-api").json()
    assert revoke(http, exchanged["access_token"], auth=BACKEND).status_code == 200
    assert not is_active(http, exchanged["access_token"])
    assert is_active(http, tokens["access_token"])


@pytest.mark.parametrize("kind", ["access_token", "refresh_token"])
@pytest.mark.parametrize(
    ("client_id", "auth"),
    [("review-tool", None), ("dna-frontend", None), ("", BACKEND)],
    ids=["public-review-tool", "public-dna-frontend", "confidential-dna-backend"],
)
def test_foreign_client_is_refused_and_nothing_is_revoked(
    broker: RunningBroker,
    http: httpx.Client,
    kind: str,
    client_id: str,
    auth: tuple[str, str] | None,
) -> None:
    tokens = login(broker, http)
    response = revoke(http, tokens[kind], client_id=client_id, auth=auth)
    # RFC 7009 §2.1: the request is refused; Authlib (and we) answer invalid_grant.
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert is_active(http, tokens["access_token"])
    assert is_active(http, tokens["refresh_token"])


@pytest.mark.parametrize(
    ("data", "auth", "status", "error"),
    [
        ({"client_id": "dna-cli"}, None, 400, "invalid_request"),  # no token
        (
            {"client_id": "dna-cli", "token": "x", "token_type_hint": "id_token"},
            None,
            400,
            "unsupported_token_type",
        ),
        ({"token": "x"}, None, 401, "invalid_client"),  # no client at all
        ({"token": "x", "client_id": "nobody"}, None, 401, "invalid_client"),
        ({"token": "x", "client_id": "dna-backend"}, None, 401, "invalid_client"),  # no secret
        ({"token": "x"}, ("dna-backend", "wrong"), 401, "invalid_client"),
    ],
)
def test_request_errors(
    http: httpx.Client,
    data: dict[str, str],
    auth: tuple[str, str] | None,
    status: int,
    error: str,
) -> None:
    response = http.post("/revoke", data=data, auth=auth)
    assert response.status_code == status, response.text
    assert response.json()["error"] == error


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "", "eyJhbGciOiJub25lIn0.e30.", "x" * 9000],
)
def test_unknown_tokens_answer_200(http: httpx.Client, token: str) -> None:
    response = revoke(http, token)
    assert response.status_code == 200, response.text


def test_revoking_twice_is_fine(broker: RunningBroker, http: httpx.Client) -> None:
    tokens = login(broker, http)
    assert revoke(http, tokens["refresh_token"]).status_code == 200
    assert revoke(http, tokens["refresh_token"]).status_code == 200
    assert revoke(http, tokens["access_token"]).status_code == 200


@pytest.fixture
def custody(
    tmp_path: Path, clock: MovableClock
) -> Iterator[tuple[RunningBroker, ShotGridEmulator]]:
    with broker_with_emulator(tmp_path, clock, upstream_strategy="custody") as (r, emu, _s):
        yield r, emu


def test_last_family_of_a_session_drops_the_kept_shotgrid_tokens(
    custody: tuple[RunningBroker, ShotGridEmulator],
) -> None:
    running, _emu = custody
    core = running.broker
    with running.client() as http:
        tokens = login(running, http)
        rt_claims = core.keys.verify(tokens["refresh_token"], use="rt", typ="rt+jwt")
        family = core.store.get_family(rt_claims["fam"])
        session = core.store.get_session(family.sid)
        key = f"session:{session.sid}"
        assert core.store.get_upstream_tokens(key) is not None
        # A second family under the same session (as a browser SSO login would start).
        second, first_record = core.sessions.start_family(session, "dna-cli", "profile")
        second_rt = core.minter.refresh_token(first_record, second, session)
        assert revoke(http, tokens["refresh_token"]).status_code == 200
        assert core.store.get_upstream_tokens(key) is not None  # another family still lives
        assert revoke(http, second_rt).status_code == 200
        assert core.store.get_upstream_tokens(key) is None
