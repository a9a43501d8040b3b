"""The `token-broker` command line: argument parsing only, each command calls into the core.

Every command exits non-zero with a single line on stderr for bad arguments or settings,
as ../CONTRACT.md requires; tracebacks are for bugs, not for operator mistakes.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from broker.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from broker.admin import Admin

CONFIG_ENV = "TOKEN_BROKER_CONFIG"
PORT_ENV = "TOKEN_BROKER_PORT"
GRACEFUL_SHUTDOWN_SECONDS = 30
"""How long `serve` waits for in-flight requests after SIGTERM before closing them."""


class CommandError(Exception):
    """An operator mistake: printed as one line, exit status 2."""


def _settings(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(getattr(args, "config", None) or os.environ.get(CONFIG_ENV))
    except SettingsError as exc:
        raise CommandError(str(exc)) from None


def _admin_broker(args: argparse.Namespace) -> Admin:
    from broker.admin import AdminError, open_admin
    from broker.store import StoreError

    try:
        return open_admin(_settings(args))
    except (AdminError, StoreError) as exc:
        raise CommandError(str(exc)) from None


def _cmd_demo(args: argparse.Namespace) -> int:
    from broker.demo import run_demo
    from broker.listen import ListenError

    try:
        return run_demo(args.host, args.port, args.shotgrid_port, args.data_dir)
    except (SettingsError, ListenError) as exc:
        raise CommandError(str(exc)) from None


SERVER_OPTIONS: dict[str, Any] = {
    # Logging is ours (JSON lines with request ids); the middleware logs each request.
    "log_config": None,
    "access_log": False,
    # Graceful shutdown: on SIGTERM stop accepting, let in-flight requests finish (up to
    # this many seconds), then the lifespan closes the store and the upstream client.
    "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
}
"""uvicorn options of `serve` beyond those of the settings (`broker.serving.server_options`:
parser, timeouts, connection cap, no forwarded headers; tests run with exactly those)."""


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings(args)
    problems = settings.production_problems()
    if problems:
        for problem in problems:
            print(f"token-broker: {problem}", file=sys.stderr)
        return 2
    if args.workers < 1:
        raise CommandError("--workers must be at least 1")
    if args.config:
        os.environ[CONFIG_ENV] = str(args.config)
    from broker.logs import configure_logging
    from broker.serving import check_store, multiprocess_metrics, server_options

    configure_logging(settings.log_level, settings.log_format)
    store_problem = check_store(settings)
    if store_problem:
        raise CommandError(store_problem)
    with multiprocess_metrics(args.workers):
        uvicorn.run(
            "broker.app:app_from_environment",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=settings.log_level,
            **server_options(settings),
            **SERVER_OPTIONS,
        )
    return 0


def _cmd_keys_list(args: argparse.Namespace) -> int:
    from broker.admin import key_rows

    broker = _admin_broker(args)
    rows = key_rows(broker)
    print(f"{'KID':<45} {'ALG':<6} {'STATE':<8} CREATED")
    for kid, alg, state, created in rows:
        print(f"{kid:<45} {alg:<6} {state:<8} {created}")
    return 0


def _cmd_keys_rotate(args: argparse.Namespace) -> int:
    from broker.admin import AdminError, rotate_keys

    broker = _admin_broker(args)
    try:
        rotated, warnings = rotate_keys(broker)
    except AdminError as exc:
        raise CommandError(str(exc)) from None
    for warning in warnings:
        print(f"token-broker: warning: {warning}", file=sys.stderr)
    for current, nxt in rotated:
        print(f"signing with {current}; next key {nxt} published")
    return 0


def _cmd_keys_retire(args: argparse.Namespace) -> int:
    from broker.admin import AdminError, retire_key

    broker = _admin_broker(args)
    try:
        retire_key(broker, args.kid)
    except AdminError as exc:
        raise CommandError(str(exc)) from None
    print(f"retired {args.kid}; unpublished once the tokens it signed have expired")
    return 0


def _cmd_clients_list(args: argparse.Namespace) -> int:
    broker = _admin_broker(args)
    for c in broker.store.list_clients():
        kind = "public" if c.public else "confidential"
        print(f"{c.client_id}\t{kind}\t{' '.join(c.grant_types)}\t{' '.join(c.redirect_uris)}")
    return 0


def _cmd_clients_add(args: argparse.Namespace) -> int:
    from broker.admin import AdminError, add_client

    broker = _admin_broker(args)
    try:
        record, secret = add_client(
            broker.store,
            args.client_id,
            confidential=args.confidential,
            grants=args.grant or [],
            redirect_uris=args.redirect_uri or [],
            post_logout_redirect_uris=args.post_logout_redirect_uri or [],
            origins=args.origin or [],
            scopes=args.scope or [],
            audiences=args.audience or [],
            may_introspect=args.introspect,
            may_exchange_shotgrid=args.shotgrid_exchange,
            max_exchange_lifetime=args.max_exchange_lifetime,
            name=args.name or "",
            replace_existing=args.replace,
        )
    except AdminError as exc:
        raise CommandError(str(exc)) from None
    print(f"added client {record.client_id}")
    if secret:
        print(f"client secret (shown once, store it now): {secret}")
    return 0


def _cmd_clients_update(args: argparse.Namespace) -> int:
    from broker.admin import AdminError, policy_line, update_client

    broker = _admin_broker(args)
    try:
        record = update_client(
            broker.store,
            args.client_id,
            grants=args.grant,
            scopes=args.scope,
            audiences=[] if args.no_audiences else args.audience,
            may_introspect=args.introspect,
            may_exchange_shotgrid=args.shotgrid_exchange,
            max_exchange_lifetime=args.max_exchange_lifetime,
        )
    except AdminError as exc:
        raise CommandError(str(exc)) from None
    print(f"updated {policy_line(record)}")
    return 0


def _cmd_clients_remove(args: argparse.Namespace) -> int:
    from broker.admin import AdminError, remove_client

    broker = _admin_broker(args)
    try:
        remove_client(broker.store, args.client_id)
    except AdminError as exc:
        raise CommandError(str(exc)) from None
    print(f"removed client {args.client_id}")
    return 0


def _cmd_shotgrid_emulator(args: argparse.Namespace) -> int:
    """Serve the emulator until interrupted. The socket is bound before the URL is printed,
    so the printed line is true the moment it appears, and a busy port is one line."""
    import uvicorn

    from broker.listen import ListenError, listen_socket
    from shotgrid_emulator import IDLE_KEEPALIVE_SECONDS, DirectoryError, ShotGridEmulator

    try:
        emulator = (
            ShotGridEmulator.from_users_file(args.users)
            if args.users
            else ShotGridEmulator.default()
        )
    except DirectoryError as exc:
        raise CommandError(str(exc)) from exc
    try:
        sock = listen_socket(args.host, args.port)
    except ListenError as exc:
        raise CommandError(str(exc)) from None
    bound_port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"ShotGrid emulator listening on http://{shown}:{bound_port}", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(emulator.app, log_level="warning", timeout_keep_alive=IDLE_KEEPALIVE_SECONDS)
    )
    server.run(sockets=[sock])
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the contract), not a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="token-broker",
        description="OAuth2/OpenID Connect token broker for ShotGrid logins.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run the broker with an embedded ShotGrid emulator, SQLite store and demo clients",
        description="Everything embedded: issuer http://HOST:PORT, SQLite store and keys in "
        "the data dir, the ShotGrid emulator on --shotgrid-port, demo users and clients.",
    )
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--shotgrid-port", type=int, default=8100)
    demo.add_argument("--data-dir", default=".broker-demo")
    demo.set_defaults(func=_cmd_demo)

    serve = sub.add_parser(
        "serve",
        help="run the broker for production (settings from BROKER_* or --config)",
        description="Production server. Settings come from BROKER_* environment variables, "
        "then the TOML file given with --config, then defaults.",
    )
    serve.add_argument("--host", default="127.0.0.1")
    # The image's health check reads the same variable, so the two cannot disagree.
    serve.add_argument(
        "--port",
        type=int,
        default=os.environ.get(PORT_ENV, "8000"),
        help=f"default: ${PORT_ENV}, else 8000",
    )
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--config", metavar="FILE", help="TOML settings file")
    serve.set_defaults(func=_cmd_serve)

    emu = sub.add_parser(
        "shotgrid-emulator",
        help="run the ShotGrid emulator alone",
        description="A ShotGrid site emulator (REST auth + api3 JSON-RPC subset) with the "
        "demo directory, or the users of a TOML file.",
    )
    emu.add_argument("--host", default="127.0.0.1")
    emu.add_argument("--port", type=int, default=8100)
    emu.add_argument("--users", metavar="FILE", help="TOML directory of users and projects")
    emu.set_defaults(func=_cmd_shotgrid_emulator)

    keys = sub.add_parser("keys", help="manage signing keys", description="Signing keys.")
    keys.add_argument("--config", metavar="FILE", help="TOML settings file")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    keys_sub.add_parser("list", help="list keys (kid, alg, state, created)").set_defaults(
        func=_cmd_keys_list
    )
    keys_sub.add_parser(
        "rotate", help="promote the next key to signing and publish a new next key"
    ).set_defaults(func=_cmd_keys_rotate)
    retire = keys_sub.add_parser("retire", help="retire a key by kid")
    retire.add_argument("kid")
    retire.set_defaults(func=_cmd_keys_retire)

    clients = sub.add_parser(
        "clients", help="manage the OAuth client registry", description="OAuth clients."
    )
    clients.add_argument("--config", metavar="FILE", help="TOML settings file")
    clients_sub = clients.add_subparsers(dest="clients_command", required=True, metavar="ACTION")
    clients_sub.add_parser("list", help="list registered clients").set_defaults(
        func=_cmd_clients_list
    )
    add = clients_sub.add_parser("add", help="register a client")
    add.add_argument("client_id")
    kind = add.add_mutually_exclusive_group()
    kind.add_argument(
        "--public",
        dest="confidential",
        action="store_false",
        default=False,
        help="no secret (browser and CLI apps; the default)",
    )
    kind.add_argument(
        "--confidential",
        dest="confidential",
        action="store_true",
        help="generate a client secret, printed once",
    )
    add.add_argument("--name", help="display name")
    add.add_argument(
        "--grant", action="append", metavar="GRANT_TYPE", help="allowed grant type (repeat)"
    )
    add.add_argument(
        "--redirect-uri",
        action="append",
        metavar="URI",
        help="registered redirect URI (repeat); loopback URIs match any port",
    )
    add.add_argument("--post-logout-redirect-uri", action="append", metavar="URI")
    add.add_argument(
        "--origin",
        action="append",
        metavar="ORIGIN",
        help="extra CORS origin beyond those of the redirect URIs",
    )
    add.add_argument("--scope", action="append", metavar="SCOPE", help="allowed scope (repeat)")
    add.add_argument(
        "--audience",
        action="append",
        metavar="AUD",
        help="audience the client may request by token exchange (repeat)",
    )
    add.add_argument("--introspect", action="store_true", help="may call /introspect")
    add.add_argument(
        "--shotgrid-exchange", action="store_true", help="may exchange tokens for ShotGrid tokens"
    )
    add.add_argument("--max-exchange-lifetime", type=int, metavar="SECONDS")
    add.add_argument("--replace", action="store_true", help="overwrite an existing client")
    add.set_defaults(func=_cmd_clients_add)
    update = clients_sub.add_parser(
        "update",
        help="change a client's grants, scopes or token-exchange policy (secret kept)",
        description="Options not given keep their value; list options replace the list.",
    )
    update.add_argument("client_id")
    update.add_argument("--grant", action="append", metavar="GRANT_TYPE")
    update.add_argument("--scope", action="append", metavar="SCOPE")
    audiences = update.add_mutually_exclusive_group()
    audiences.add_argument(
        "--audience",
        action="append",
        metavar="AUD",
        help="audience the client may request by token exchange (repeat; replaces the list)",
    )
    audiences.add_argument("--no-audiences", action="store_true", help="clear the audiences")
    update.add_argument(
        "--introspect", action=argparse.BooleanOptionalAction, help="may call /introspect"
    )
    update.add_argument(
        "--shotgrid-exchange",
        action=argparse.BooleanOptionalAction,
        help="may exchange tokens for ShotGrid tokens",
    )
    update.add_argument(
        "--max-exchange-lifetime",
        type=int,
        metavar="SECONDS",
        help="how long an exchanged token may outlive its subject (0: not at all)",
    )
    update.set_defaults(func=_cmd_clients_update)
    remove = clients_sub.add_parser("remove", help="remove a client")
    remove.add_argument("client_id")
    remove.set_defaults(func=_cmd_clients_remove)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except CommandError as exc:
        print(f"token-broker: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
