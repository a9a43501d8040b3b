"""Refresh-grant throughput of a running `token-broker demo`, against the signing limit.

Starts `python -m broker demo` in a subprocess (one uvicorn worker: one core), logs in
CONCURRENCY users with the password grant, then keeps every chain refreshing for DURATION
seconds with a small keep-alive HTTP/1.1 client written on asyncio streams (httpx would
spend more CPU than the server on this 2-core machine and measure itself). Prints
requests/s, p50/p99 latency, the ratio to `openssl speed` RS256 (and ES256) signing, and
the worker's peak RSS.

With `--target serve` it measures `token-broker serve` instead, as production runs it
(httptools with the broker's request-head bound), with the emulator in its own process.

Three reference runs follow on `floor_app.py` (`--no-floor` skips them): uvicorn and one
signature per request; plus the rotation's SQLite write; and a whole refresh grant written
by hand with no OAuth, JOSE or web framework library. Each bounds what the broker's figure
can reach on this machine.

    .venv/bin/python bench/token_bench.py [--duration 10] [--concurrency 16] [--alg RS256]
        [--target demo|serve] [--log-level warning|info] [--no-pin] [--no-floor]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlencode

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def openssl_sign_rate(alg: str) -> float | None:
    """Signatures per second from `openssl speed` on this machine (one core)."""
    what = {"RS256": "rsa2048", "ES256": "ecdsap256"}[alg]
    try:
        out = subprocess.run(
            ["openssl", "speed", "-seconds", "2", what],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if alg == "RS256" and line.startswith("rsa 2048 bits"):
            return float(line.split()[-2])
        if alg == "ES256" and "(nistp256)" in line and "ecdsa" in line:
            return float(line.split()[-2])
    return None


class Conn:
    """One keep-alive HTTP/1.1 connection; enough of the protocol for our own server."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post_form(self, path: str, form: dict[str, str]) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        body = urlencode(form).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        return status, await self.reader.readexactly(length)


async def run_load(
    host: str, port: int, concurrency: int, duration: float
) -> tuple[int, int, list[float]]:
    latencies: list[float] = []
    errors = 0
    ok = 0

    async def chain() -> None:
        nonlocal errors, ok
        conn = Conn(host, port)
        status, body = await conn.post_form(
            "/token",
            {
                "grant_type": "password",
                "client_id": "dna-cli",
                "username": "alice",
                "password": "alice-pw",
            },
        )
        token = json.loads(body)["refresh_token"]
        deadline = time.perf_counter() + duration
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            status, body = await conn.post_form(
                "/token",
                {"grant_type": "refresh_token", "client_id": "dna-cli", "refresh_token": token},
            )
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                errors += 1
                continue
            ok += 1
            token = json.loads(body)["refresh_token"]

    await asyncio.gather(*(chain() for _ in range(concurrency)))
    return ok, errors, latencies


def peak_rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuSplit(NamedTuple):
    """CPU seconds of the event-loop thread (the main thread: uvicorn, Starlette, the
    middleware) and of every other thread (the core pool: Authlib, the store, signing),
    each as (user, sys), and the context switches of all threads."""

    loop: tuple[float, float]
    core: tuple[float, float]
    switches: int


def cpu_split(pid: int) -> CpuSplit:
    tick = os.sysconf("SC_CLK_TCK")
    loop, core, switches = [0.0, 0.0], [0.0, 0.0], 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            status = (task / "status").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        which = loop if int(task.name) == pid else core
        which[0] += int(fields[11]) / tick
        which[1] += int(fields[12]) / tick
        switches += sum(int(n) for n in re.findall(r"ctxt_switches:\s+(\d+)", status))
    return CpuSplit((loop[0], loop[1]), (core[0], core[1]), switches)


