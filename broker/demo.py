"""`token-broker demo`: the whole broker on one machine with nothing installed.

Embedded ShotGrid emulator (the contract's demo users), SQLite store and encrypted keys in
the data dir, and the contract's demo clients. The key-encryption key is generated into
the data dir on first start (mode 0600), so a restart on the same dir keeps keys,
sessions and refresh tokens.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from broker.grants import ADMIN_SCOPE
from broker.store import ClientRecord
from broker.tokens.secrets import hash_client_secret

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
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
            grant_types=("password", "refresh_token", DEVICE_CODE),
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
        ClientRecord(
            client_id="broker-admin",
            name="Broker administration",
            public=False,
            secret_hash=hash_client_secret("broker-admin-secret"),
            grant_types=("client_credentials",),
            scopes=(ADMIN_SCOPE,),
        ),
    ]


class DemoDataError(Exception):
    """The data dir cannot be made or read; the message names it."""


SECRET_FILE = "secret.key"
STORE_FILE = "broker.db"


def ensure_secret_key(data_dir: Path) -> str:
    path = data_dir / SECRET_FILE
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
        "store_url": f"sqlite:///{(data_dir / STORE_FILE).resolve()}",
        "secret_key": ensure_secret_key(data_dir),
        "shotgrid_script_name": DEMO_SCRIPT[0],
        "shotgrid_script_key": DEMO_SCRIPT[1],
    }


def data_dir_settings(data_dir: Path) -> dict[str, Any]:
    """The store and key-encryption key of an existing demo data dir, for `keys` and
    `clients --data-dir DIR`. Never creates anything: a mistyped dir is an error."""
    db, key = data_dir / STORE_FILE, data_dir / SECRET_FILE
    if not db.is_file() or not key.is_file():
        raise DemoDataError(
            f"--data-dir {data_dir}: no demo data there (no {STORE_FILE} and {SECRET_FILE});"
            f" start `token-broker demo --data-dir {data_dir}` once first"
        )
    try:
        secret = key.read_text().strip()
    except OSError as exc:
        raise DemoDataError(f"--data-dir {data_dir}: cannot read {key}: {exc.strerror}") from None
    return {"store_url": f"sqlite:///{db.resolve()}", "secret_key": secret}


# --- the banner: a tour whose every command works as printed ---------------------------------
@dataclass(frozen=True, slots=True)
class Tour:
    """What the banner's commands need: the real URLs, how to run `token-broker` from the
    shell that started the demo, and a PKCE pair for the browser sign-in."""

    issuer: str
    shotgrid_url: str
    data_dir: str
    program: str = "token-broker"
    verifier: str = "<the verifier the demo prints>"
    challenge: str = "<its S256 challenge>"


def pkce_pair() -> tuple[str, str]:
    """A fresh RFC 7636 verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode().rstrip("=")


def program_name() -> str:
    """How the person who started the demo runs `token-broker` from the same shell:
    `token-broker` when that is on PATH, the script's path as typed (`make run` runs
    `.venv/bin/token-broker`), else `python -m broker`."""
    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name == "token-broker":
        found = shutil.which("token-broker")
        if found and Path(found).resolve() == Path(argv0).resolve():
            return "token-broker"
        return shlex.quote(argv0)
    return f"{shlex.quote(sys.executable)} -m broker"


_KEEP = (
    'export ACCESS_TOKEN=$(printf %s "$TOKENS" | python3 -c '
    "'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')",
    'export REFRESH_TOKEN=$(printf %s "$TOKENS" | python3 -c '
    "'import json,sys; print(json.load(sys.stdin)[\"refresh_token\"])')",
)
CODE_PLACEHOLDER = "paste-the-code-here"


