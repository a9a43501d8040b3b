"""The logs of a full run hold the audit trail and not one secret.

A real broker (custody strategy, so ShotGrid tokens flow through it) and the emulator run a
password grant, refreshes within and past the reuse grace, a wrong password, a confidential
client authenticating with its secret, a browser login (wrong password on the login page,
then the code flow with PKCE) and a key rotation, with logging at debug level in JSON.
Every secret the run used is then searched for in the captured text.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.logs import configure_logging, unconfigure_logging
from tests.support.broker import broker_with_emulator, new_kek
from tests.support.clock import MovableClock
from tests.support.oidc import Flow, login_code, submit_login

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    configure_logging("debug", "json", stream=buffer)
    try:
        yield buffer
    finally:
        unconfigure_logging()


def parse_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is one JSON object


def test_full_run_logs_audit_trail_and_no_secret(tmp_path: Path, log_buffer: io.StringIO) -> None:
    clock = MovableClock()
    kek = new_kek()
    secrets: dict[str, str] = {
        "alice password": "alice-pw",
        "wrong password": "not-alices-password-123",
        "bob password": "bob-pw",
        "wrong browser password": "not-bobs-password-456",
        "client secret": "dna-backend-secret",
        "key-encryption key": kek,
        "script key": "token-broker-key",
    }
    with broker_with_emulator(
        tmp_path,
        clock,
        secret_key=kek,
        upstream_strategy="custody",
        log_format="json",
        log_level="debug",
    ) as (running, emu, _site):
        issued: list[dict[str, Any]] = []
        original_issue = emu.site.issue

        def recording_issue(*args: Any, **kwargs: Any) -> dict[str, Any]:
            body: dict[str, Any] = original_issue(*args, **kwargs)
            issued.append(body)
            return body

        emu.site.issue = recording_issue  # type: ignore[method-assign]
        with running.client() as http:
            ok = running.password_grant(http, headers={})  # type: ignore[arg-type]
            assert ok.status_code == 200, ok.text
            first = ok.json()
            secrets["access token"] = first["access_token"]
            secrets["refresh token"] = first["refresh_token"]

            rotated = running.refresh(http, first["refresh_token"])
            assert rotated.status_code == 200
            second = rotated.json()
            secrets["access token 2"] = second["access_token"]
            secrets["refresh token 2"] = second["refresh_token"]

            clock.advance(running.settings.refresh_reuse_grace + 1)
            reuse = running.refresh(http, first["refresh_token"])
            assert reuse.json()["error"] == "invalid_grant"

            wrong = http.post(
                "/token",
                data={
                    "grant_type": "password",
                    "client_id": "dna-cli",
                    "username": "alice",
                    "password": secrets["wrong password"],
                },
                headers={"X-Request-ID": "scan-wrong-password"},
            )
            assert wrong.json()["error"] == "invalid_grant"
            assert wrong.headers["x-request-id"] == "scan-wrong-password"

            basic = base64.b64encode(b"dna-backend:dna-backend-secret").decode()
            backend = http.post(
                "/token",
                data={"grant_type": "client_credentials"},
                headers={"Authorization": f"Basic {basic}"},
            )
            assert backend.status_code == 200, backend.text
            secrets["basic credentials"] = basic
            secrets["client credentials token"] = backend.json()["access_token"]

            # Services: token exchange (a broker audience, then a ShotGrid token acting as
            # alice), introspection and revocation, all authenticated with the secret.
            fresh = running.password_grant(http).json()  # the reuse above revoked `second`
            secrets["access token 3"] = fresh["access_token"]
            secrets["refresh token 3"] = fresh["refresh_token"]
            exchange = {
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": fresh["access_token"],
                "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
            }
            auth = {"Authorization": f"Basic {basic}"}
            review = http.post("/token", data={**exchange, "audience": "review-api"}, headers=auth)
            assert review.status_code == 200, review.text
            secrets["exchanged token"] = review.json()["access_token"]
            sg = http.post(
                "/token",
                data={
                    **exchange,
                    "requested_token_type": "urn:shotgrid:params:oauth:token-type:access_token",
                },
                headers=auth,
            )
            assert sg.status_code == 200, sg.text
            secrets["exchanged ShotGrid token"] = sg.json()["access_token"]
            introspected = http.post(
                "/introspect", data={"token": fresh["access_token"]}, headers=auth
            )
            assert introspected.json()["active"] is True
            revoked = http.post(
                "/revoke", data={"token": fresh["refresh_token"], "client_id": "dna-cli"}
            )
            assert revoked.status_code == 200

            # Browser login: a wrong password on the login page, then a code flow.
            flow = Flow()
            page = http.get("/authorize", params=flow.params())
            refused = submit_login(http, page, "bob", secrets["wrong browser password"])
            assert refused.status_code == 200 and "password" in refused.text
            code = login_code(http, flow, "bob")
            secrets["authorization code"] = code
            secrets["pkce verifier"] = flow.verifier
            redeemed = flow.redeem(http, code)
            assert redeemed.status_code == 200, redeemed.text
            browser = redeemed.json()
            secrets["browser access token"] = browser["access_token"]
            secrets["browser refresh token"] = browser["refresh_token"]
            secrets["id token"] = browser["id_token"]
            for name, value in http.cookies.items():
                secrets[f"cookie {name}"] = value

            running.broker.keys.rotate()
        for n, body in enumerate(issued):
            secrets[f"upstream access token {n}"] = body["access_token"]
            secrets[f"upstream refresh token {n}"] = body["refresh_token"]
        assert issued, "the run must have fetched ShotGrid tokens"

    text = log_buffer.getvalue()
    leaked = [name for name, value in secrets.items() if value in text]
    assert not leaked, f"secrets found in the logs: {leaked}"

    lines = parse_lines(text)
    audits = [line for line in lines if line.get("audit")]
    events = {(a["event"], a["outcome"]) for a in audits}
    assert ("login", "success") in events
    assert ("login", "failure") in events
    assert ("refresh", "rotated") in events
    assert ("refresh_reuse_detected", "revoked") in events
    assert ("key_rotated", "success") in events
    assert ("token_exchange", "success") in events
    assert ("token_exchange_shotgrid", "success") in events
    assert ("revoke", "success") in events
    assert ("login", "failure") in events
    assert sum(1 for e in audits if e["event"] == "login" and e.get("user_id") == 102) == 1
    for audit in audits:
        if audit["event"] in ("login", "refresh", "refresh_reuse_detected"):
            assert audit["client_id"] in ("dna-cli", "dna-frontend")
            assert audit["ip"] == "127.0.0.1"
            assert audit["request_id"]
        if audit["event"] in ("refresh", "refresh_reuse_detected") or (
            audit["event"] == "login" and audit["outcome"] == "success"
        ):
            expected = 101 if audit["client_id"] == "dna-cli" else 102
            assert audit["user_id"] == expected
    failure = next(a for a in audits if a["event"] == "login" and a["outcome"] == "failure")
    assert failure["request_id"] == "scan-wrong-password"
    # Every line of that request, the access line included, carries its id.
    access = [
        line
        for line in lines
        if line.get("event") == "http_request" and line.get("request_id") == "scan-wrong-password"
    ]
    assert len(access) == 1
    assert access[0]["status"] == 400
    assert access[0]["grant_type"] == "password"
    assert access[0]["outcome"] == "invalid_grant"


def test_sign_in_ways_log_no_secret(tmp_path: Path, log_buffer: io.StringIO) -> None:
    """Two-factor (password, sealed state, a wrong and a right code), ShotGrid sign-in (the
    request id, the page's handle, ShotGrid's session token) and the device flow (device
    and user codes), at debug level: none of their secrets reaches a log line."""
    from tests.support.device import approve, authorize_device, poll
    from tests.support.emulator import dave_totp
    from tests.support.oidc import hidden_fields

    clock = MovableClock()
    secrets: dict[str, str] = {"dave password": "dave-pw"}
    codes: list[str] = []
    with broker_with_emulator(
        tmp_path, clock, log_format="json", log_level="debug", upstream_strategy="custody"
    ) as (running, emu, _site):
        sessions: list[str] = []
        original_create = emu.site.create_session

        def recording_create(user: Any) -> str:
            token: str = original_create(user)
            sessions.append(token)
            return token

        emu.site.create_session = recording_create  # type: ignore[method-assign]
        with running.client() as http:
            flow = Flow()
            page = http.get("/authorize", params=flow.params())
            step = submit_login(http, page, "dave", "dave-pw")
            fields = hidden_fields(step.text)
            secrets["two-factor state"] = fields["signin_state"]
            wrong = http.post("/authorize", data={**fields, "code": "987654"})
            assert wrong.status_code == 200
            codes.append("987654")
            right = dave_totp().at(clock())
            codes.append(right)
            done = http.post("/authorize", data={**fields, "code": right})
            assert done.status_code == 302, done.text

        with running.client() as http:
            page = http.get("/authorize", params=Flow().params())
            carried = hidden_fields(page.text)
            started = http.post(
                "/authorize",
                data={**carried, "signin": "shotgrid"},
                headers={"Accept": "application/json"},
            ).json()
            secrets["app session handle"] = started["handle"]
            (request,) = emu.app_session_requests()
            secrets["app session request id"] = str(request["sessionRequestId"])
            emu.approve_app_session(str(request["sessionRequestId"]), "erin")
            approved = http.post(
                "/authorize",
                data={**carried, "signin": "shotgrid_check", "signin_handle": started["handle"]},
                headers={"Accept": "application/json"},
            ).json()
            assert approved["status"] == "approved", approved

        with running.client() as http:
            device = authorize_device(http)
            secrets["device code"] = device["device_code"]
            secrets["user code"] = device["user_code"]
            secrets["user code, canonical"] = device["user_code"].replace("-", "")
            assert approve(http, device["user_code"]).status_code == 200
            clock.advance(5)
            assert poll(http, device["device_code"]).status_code == 200
        for n, token in enumerate(sessions):
            secrets[f"ShotGrid session token {n}"] = token
        assert sessions, "ShotGrid session tokens were issued"

    text = log_buffer.getvalue()
    leaked = [name for name, value in secrets.items() if value in text]
    assert not leaked, f"secrets found in the logs: {leaked}"
    for code in codes:  # six digits: look for them as values, not inside other numbers
        assert not re.search(rf"[=:\"']\s*\"?{code}\b", text), code
    events = {(line["event"], line["outcome"]) for line in parse_lines(text) if line.get("audit")}
    assert ("login", "two_factor_required") in events
    assert ("login", "failure") in events
    assert ("device_approved", "success") in events and ("device_token", "success") in events
    assert ("shotgrid_signin_started", "success") in events
