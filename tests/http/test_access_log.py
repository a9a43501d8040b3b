"""The access log as an operator reads it: the path of requests no route matched (bounded,
never its query string), the user agent (bounded, printable), and no INFO chatter from the
HTTP client the broker calls ShotGrid with."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.logs import configure_logging, unconfigure_logging
from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    with broker_with_emulator(tmp_path_factory.mktemp("access"), MovableClock()) as (b, _, _s):
        yield b


def logged(level: str, action: Any) -> list[dict[str, Any]]:
    out = io.StringIO()
    configure_logging(level, "json", stream=out)
    try:
        action()
    finally:
        unconfigure_logging()
    return [json.loads(line) for line in out.getvalue().splitlines()]


def access_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("event") == "http_request"]


def test_unmatched_path_is_logged_without_its_query(running: RunningBroker) -> None:
    def go() -> None:
        with running.client() as http:
            response = http.get(
                "/no/such/place", params={"code": "c0de-secret-1234"}, headers={"User-Agent": "t"}
            )
            assert response.status_code == 404

    (line,) = access_lines(logged("info", go))
    assert line["endpoint"] == "other"
    assert line["path"] == "/no/such/place"
    assert "c0de-secret-1234" not in json.dumps(line)


def test_matched_routes_log_their_template_only(running: RunningBroker) -> None:
    def go() -> None:
        with running.client() as http:
            assert http.get("/healthz").status_code == 200

    (line,) = access_lines(logged("info", go))
    assert line["endpoint"] == "/healthz" and "path" not in line


def test_long_paths_and_user_agents_are_bounded(running: RunningBroker) -> None:
    agent = "Mozilla/5.0 " + "x" * 5000

    def go() -> None:
        with running.client() as http:
            http.get("/" + "p" * 3000, headers={"User-Agent": agent})

    (line,) = access_lines(logged("info", go))
    assert line["path"].startswith("/ppp") and len(line["path"]) == 200
    assert line["user_agent"].startswith("Mozilla/5.0 xxx") and len(line["user_agent"]) == 200


def test_user_agent_is_logged_as_sent(running: RunningBroker) -> None:
    def go() -> None:
        with running.client() as http:
            http.get("/healthz", headers={"User-Agent": "dna-cli/2.1 (linux)"})

    (line,) = access_lines(logged("info", go))
    assert line["user_agent"] == "dna-cli/2.1 (linux)"


def test_control_characters_never_reach_a_line(running: RunningBroker) -> None:
    def go() -> None:
        with running.client() as http:
            http.get("/a%0ab%1b[31m", headers={"User-Agent": "ua\tx"})

    (line,) = access_lines(logged("info", go))
    assert line["path"] == "/a?b?[31m"
    assert line["user_agent"] == "ua?x"


def test_http_client_info_lines_are_silenced(running: RunningBroker, tmp_path: Path) -> None:
    """A password login calls ShotGrid twice; at `info` the HTTP client says nothing about
    it, at `debug` it does (which shows this test sees the client's lines at all)."""

    def login() -> None:
        with running.client() as http:
            assert running.password_grant(http).status_code == 200

    for level, expected in (("info", False), ("debug", True)):
        lines = logged(level, login)
        from_client = [line for line in lines if line.get("logger") in ("httpx", "httpcore")]
        assert bool(from_client) is expected, (level, from_client[:2])
    assert httpx.get(f"{running.url}/healthz").status_code == 200


@pytest.mark.parametrize(
    "path",
    ["/jwks.json", "/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"],
)
def test_routine_document_reads_are_access_lines_at_debug_only(
    running: RunningBroker, path: str
) -> None:
    """The key set and discovery, re-read by every relying party: no INFO line for a
    successful read, a DEBUG one at debug; a refused request still gets its INFO line."""

    def read() -> None:
        with running.client() as http:
            assert http.get(path).status_code == 200

    def refused() -> None:
        with running.client() as http:
            assert http.post(path).status_code == 405

    assert access_lines(logged("info", read)) == []
    (line,) = access_lines(logged("debug", read))
    assert line["endpoint"] == path and line["status"] == 200 and line["level"] == "debug"
    (line,) = access_lines(logged("info", refused))
    assert line["status"] == 405 and line["level"] == "info"