def banner(tour: Tour) -> str:
    """The demo's start-up text. Lines starting with `#` explain, lines starting with
    `http` are for a browser, every other line of the tour is a shell command that works
    when pasted as printed (a test runs them)."""
    iss = tour.issuer
    login = (
        "-d grant_type=password -d client_id=dna-cli -d username=alice -d password=alice-pw "
        "-d scope=openid+profile+email"
    )
    backend = "-u dna-backend:dna-backend-secret"
    authorize = f"{iss}/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": "dna-frontend",
            "redirect_uri": "http://127.0.0.1/callback",
            "scope": "openid profile email",
            "state": "tour",
            "code_challenge": tour.challenge,
            "code_challenge_method": "S256",
        }
    )
    data = shlex.quote(tour.data_dir)
    return "\n".join(
        [
            f"shotgrid-token-broker demo: issuer {iss}",
            f"  discovery          {iss}/.well-known/openid-configuration",
            f"  ShotGrid emulator  {tour.shotgrid_url}",
            f"  admin page         {iss}/admin (sign in as frank/frank-pw)",
            f"  data dir           {tour.data_dir} (SQLite store, sealed signing keys, "
            f"{SECRET_FILE})",
            "  users              alice/alice-pw, bob/bob-pw, frank/frank-pw (group Admin); "
            "dave/dave-pw asks for a two-factor code (TOTP secret JBSWY3DPEHPK3PXP), erin "
            "signs in with ShotGrid only, carol is disabled",
            "",
            "A five-minute tour: paste each command into a shell (sh, bash or zsh), in order,",
            "from this directory.",
            "",
            "# 1. Sign in as alice with the password grant (client dna-cli); the answer is JSON:",
            f"curl -s -w '\\n' -X POST {iss}/token {login}",
            "",
            "# 2. The same, keeping the tokens in shell variables (python3 reads the JSON):",
            f"TOKENS=$(curl -s -X POST {iss}/token {login})",
            *_KEEP,
            "",
            "# 3. Who is signed in (OIDC userinfo, allowed by the openid scope):",
            f"curl -s -w '\\n' {iss}/userinfo -H \"Authorization: Bearer $ACCESS_TOKEN\"",
            "",
            "# 4. Refresh; a refresh token works once, so keep the new pair:",
            f"TOKENS=$(curl -s -X POST {iss}/token -d grant_type=refresh_token "
            f'-d client_id=dna-cli -d "refresh_token=$REFRESH_TOKEN")',
            *_KEEP,
            "",
            "# 5. A backend (dna-backend, secret dna-backend-secret) exchanges alice's token "
            "for one the review service accepts (RFC 8693), then asks whether alice's token "
            "is still good (RFC 7662):",
            f"curl -s -w '\\n' {backend} {iss}/token "
            "-d grant_type=urn:ietf:params:oauth:grant-type:token-exchange "
            "-d subject_token_type=urn:ietf:params:oauth:token-type:access_token "
            '-d "subject_token=$ACCESS_TOKEN" -d audience=review-api',
            f"curl -s -w '\\n' {backend} {iss}/introspect -d \"token=$ACCESS_TOKEN\"",
            "",
            "# 6. Sign in in a browser (authorization code with PKCE, client dna-frontend): "
            "open this URL and sign in as alice.",
            authorize,
            "# The browser lands on http://127.0.0.1/callback?code=... where nothing listens: "
            "copy the code from the address bar (it works once, within 60 s) and redeem it "
            f"with the PKCE verifier {tour.verifier}:",
            f"CODE={CODE_PLACEHOLDER}",
            f"curl -s -w '\\n' -X POST {iss}/token -d grant_type=authorization_code "
            "-d client_id=dna-frontend -d redirect_uri=http://127.0.0.1/callback "
            f'-d code_verifier={tour.verifier} -d "code=$CODE"',
            "",
            "# 7. This demo's signing keys and clients (`keys` and `clients` read BROKER_STORE_URL "
            "and BROKER_SECRET_KEY; --data-dir points them at a demo instead):",
            f"{tour.program} keys list --data-dir {data}",
            f"{tour.program} clients list --data-dir {data}",
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


def run_demo(
    host: str,
    port: int,
    shotgrid_port: int,
    data_dir: str,
    *,
    log_format: str | None = None,
    program: str | None = None,
) -> int:
    """Serve the demo until interrupted. `log_format`: the `--log-format` flag; without
    it `BROKER_LOG_FORMAT` decides when set, else `console` (a person is watching).
    Raises `DemoDataError`, `SettingsError`, `ListenError` or `PreflightError` for what
    the person can fix, before anything is served."""
    import uvicorn

    from broker.app import create_app
    from broker.listen import listen_socket
    from broker.preflight import check_store
    from broker.serving import server_options
    from broker.settings import env_name, load_settings
    from shotgrid_emulator import IDLE_KEEPALIVE_SECONDS, ShotGridEmulator

    directory = Path(data_dir)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        overrides = demo_overrides(host, port, shotgrid_port, directory)
    except OSError as exc:
        raise DemoDataError(f"--data-dir {data_dir}: {exc.strerror or exc}") from None
    if log_format is not None:
        overrides["log_format"] = log_format
    elif env_name("log_format") not in os.environ:
        overrides["log_format"] = "console"
    settings = load_settings(**overrides)
    check_store(settings)  # a secret.key that does not open the keys in broker.db
    from broker.logs import configure_logging, get_logger

    configure_logging(settings.log_level, settings.log_format)
    from broker.contrast import accent_warning

    warning = accent_warning(settings.accent_color)
    if warning:
        get_logger("broker.demo").warning(warning)
    emulator = ShotGridEmulator.default()
    app = create_app(settings, seed_clients=demo_clients())
    sockets = [listen_socket(host, shotgrid_port), listen_socket(host, port)]
    verifier, challenge = pkce_pair()
    assert settings.issuer and settings.shotgrid_url
    tour = Tour(
        issuer=settings.issuer,
        shotgrid_url=settings.shotgrid_url,
        data_dir=data_dir,
        program=program or program_name(),
        verifier=verifier,
        challenge=challenge,
    )

    async def main() -> None:
        # Logging is ours, as in `serve`: uvicorn installing its own configuration would
        # give its loggers handlers of their own, and its access logger a handler makes
        # it format the client address and path of every request, to drop the line.
        ours: dict[str, Any] = {"log_level": "warning", "log_config": None, "access_log": False}
        servers = [
            uvicorn.Server(
                uvicorn.Config(emulator.app, timeout_keep_alive=IDLE_KEEPALIVE_SECONDS, **ours)
            ),
            # The same parser, bounds, timeouts and proxy handling as `serve`.
            uvicorn.Server(uvicorn.Config(app, **ours, **server_options(settings))),
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
            print(banner(tour), flush=True)
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
