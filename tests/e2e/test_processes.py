"""The broker as operators run it: `token-broker demo` and `serve` as real processes.

Covers the demo's restart on the same data dir, two `serve` processes sharing one SQLite
file (a token issued by one refreshes at the other; a key rotated with the CLI is used by
both within the JWKS cache period), the key and client CLI, and the rule that a password
never reaches the store or the logs.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shotgrid_emulator import ShotGridEmulator
from tests.support.broker import new_kek
from tests.support.mongo import MONGODB_URI, scratch_database
from tests.support.servers import ServerThread, free_port

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


class Proc:
    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "broker", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.output: list[str] = []

    def wait_for_line(self, needle: str, timeout: float = 30) -> str:
        assert self.popen.stdout is not None
        deadline = time.monotonic() + timeout
        for raw in self.popen.stdout:
            line = raw.decode(errors="replace")
            self.output.append(line)
            if needle in line:
                return line
            if time.monotonic() > deadline:
                break
        raise AssertionError(f"no {needle!r} in output: {''.join(self.output)}")

    def stop(self) -> str:
        self.popen.terminate()
        try:
            rest, _ = self.popen.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            rest, _ = self.popen.communicate()
        self.output.append(rest.decode(errors="replace"))
        return "".join(self.output)


def wait_ready(url: str, timeout: float = 30) -> None:
    """Poll readiness (a condition), bounded; this is how an orchestrator waits too."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"{url} never became ready")


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "broker", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )


def password_grant(url: str, username: str, password: str) -> httpx.Response:
    form = {
        "grant_type": "password",
        "client_id": "dna-cli",
        "username": username,
        "password": password,
    }
    return httpx.post(f"{url}/token", data=form)


def refresh_grant(url: str, token: str) -> httpx.Response:
    form = {"grant_type": "refresh_token", "client_id": "dna-cli", "refresh_token": token}
    return httpx.post(f"{url}/token", data=form)


@contextlib.contextmanager
def demo(data_dir: Path, port: int, sg_port: int) -> Iterator[tuple[Proc, str]]:
    proc = Proc(
        ["demo", "--port", str(port), "--shotgrid-port", str(sg_port), "--data-dir", str(data_dir)]
    )
    try:
        proc.wait_for_line("curl")
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        proc.stop()


