"""Fuzzing the admin API past its front door: the generated requests carry a valid admin
token, so paths, queries and bodies reach the actions (the general fuzz run,
test_fuzz_schemathesis.py, stops at 401). No 5xx, and every answer as documented in
openapi.yaml (status, content type, headers, body schema).

Its own broker: the generated calls delete clients, end sessions and rotate keys. The
rate limit is raised so that the fuzzing is not all 429s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case

from tests.http.test_fuzz_schemathesis import CHECKS
from tests.http.test_openapi import SPEC_PATH
from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock

EXAMPLES_PER_OPERATION = 60

schema = schemathesis.openapi.from_path(SPEC_PATH).include(path_regex="^/admin/api/")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningBroker, str]]:
    tmp: Path = tmp_path_factory.mktemp("fuzz-admin")
    with broker_with_emulator(tmp, MovableClock(), admin_rate_limit=1_000_000) as (
        running,
        _emu,
        _site,
    ):
        with running.client() as http:
            assert running.password_grant(http, "alice").status_code == 200
            response = http.post(
                "/token",
                data={"grant_type": "client_credentials", "scope": "admin"},
                auth=("broker-admin", "broker-admin-secret"),
            )
        yield running, response.json()["access_token"]


@pytest.mark.timeout(180)
@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_admin_api_as_an_administrator(case: Case, live: tuple[RunningBroker, str]) -> None:
    running, token = live
    case.call_and_validate(
        base_url=running.url,
        headers={"Authorization": f"Bearer {token}"},
        checks=CHECKS,
        timeout=10,
    )
    assert httpx.get(f"{running.url}/healthz", timeout=5).status_code == 200
