"""The broker driven by Node's stock OpenID Connect client, openid-client 6 (panva's, on
oauth4webapi), with jose verifying access tokens as a Node resource server would.

The script (node/interop.mjs) runs discovery, the password grant with its ID token,
offline access-token verification from `jwks_uri`, userinfo, refresh rotation and the
grace window, refusals, revocation, both client-secret methods with client_credentials,
introspection and token exchange, then authorization code + PKCE through the login page
and RP-initiated logout. Every check the library makes is the library's own, which is the
point: its strictness (issuer match, JSON content types, ID token claims, PKCE, state,
nonce) is what the broker's users meet.

Node and npm come from the machine; the exact library versions come from
node/package-lock.json (`npm ci`, run when node_modules is missing or stale).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.broker import RunningBroker, broker_with_emulator
from tests.support.clock import MovableClock

NODE_DIR = Path(__file__).parent / "node"


def _installed_is_current() -> bool:
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    return installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime


@pytest.fixture(scope="module")
def node() -> str:
    node_bin, npm_bin = shutil.which("node"), shutil.which("npm")
    if node_bin is None or npm_bin is None:
        pytest.skip("NODE INTEROP SKIPPED: node and npm are not on PATH; install Node.js 20+.")
    if not _installed_is_current():
        done = subprocess.run(
            [npm_bin, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"npm ci in {NODE_DIR} failed:\n{done.stderr[-2000:]}")
    return node_bin


@pytest.fixture(params=["RS256", "ES256"])
def broker(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RunningBroker]:
    """Access tokens signed with each algorithm the contract offers (ID tokens stay RS256)."""
    with broker_with_emulator(tmp_path, MovableClock(), signing_alg=request.param) as (
        running,
        _emu,
        _site,
    ):
        yield running


def run_interop(node: str, issuer: str) -> dict[str, Any]:
    done = subprocess.run(
        [node, "interop.mjs", issuer],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, f"openid-client interop failed:\n{done.stderr[-4000:]}"
    findings: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return findings


@pytest.mark.slow
def test_openid_client_drives_every_flow(node: str, broker: RunningBroker) -> None:
    found = run_interop(node, broker.url)

    assert found["discovery"] == {"issuer": broker.url, "jwks_uri": f"{broker.url}/jwks.json"}
    assert found["password"]["sub"] == "101"
    # openid-client's expiresIn() counts down from when the answer arrived (600 s): a busy
    # machine can spend a second between the token response and the script reading it.
    assert 598 <= found["password"]["expires_in"] <= 600
    assert found["password"]["id_token_alg"] == "RS256"  # the contract's, whatever signs ATs
    assert found["access_token"]["alg"] == broker.settings.signing_alg
    assert found["access_token"]["aud"] == "dna-api"
    # jose finds no key for the refresh token's algorithm in the JWKS: it cannot pass.
    assert found["refresh_as_access"] in {"ERR_JOSE_NOT_SUPPORTED", "ERR_JWKS_NO_MATCHING_KEY"}
    assert found["userinfo"]["preferred_username"] == "alice"
    assert found["refresh"] == {"rotated": True, "same_successor_in_grace": True}

    for case in ("wrong_password", "inactive_user", "refresh_after_revoke"):
        assert found[case]["status"] == 400
        assert found[case]["error"] == "invalid_grant"
    assert "Legacy Login" in found["wrong_password"]["description"]

    for method in ("client_secret_basic", "client_secret_post"):
        assert found[method]["exchange_act"] == {"sub": "dna-backend"}
    refused = found["introspection_without_auth"]
    assert (refused["status"], refused["error"]) == (401, "invalid_client")
    assert "[" not in refused["description"], "a sentence, not a Python list"

    assert found["authorization_code"] == {"sub": "102", "nonce_echoed": True, "refreshed": True}
    assert found["end_session"] == {"status": 302, "location": "http://127.0.0.1:53682/?state=bye"}