def test_demo_restart_keeps_keys_sessions_and_refresh_tokens(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    secret_password = "alice-pw"  # the demo directory's password for alice
    wrong_password = "not-alices-pw-7f3a9c"
    port, sg_port = free_port(), free_port()
    with demo(data, port, sg_port) as (proc, url):
        banner = "".join(proc.output)
        assert url in banner and "grant_type=password" in banner
        tokens = password_grant(url, "alice", secret_password).json()
        refused = password_grant(url, "alice", wrong_password)
        assert refused.status_code == 400
        jwks_before = httpx.get(f"{url}/jwks.json").json()
    first_run_output = "".join(proc.output)
    with demo(data, port, sg_port) as (proc, url2):
        assert httpx.get(f"{url2}/jwks.json").json() == jwks_before
        # tokens issued before the restart: the refresh token refreshes...
        refreshed = refresh_grant(url2, tokens["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        # ... and the access token from before the restart still verifies offline
        key = jwt.PyJWKClient(f"{url2}/jwks.json").get_signing_key_from_jwt(tokens["access_token"])
        claims = jwt.decode(
            tokens["access_token"], key.key, algorithms=["RS256"], audience="dna-api", issuer=url2
        )
        assert claims["sg_login"] == "alice"
    # The password is nowhere: not in the SQLite file, its WAL/SHM, nor any output.
    output = first_run_output + "".join(proc.output)
    for path in data.iterdir():
        blob = path.read_bytes()
        for password in (secret_password, wrong_password):
            assert password.encode() not in blob, f"{password} found in {path.name}"
    assert wrong_password not in output
    assert tokens["refresh_token"] not in output


@pytest.fixture
def upstream() -> Iterator[str]:
    emulator = ShotGridEmulator.default()
    site = ServerThread(emulator.app).start()
    try:
        yield site.url
    finally:
        site.stop()


@pytest.fixture(params=["sqlite", "mongodb"])
def shared_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
        return
    if not MONGODB_URI:
        # mongomock lives inside one process, so it cannot be shared by two brokers:
        # without a real server this multi-process test covers SQLite only.
        pytest.skip("BROKER_TEST_MONGODB_URI not set: two brokers on one MongoDB not run")
    with scratch_database(MONGODB_URI) as url:
        yield url


def test_two_serve_processes_share_one_store(
    tmp_path: Path, upstream: str, shared_store_url: str
) -> None:
    port_a, port_b = free_port(), free_port()
    env = {
        "BROKER_ISSUER": f"http://127.0.0.1:{port_a}",
        "BROKER_SHOTGRID_URL": upstream,
        "BROKER_STORE_URL": shared_store_url,
        "BROKER_SECRET_KEY": new_kek(),
        "BROKER_SHOTGRID_SCRIPT_NAME": "token-broker",
        "BROKER_SHOTGRID_SCRIPT_KEY": "token-broker-key",
        "BROKER_JWKS_MAX_AGE": "2",
        "BROKER_LOGIN_MAX_FAILURES_PER_USER_IP": "3",
    }
    added = cli(
        "clients",
        "add",
        "dna-cli",
        "--public",
        "--grant",
        "password",
        "--grant",
        "refresh_token",
        env=env,
    )
    assert added.returncode == 0, added.stderr
    listed = cli("clients", "list", env=env)
    assert "dna-cli" in listed.stdout
    dup = cli("clients", "add", "dna-cli", "--public", "--grant", "password", env=env)
    assert dup.returncode != 0 and len(dup.stderr.strip().splitlines()) == 1

    a = Proc(["serve", "--port", str(port_a)], env)
    b = Proc(["serve", "--port", str(port_b), "--workers", "2"], env)
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    try:
        wait_ready(url_a)
        wait_ready(url_b)
        login = password_grant(url_a, "bob", "bob-pw")
        assert login.status_code == 200, login.text
        at_b = refresh_grant(url_b, login.json()["refresh_token"])
        assert at_b.status_code == 200, at_b.text
        # reuse of the first token at A after B rotated it (past grace is not needed:
        # the successor exists, so within grace A returns the same successor)
        again = refresh_grant(url_a, login.json()["refresh_token"])
        assert again.status_code == 200
        assert again.json()["refresh_token"] == at_b.json()["refresh_token"]

        listed = cli("keys", "list", env=env)
        assert listed.returncode == 0, listed.stderr
        old_kid = jwt.get_unverified_header(at_b.json()["access_token"])["kid"]
        assert old_kid in listed.stdout
        rotated = cli("keys", "rotate", env=env)
        assert rotated.returncode == 0, rotated.stderr
        new_lines = cli("keys", "list", env=env).stdout.splitlines()
        current = {ln.split()[0] for ln in new_lines if " current " in f" {ln} "}
        assert old_kid not in current
        # Both processes must sign with a new current key within the JWKS cache period
        # (2 s here); poll each until it does, bounded by a few periods.
        for url in (url_a, url_b):
            deadline = time.monotonic() + 10
            while True:
                token = password_grant(url, "alice", "alice-pw").json()["access_token"]
                if jwt.get_unverified_header(token)["kid"] in current:
                    break
                assert time.monotonic() < deadline, f"{url} still signs with the old key"
                time.sleep(0.2)
        # A login throttled at one replica is throttled at the other: the counters are in
        # the shared store.
        for _ in range(3):
            failed = password_grant(url_a, "carol", "wrong")
            assert failed.json()["error"] == "invalid_grant"
        throttled = password_grant(url_b, "carol", "wrong")
        assert throttled.status_code == 429
        assert int(throttled.headers["retry-after"]) > 0

        retire = cli("keys", "retire", old_kid, env=env)
        assert retire.returncode == 0, retire.stderr
        bad = cli("keys", "retire", "no-such-kid", env=env)
        assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
    finally:
        out_a, out_b = a.stop(), b.stop()
    for out in (out_a, out_b):
        assert "bob-pw" not in out and "Traceback" not in out


def test_serve_refuses_to_start_without_settings(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    result = subprocess.run(
        [sys.executable, "-m", "broker", "serve"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    for name in ("BROKER_ISSUER", "BROKER_SHOTGRID_URL", "BROKER_STORE_URL", "BROKER_SECRET_KEY"):
        assert sum(name in line for line in lines) >= 1
    assert all(line.startswith("token-broker:") for line in lines)


def test_demo_on_a_busy_port_is_one_line(tmp_path: Path) -> None:
    with contextlib.closing(socket.socket()) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "broker",
                "demo",
                "--port",
                str(free_port()),
                "--shotgrid-port",
                str(port),
                "--data-dir",
                str(tmp_path / "d"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"token-broker: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in cmdline:
                found.append(int(entry.name))
    return found


def _thread_cpus(pid: int) -> set[str]:
    """The CPU lists every thread of `pid` may run on (one entry when they all agree)."""
    lists = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for line in (task / "status").read_text().splitlines():
                if line.startswith("Cpus_allowed_list:"):
                    lists.add(line.split(":", 1)[1].strip())
    return lists


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to place two workers")
def test_pinned_workers_take_a_cpu_each(tmp_path: Path, upstream: str) -> None:
    """BROKER_PIN_WORKERS: each `serve` worker claims its own CPU, with all its threads."""
    port = free_port()
    lock_dir = tmp_path / "locks"
    lock_dir.mkdir()
    env = {
        "BROKER_ISSUER": f"http://127.0.0.1:{port}",
        "BROKER_SHOTGRID_URL": upstream,
        "BROKER_STORE_URL": f"sqlite:///{tmp_path / 'broker.db'}",
        "BROKER_SECRET_KEY": new_kek(),
        "BROKER_SHOTGRID_SCRIPT_NAME": "token-broker",
        "BROKER_SHOTGRID_SCRIPT_KEY": "token-broker-key",
        "BROKER_PIN_WORKERS": "true",
        "TMPDIR": str(lock_dir),  # the CPU lock files, apart from any other broker here
    }
    server = Proc(["serve", "--port", str(port), "--workers", "2"], env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        deadline = time.monotonic() + 30
        while len(workers := _children(server.popen.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(workers) == 2, workers
        for _ in range(20):  # start the core threads in both workers
            assert httpx.get(f"{url}/jwks.json").status_code == 200
        placed = [_thread_cpus(pid) for pid in workers]
        assert all(len(cpus) == 1 for cpus in placed), placed
        cpus = {next(iter(c)) for c in placed}
        assert len(cpus) == 2, placed
        assert all(c.isdigit() for c in cpus), placed  # one CPU each, not a range
        assert (
            sorted(p.name for p in lock_dir.iterdir())[:2]
            == [f"token-broker-cpu{c}.lock" for c in sorted(cpus)][:2]
        )
    finally:
        server.stop()


def healthz_count(url: str) -> float:
    """broker_requests_total for /healthz, as the worker that answers this scrape says."""
    text = httpx.get(f"{url}/metrics", timeout=5).text  # a new connection: any worker
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "broker_requests_total" and sample.labels["endpoint"] == "/healthz"
    )


def test_serve_workers_share_their_metrics_without_being_told(
    tmp_path: Path, upstream: str
) -> None:
    """`serve --workers 2` without PROMETHEUS_MULTIPROC_DIR makes a private one (one log
    line), so every worker's /metrics counts every worker's requests; it is removed when
    serve stops."""
    port = free_port()
    env = {
        "BROKER_ISSUER": f"http://127.0.0.1:{port}",
        "BROKER_SHOTGRID_URL": upstream,
        "BROKER_STORE_URL": f"sqlite:///{tmp_path / 'broker.db'}",
        "BROKER_SECRET_KEY": new_kek(),
        "BROKER_SHOTGRID_SCRIPT_NAME": "token-broker",
        "BROKER_SHOTGRID_SCRIPT_KEY": "token-broker-key",
    }
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    proc = Proc(["serve", "--port", str(port), "--workers", "2"], env)
    url = f"http://127.0.0.1:{port}"
    try:
        line = proc.wait_for_line("PROMETHEUS_MULTIPROC_DIR")
        named = re.search(r"through (\S+) \(removed", line)
        assert named, line
        directory = Path(named.group(1))
        assert directory.is_dir()
        wait_ready(url)
        for _ in range(20):
            assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        # Each scrape lands on either worker; every one must see all 20 requests.
        assert [healthz_count(url) for _ in range(8)] == [20.0] * 8
    finally:
        output = proc.stop()
    assert output.count("PROMETHEUS_MULTIPROC_DIR") == 1 and "Traceback" not in output
    assert not directory.exists()
