"""Service-endpoint throughput of a running `token-broker demo`: introspection of a valid
access token (RFC 7662) and token exchange to a broker audience (RFC 8693), each against
the signing limit of this machine (`openssl speed rsa2048`), like the refresh benchmark.

Reuses `token_bench.py`'s driver: `python -m broker demo` in a subprocess on free ports
with a temporary data dir (one uvicorn worker: one core), and its keep-alive asyncio
HTTP/1.1 client. `dna-backend` authenticates with `client_secret_post`.

    .venv/bin/python bench/services_bench.py [--duration 10] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from token_bench import Conn, openssl_sign_rate, peak_rss_mb, start_demo

BACKEND = {"client_id": "dna-backend", "client_secret": "dna-backend-secret"}
EXCHANGE = {
    "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
    "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
    "audience": "review-api",
}


async def run_load(
    port: int, concurrency: int, duration: float, path: str, form: dict[str, str]
) -> tuple[int, int, list[float]]:
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0}

    async def chain() -> None:
        conn = Conn("127.0.0.1", port)
        deadline = time.perf_counter() + duration
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            status, body = await conn.post_form(path, form)
            latencies.append(time.perf_counter() - t0)
            good = status == 200 and (path != "/introspect" or json.loads(body)["active"])
            counts["ok" if good else "errors"] += 1

    await asyncio.gather(*(chain() for _ in range(concurrency)))
    return counts["ok"], counts["errors"], latencies


async def access_token(port: int) -> str:
    conn = Conn("127.0.0.1", port)
    _status, body = await conn.post_form(
        "/token",
        {
            "grant_type": "password",
            "client_id": "dna-cli",
            "username": "alice",
            "password": "alice-pw",
        },
    )
    token: str = json.loads(body)["access_token"]
    return token


def report(
    name: str, ok: int, errors: int, lat: list[float], duration: float, limit: float | None
) -> None:
    rate = ok / duration
    lat_ms = sorted(x * 1000 for x in lat)
    p50 = statistics.median(lat_ms) if lat_ms else float("nan")
    p99 = lat_ms[max(0, int(len(lat_ms) * 0.99) - 1)] if lat_ms else float("nan")
    print(name)
    print(f"  requests/s        {rate:10.1f}   ({ok} ok, {errors} errors)")
    print(f"  latency p50/p99   {p50:7.2f} / {p99:.2f} ms")
    if limit:
        print(f"  ratio to signing limit  {rate / limit:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="broker-bench-"))
    proc, port = start_demo(data_dir, "RS256", None, "warning")
    try:
        # Subject tokens live 600 s: plenty for two runs of the default duration.
        token = asyncio.run(access_token(port))
        runs = {
            "introspection of a valid access token": (
                "/introspect",
                {"token": token, **BACKEND},
            ),
            "token exchange to a broker audience (review-api)": (
                "/token",
                {**EXCHANGE, "subject_token": token, **BACKEND},
            ),
        }
        results = {
            name: asyncio.run(run_load(port, args.concurrency, args.duration, path, form))
            for name, (path, form) in runs.items()
        }
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(data_dir, ignore_errors=True)
    limit = openssl_sign_rate("RS256")
    print(
        f"service endpoints (RS256), 1 worker, {args.concurrency} concurrent, "
        f"{args.duration:.0f} s each"
    )
    if limit:
        print(f"  openssl RS256 sign/s {limit:10.1f}")
    failed = False
    for name, (ok, errors, lat) in results.items():
        report(name, ok, errors, lat, args.duration, limit)
        failed = failed or errors > 0
    print(f"  worker peak RSS   {rss:10.1f} MB")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
