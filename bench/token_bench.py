"""Refresh-grant throughput of a running `token-broker demo`, against the signing limit.

Starts `python -m broker demo` in a subprocess (one uvicorn worker: one core), logs in
CONCURRENCY users with the password grant, then keeps every chain refreshing for DURATION
seconds with a small keep-alive HTTP/1.1 client written on asyncio streams (httpx would
spend more CPU than the server on this 2-core machine and measure itself). Prints
requests/s, p50/p99 latency, the ratio to `openssl speed` RS256 (and ES256) signing, and
the worker's peak RSS.

    .venv/bin/python bench/token_bench.py [--duration 10] [--concurrency 16] [--alg RS256]
"""

from __future__ import annotations

import argparse
import asyncio
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
from pathlib import Path
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


def start_demo(data_dir: Path, alg: str) -> tuple[subprocess.Popen[bytes], int]:
    port, sg_port = free_port(), free_port()
    env = dict(os.environ, BROKER_SIGNING_ALG=alg, BROKER_LOG_LEVEL="warning")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "broker",
            "demo",
            "--port",
            str(port),
            "--shotgrid-port",
            str(sg_port),
            "--data-dir",
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # the banner is printed once both servers listen
        if b"issuer" in line:
            return proc, port
    raise RuntimeError("demo did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--alg", choices=["RS256", "ES256"], default="RS256")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    proc, port = start_demo(data_dir, args.alg)
    try:
        ok, errors, lat = asyncio.run(run_load("127.0.0.1", port, args.concurrency, args.duration))
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(data_dir, ignore_errors=True)
    rate = ok / args.duration
    lat_ms = sorted(x * 1000 for x in lat)
    p50 = statistics.median(lat_ms) if lat_ms else float("nan")
    p99 = lat_ms[int(len(lat_ms) * 0.99) - 1] if lat_ms else float("nan")
    limit = openssl_sign_rate(args.alg)
    print(
        f"refresh grant ({args.alg}), 1 worker, {args.concurrency} concurrent chains, "
        f"{args.duration:.0f} s"
    )
    print(f"  requests/s        {rate:10.1f}   ({ok} ok, {errors} errors)")
    print(f"  latency p50/p99   {p50:7.2f} / {p99:.2f} ms")
    if limit:
        print(f"  openssl {args.alg} sign/s {limit:10.1f}")
        print(f"  ratio to signing limit  {rate / limit:.2f}")
    print(f"  worker peak RSS   {rss:10.1f} MB")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