def choose_cpus(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """One core for the server worker and another for this load generator, so the
    figure is the worker's on one core (the target's terms) and the two never compete."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    return {cpus[0]}, {cpus[1]}


def start_server(
    cmd: list[str], port: int, env: dict[str, str], cpus: set[int] | None, log: Path
) -> subprocess.Popen[bytes]:
    """Start a server whose output goes to `log` (a file, so its log lines cost what a
    file sink costs and never block on a full pipe), once it listens on `port`."""

    def pin() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=pin)
    wait_listening(port, proc, " ".join(cmd[1:3]))
    return proc


def start_demo(
    data_dir: Path, alg: str, cpus: set[int] | None, log_level: str
) -> tuple[subprocess.Popen[bytes], int]:
    port, sg_port = free_port(), free_port()
    # JSON lines as production writes them (the demo's own default is for people).
    env = dict(os.environ, BROKER_SIGNING_ALG=alg, BROKER_LOG_LEVEL=log_level)
    env["BROKER_LOG_FORMAT"] = "json"
    cmd = [sys.executable, "-m", "broker", "demo", "--port", str(port)]
    cmd += ["--shotgrid-port", str(sg_port), "--data-dir", str(data_dir / "demo")]
    return start_server(cmd, port, env, cpus, data_dir / "server.log"), port


def wait_listening(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    """Until `port` accepts connections (or `proc` exits: then say so)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within 60 s")


def start_serve(
    data_dir: Path, alg: str, cpus: set[int] | None, side_cpus: set[int] | None, log_level: str
) -> tuple[subprocess.Popen[bytes], int, subprocess.Popen[bytes]]:
    """`token-broker serve` as production runs it (bounded httptools, one worker) on a
    SQLite store, against `token-broker shotgrid-emulator` in its own process (on the
    load generator's core: it only answers the logins)."""
    port, sg_port = free_port(), free_port()

    def pin(which: set[int] | None) -> Callable[[], None]:
        def apply() -> None:
            if which is not None:
                os.sched_setaffinity(0, which)

        return apply

    quiet = subprocess.DEVNULL
    emulator = subprocess.Popen(
        [sys.executable, "-m", "broker", "shotgrid-emulator", "--port", str(sg_port)],
        stdout=quiet,
        stderr=quiet,
        preexec_fn=pin(side_cpus),
    )
    wait_listening(sg_port, emulator, "shotgrid-emulator")
    env = dict(
        os.environ,
        BROKER_ISSUER=f"http://127.0.0.1:{port}",
        BROKER_SHOTGRID_URL=f"http://127.0.0.1:{sg_port}",
        BROKER_STORE_URL=f"sqlite:///{data_dir / 'broker.db'}",
        BROKER_SECRET_KEY=base64.urlsafe_b64encode(os.urandom(32)).decode(),
        BROKER_SHOTGRID_SCRIPT_NAME="token-broker",
        BROKER_SHOTGRID_SCRIPT_KEY="token-broker-key",
        BROKER_SIGNING_ALG=alg,
        BROKER_LOG_LEVEL=log_level,
    )
    add = [sys.executable, "-m", "broker", "clients", "add", "dna-cli", "--public"]
    subprocess.run(
        [*add, "--grant", "password", "--grant", "refresh_token"],
        env=env,
        check=True,
        capture_output=True,
    )
    cmd = [sys.executable, "-m", "broker", "serve", "--port", str(port), "--workers", "1"]
    return start_server(cmd, port, env, cpus, data_dir / "server.log"), port, emulator


class Run(NamedTuple):
    rate: float
    errors: int
    latencies: list[float]
    cpu_per_request_us: float
    rss_mb: float
    loop_us: tuple[float, float]
    core_us: tuple[float, float]
    switches_per_request: float


def measure(
    proc: subprocess.Popen[bytes], port: int, args: argparse.Namespace, cpus: set[int] | None
) -> Run:
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    try:
        before, split0 = cpu_seconds(proc.pid), cpu_split(proc.pid)
        ok, errors, lat = asyncio.run(run_load("127.0.0.1", port, args.concurrency, args.duration))
        used, split1 = cpu_seconds(proc.pid) - before, cpu_split(proc.pid)
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
    n = max(ok, 1)

    def per_request(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
        return (b[0] - a[0]) / n * 1e6, (b[1] - a[1]) / n * 1e6

    return Run(
        ok / args.duration,
        errors,
        lat,
        used / n * 1e6,
        rss,
        per_request(split0.loop, split1.loop),
        per_request(split0.core, split1.core),
        (split1.switches - split0.switches) / n,
    )


FLOORS = {
    "uvicorn + one signature": [],
    "+ the rotation's SQLite write": ["--store"],
    "a whole refresh grant by hand": ["--store", "--refresh"],
}


def floor(
    args: argparse.Namespace, flags: list[str], cpus: tuple[set[int] | None, set[int] | None]
) -> Run:
    """One `floor_app.py` run; `--store` takes this run's own SQLite file."""
    port = free_port()
    cmd = [sys.executable, str(HERE / "floor_app.py"), "--port", str(port), "--alg", args.alg]
    with tempfile.TemporaryDirectory(prefix="broker-floor-") as tmp:
        for flag in flags:
            cmd += [flag, str(Path(tmp) / "floor.db")] if flag == "--store" else [flag]
        proc = start_server(cmd, port, dict(os.environ), cpus[0], Path(tmp) / "floor.log")
        return measure(proc, port, args, cpus[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--alg", choices=["RS256", "ES256"], default="RS256")
    parser.add_argument(
        "--no-pin", action="store_true", help="let the OS spread the worker over every core"
    )
    parser.add_argument(
        "--no-floor", action="store_true", help="skip the floor_app.py reference runs"
    )
    parser.add_argument(
        "--target",
        choices=["demo", "serve"],
        default="demo",
        help="`token-broker demo` (emulator in process) or `serve` (as production runs "
        "it, with the emulator in its own process)",
    )
    parser.add_argument(
        "--log-level",
        choices=["warning", "info"],
        default="warning",
        help="the server's log level: warning (default) leaves the per-request access and "
        "audit lines out; info, the production default, writes them (to a file)",
    )
    args = parser.parse_args()
    cpus = choose_cpus(not args.no_pin)

    data_dir = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    emulator = None
    try:
        if args.target == "serve":
            proc, port, emulator = start_serve(data_dir, args.alg, cpus[0], cpus[1], args.log_level)
        else:
            proc, port = start_demo(data_dir, args.alg, cpus[0], args.log_level)
        run = measure(proc, port, args, cpus[1])
    finally:
        if emulator is not None:
            emulator.terminate()
            emulator.wait(10)
        shutil.rmtree(data_dir, ignore_errors=True)
    floors = [] if args.no_floor else [(n, floor(args, f, cpus)) for n, f in FLOORS.items()]
    lat_ms = sorted(x * 1000 for x in run.latencies)
    p50 = statistics.median(lat_ms) if lat_ms else float("nan")
    p99 = lat_ms[int(len(lat_ms) * 0.99) - 1] if lat_ms else float("nan")
    limit = openssl_sign_rate(args.alg)
    where = (
        f"worker pinned to CPU {min(cpus[0])}, load on CPU {min(cpus[1])}"
        if cpus[0] is not None and cpus[1] is not None
        else "worker not pinned"
    )
    print(
        f"refresh grant ({args.alg}), token-broker {args.target}, log level "
        f"{args.log_level}, 1 worker, "
        f"{args.concurrency} concurrent chains, "
        f"{args.duration:.0f} s, {where}"
    )
    print(
        f"  requests/s        {run.rate:10.1f}   ({len(run.latencies)} sent, {run.errors} errors)"
    )
    print(f"  latency p50/p99   {p50:7.2f} / {p99:.2f} ms")
    print(f"  worker CPU        {run.cpu_per_request_us:7.0f} µs per request")
    print(
        f"    event loop      {sum(run.loop_us):7.0f} µs (sys {run.loop_us[1]:.0f}); "
        f"core threads {sum(run.core_us):.0f} µs (sys {run.core_us[1]:.0f}); "
        f"{run.switches_per_request:.1f} context switches"
    )
    if limit:
        print(f"  openssl {args.alg} sign/s {limit:10.1f}")
        print(f"  ratio to signing limit  {run.rate / limit:.2f}")
    print(f"  worker peak RSS   {run.rss_mb:10.1f} MB")
    for name, ref in floors:
        ratio = f", ratio {ref.rate / limit:.2f}" if limit else ""
        errors = f", {ref.errors} ERRORS" if ref.errors else ""
        print(
            f"  floor: {name:<31} {ref.rate:8.1f} req/s, "
            f"{ref.cpu_per_request_us:4.0f} µs CPU per request "
            f"(loop {sum(ref.loop_us):.0f}, thread {sum(ref.core_us):.0f}){ratio}{errors}"
        )
    return 0 if run.errors == 0 and not any(ref.errors for _, ref in floors) else 1


if __name__ == "__main__":
    raise SystemExit(main())
