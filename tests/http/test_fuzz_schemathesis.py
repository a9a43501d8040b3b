"""Fuzzing the live broker from openapi.yaml with schemathesis: every documented operation
that has a route, a bounded number of generated requests each (valid and invalid data),
failing on any 5xx and on any response that does not match the spec (status code,
content type, headers such as `Cache-Control: no-store`, body schema).

The broker is real (uvicorn, SQLite, the emulator upstream), so generated password grants
really go to the emulated ShotGrid. Operations whose routes other branches are still
building are left out here and picked up automatically once their routes exist.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.http.test_openapi import SPEC_PATH, app_operations
from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock

EXAMPLES_PER_OPERATION = 150

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

_ROUTED = app_operations()

schema = schemathesis.openapi.from_path(SPEC_PATH).include(
    func=lambda ctx: ctx.operation.method.upper() in _ROUTED.get(ctx.operation.path, set())
)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    with broker_with_emulator(tmp, MovableClock()) as (running, _emu, _site):
        yield running


@pytest.mark.timeout(120)
@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_server_errors_and_spec_conformance(case: Case, live: RunningBroker) -> None:
    case.call_and_validate(base_url=live.url, checks=CHECKS, timeout=10)
