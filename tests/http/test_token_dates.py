"""A token dated in the future (`iat` beyond now plus IAT_LEEWAY_SECONDS) is refused at every
endpoint that reads one back, and one dated within the leeway is accepted everywhere: the
same constant for access tokens (introspection, userinfo, exchange subjects, revocation)
and refresh tokens (the grant, introspection, revocation).

The tokens are re-signed with the broker's own keys (as with a key that leaked, or a
replica whose clock runs ahead), keeping everything but `iat`."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from broker.tokens.claims import IAT_LEEWAY_SECONDS
from tests.support.broker import RunningBroker
from tests.support.services import (
    broker,
    claims_of,
    clock,
    env,
    exchange,
    http,
    introspect,
    is_active,
    login,
    revoke,
)

__all__ = ["broker", "clock", "env", "http"]

pytestmark = pytest.mark.timeout(60)


def redated(running: RunningBroker, token: str, ahead: int) -> str:
    claims = claims_of(token)
    claims["iat"] = int(running.broker.now().timestamp()) + ahead
    keys = running.broker.keys
    if claims["aud"] == running.url:  # a refresh token: MACed with the refresh key
        signed: str = keys.sign_refresh(claims, "rt+jwt")
    else:
        signed = keys.sign(claims, "at+jwt")
    return signed


Reader = Callable[[RunningBroker, httpx.Client, dict[str, str], int], bool]
"""Presents a re-dated token somewhere; True when the broker took it."""


def _introspect_access(b: RunningBroker, h: httpx.Client, t: dict[str, str], ahead: int) -> bool:
    return is_active(h, redated(b, t["access_token"], ahead))


def _introspect_refresh(b: RunningBroker, h: httpx.Client, t: dict[str, str], ahead: int) -> bool:
    return is_active(h, redated(b, t["refresh_token"], ahead))


def _userinfo(b: RunningBroker, h: httpx.Client, t: dict[str, str], ahead: int) -> bool:
    bearer = {"Authorization": f"Bearer {redated(b, t['access_token'], ahead)}"}
    response = h.get("/userinfo", headers=bearer)
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


def _exchange_subject(b: RunningBroker, h: httpx.Client, t: dict[str, str], ahead: int) -> bool:
    response = exchange(h, redated(b, t["access_token"], ahead), audience="review-api")
    assert response.status_code == 200 or response.json()["error"] == "invalid_request"
    return response.status_code == 200


def _refresh_grant(b: RunningBroker, h: httpx.Client, t: dict[str, str], ahead: int) -> bool:
    response = b.refresh(h, redated(b, t["refresh_token"], ahead))
    assert response.status_code == 200 or response.json()["error"] == "invalid_grant"
    return response.status_code == 200


def _revoke_access(b: RunningBroker, h: httpx.Client, t: dict[str, str], ahead: int) -> bool:
    assert revoke(h, redated(b, t["access_token"], ahead)).status_code == 200  # RFC 7009 §2.2
    return not is_active(h, t["access_token"])  # the real token shares its jti


def _revoke_refresh(b: RunningBroker, h: httpx.Client, t: dict[str, str], ahead: int) -> bool:
    assert revoke(h, redated(b, t["refresh_token"], ahead)).status_code == 200
    return not is_active(h, t["refresh_token"])


READERS: dict[str, Reader] = {
    "introspect access": _introspect_access,
    "introspect refresh": _introspect_refresh,
    "userinfo": _userinfo,
    "exchange subject": _exchange_subject,
    "refresh grant": _refresh_grant,
    "revoke access": _revoke_access,
    "revoke refresh": _revoke_refresh,
}


@pytest.mark.parametrize(
    ("ahead", "accepted"),
    [(IAT_LEEWAY_SECONDS, True), (IAT_LEEWAY_SECONDS + 1, False), (30 * 86400, False)],
    ids=["within leeway", "just beyond", "a month ahead"],
)
@pytest.mark.parametrize("reader", list(READERS), ids=list(READERS))
def test_iat_in_the_future(
    broker: RunningBroker, http: httpx.Client, reader: str, ahead: int, accepted: bool
) -> None:
    tokens = login(broker, http, scope="openid profile")
    assert READERS[reader](broker, http, tokens, ahead) is accepted
    if not accepted:  # and the genuine tokens are untouched
        assert is_active(http, tokens["access_token"])
        assert introspect(http, tokens["refresh_token"]).json()["active"] is True
