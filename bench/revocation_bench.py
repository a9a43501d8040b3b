"""The revocation feed's cost on a running `token-broker demo` (one worker, one core):
requests/s for a 304 (a validator whose `If-None-Match` still matches, the steady state)
and for a full read of 10,000 live entries, JSON and signed, beside the refresh grant's
figure on the same worker for scale.

The entries are written straight into the demo's SQLite store (10,000 revoked access
tokens, live for ten minutes) before the load starts. Reuses `token_bench.py`'s driver:
the demo in a subprocess on free ports, pinned to one core with the load generator on
another, and its keep-alive asyncio HTTP/1.1 client.

    .venv/bin/python bench/revocation_bench.py [--duration 10] [--concurrency 16]
        [--entries 10000] [--no-pin]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from token_bench import Conn, choose_cpus, cpu_seconds, run_load, start_demo

from broker.store import open_store


class GetConn(Conn):
    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], int]:
        """(status, headers, body length) of one GET on the kept-alive connection."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{extra}\r\n".encode()
        )
        status = int((await self.reader.readline()).split()[1])
        got: dict[str, str] = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            got[name.strip().lower()] = value.strip()
        length = int(got.get("content-length", "0"))
        await self.reader.readexactly(length)
        return status, got, length


async def get_load(
    port: int, concurrency: int, duration: float, path: str, headers: dict[str, str], want: int
) -> tuple[int, int, list[float], int]:
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0, "bytes": 0}

    async def chain() -> None:
        conn = GetConn("127.0.0.1", port)
        deadline = time.perf_counter() + duration
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            status, _headers, length = await conn.get(path, headers)
            latencies.append(time.perf_counter() - t0)
            counts["ok" if status == want else "errors"] += 1
            counts["bytes"] = length

    await asyncio.gather(*(chain() for _ in range(concurrency)))
    return counts["ok"], counts["errors"], latencies, counts["bytes"]


def seed(store_url: str, entries: int) -> None:
    store = open_store(store_url)
    try:
        now = datetime.now(UTC)
        for i in range(entries):
            store.deny_access_token(f"bench-{i:06d}", now + timedelta(minutes=10), at=now)
    finally:
        store.close()


def first_page(port: int) -> tuple[str, str]:
    """The incremental URL and ETag a validator holds once it has read the feed."""
    base = f"http://127.0.0.1:{port}/revocations"
    cursor = httpx.get(base, timeout=30).json()["cursor"]
    path = f"/revocations?since={cursor}"
    etag = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=30).headers["etag"]
    return path, etag


def report(
    name: str, ok: int, errors: int, lat: list[float], duration: float, size: int, cpu: float
) -> None:
    """Requests/s depend on what else the machine runs; the worker's CPU time per request
    much less, so both are printed."""
    lat_ms = sorted(x * 1000 for x in lat)
    p50 = statistics.median(lat_ms) if lat_ms else float("nan")
    p99 = lat_ms[max(0, int(len(lat_ms) * 0.99) - 1)] if lat_ms else float("nan")
    body = f", {size / 1024:.0f} KiB body" if size else ""
    print(
        f"  {name:<36} {ok / duration:9.1f} req/s  {cpu / max(ok, 1) * 1e6:6.0f} µs CPU/request"
        f"   p50/p99 {p50:6.2f} / {p99:.2f} ms   ({ok} ok, {errors} errors{body})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args()
    cpus = choose_cpus(not args.no_pin)

    data_dir = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    # The refresh chains start with concurrent logins of one user from one address, which
    # login throttling (reserving a slot per attempt in flight) would refuse past 5.
    os.environ.setdefault("BROKER_LOGIN_MAX_FAILURES_PER_USER_IP", "1000")
    proc, port = start_demo(data_dir, "RS256", cpus[0], "warning")
    results = {}
    try:
        if cpus[1] is not None:
            os.sched_setaffinity(0, cpus[1])
        seed(f"sqlite:///{data_dir / 'demo' / 'broker.db'}", args.entries)
        path, etag = first_page(port)
        runs = {
            "304 (If-None-Match, incremental)": (path, {"If-None-Match": etag}, 304),
            f"full read, JSON, {args.entries:,} entries": ("/revocations", {}, 200),
            f"full read, signed, {args.entries:,} entries": (
                "/revocations",
                {"Accept": "application/jwt"},
                200,
            ),
        }
        for name, (target, headers, want) in runs.items():
            before = cpu_seconds(proc.pid)
            ok, errors, lat, size = asyncio.run(
                get_load(port, args.concurrency, args.duration, target, headers, want)
            )
            results[name] = (ok, errors, lat, size, cpu_seconds(proc.pid) - before)
        before = cpu_seconds(proc.pid)
        ok, errors, lat = asyncio.run(run_load("127.0.0.1", port, args.concurrency, args.duration))
        results["refresh grant (for scale)"] = (ok, errors, lat, 0, cpu_seconds(proc.pid) - before)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(data_dir, ignore_errors=True)
    where = (
        f"worker on CPU {min(cpus[0])}, load on CPU {min(cpus[1])}"
        if cpus[0] is not None and cpus[1] is not None
        else "worker not pinned"
    )
    print(
        f"revocation feed, token-broker demo (RS256), 1 worker, {args.concurrency} concurrent, "
        f"{args.duration:.0f} s each, {where}"
    )
    failed = False
    for name, (ok, errors, lat, size, cpu) in results.items():
        report(name, ok, errors, lat, args.duration, size, cpu)
        failed = failed or errors > 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
