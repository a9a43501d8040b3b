"""`token-broker demo`: the whole broker on one machine with nothing installed.

Embedded ShotGrid emulator (the contract's demo users), SQLite store and encrypted keys in
the data dir, and the contract's demo clients. The key-encryption key is generated into
the data dir on first start (mode 0600), so a restart on the same dir keeps keys,
sessions and refresh tokens.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
from pathlib import Path
from typing import Any

from broker.store import ClientRecord
from broker.tokens.secrets import hash_client_secret

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
BROWSER_REDIRECTS = ("http://127.0.0.1/callback", "http://localhost/callback")
BROWSER_LOGOUT_REDIRECTS = (*BROWSER_REDIRECTS, "http://127.0.0.1/", "http://localhost/")
DEMO_SCRIPT = ("token-broker", "token-broker-key")


def demo_clients() -> list[ClientRecord]:
    """The clients of ../shared/CONTRACT.md ("Demo clients")."""
    browser: dict[str, Any] = dict(
        public=True,
        grant_types=("authorization_code", "refresh_token"),
        redirect_uris=BROWSER_REDIRECTS,
        post_logout_redirect_uris=BROWSER_LOGOUT_REDIRECTS,
    )
    return [
        ClientRecord(
            client_id="dna-cli",
            name="DNA command line",
            public=True,
            grant_types=("password", "refresh_token"),
        ),
        ClientRecord(client_id="dna-frontend", name="DNA", **browser),
        ClientRecord(client_id="review-tool", name="Review Tool", **browser),
        ClientRecord(
            client_id="dna-backend",
            name="DNA backend",
            public=False,
            secret_hash=hash_client_secret("dna-backend-secret"),
            grant_types=(TOKEN_EXCHANGE, "client_credentials"),
            audiences=("dna-api", "review-api"),
            may_introspect=True,
            may_exchange_shotgrid=True,
        ),
    ]


def ensure_secret_key(data_dir: Path) -> str:
    path = data_dir / "secret.key"
    if not path.exists():
        key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
    return path.read_text().strip()


def demo_overrides(host: str, port: int, shotgrid_port: int, data_dir: Path) -> dict[str, Any]:
    return {
        "issuer": f"http://{host}:{port}",
        "shotgrid_url": f"http://{host}:{shotgrid_port}",
        "store_url": f"sqlite:///{(data_dir / 'broker.db').resolve()}",
        "secret_key": ensure_secret_key(data_dir),
        "shotgrid_script_name": DEMO_SCRIPT[0],
        "shotgrid_script_key": DEMO_SCRIPT[1],
    }


def banner(issuer: str, shotgrid_url: str, data_dir: Path) -> str:
    return "\n".join(
        [
            f"shotgrid-token-broker demo: issuer {issuer}",
            f"  ShotGrid emulator: {shotgrid_url}   data dir: {data_dir}",
            "  demo users: alice/alice-pw, bob/bob-pw (carol, dave, erin are refused by design)",
            "  try a password grant:",
            f"    curl -s -X POST {issuer}/token -d grant_type=password -d client_id=dna-cli "
            "-d username=alice -d password=alice-pw",
            f"  discovery: {issuer}/.well-known/openid-configuration",
        ]
    )


def _loop_factory() -> Any:
    """uvloop when installed, as `serve` gets from uvicorn: the demo runs its two servers
    on a loop of its own, so uvicorn's loop setup does not apply here."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_demo(host: str, port: int, shotgrid_port: int, data_dir: str) -> int:
    import uvicorn

    from broker.app import create_app
    from broker.listen import listen_socket
    from broker.serving import server_options
    from broker.settings import load_settings
    from shotgrid_emulator import IDLE_KEEPALIVE_SECONDS, ShotGridEmulator

    directory = Path(data_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings = load_settings(**demo_overrides(host, port, shotgrid_port, directory))
    from broker.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    emulator = ShotGridEmulator.default()
    app = create_app(settings, seed_clients=demo_clients())
    sockets = [listen_socket(host, shotgrid_port), listen_socket(host, port)]

    async def main() -> None:
        servers = [
            uvicorn.Server(
                uvicorn.Config(
                    emulator.app, log_level="warning", timeout_keep_alive=IDLE_KEEPALIVE_SECONDS
                )
            ),
            # The same parser, bounds, timeouts and proxy handling as `serve`.
            uvicorn.Server(uvicorn.Config(app, log_level="warning", **server_options(settings))),
        ]
        tasks = [
            asyncio.create_task(s.serve(sockets=[sock]))
            for s, sock in zip(servers, sockets, strict=True)
        ]
        while not all(s.started for s in servers):
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.05)
        if all(s.started for s in servers):
            assert settings.issuer and settings.shotgrid_url
            print(banner(settings.issuer, settings.shotgrid_url, directory), flush=True)
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(main())
    return 0
