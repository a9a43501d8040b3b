"""The `token-broker` command line: argument parsing only, each command calls into the core.

Every command exits non-zero with a single line on stderr for bad arguments or settings,
as ../CONTRACT.md requires; tracebacks are for bugs, not for operator mistakes.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from broker.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from broker.admin import Admin

CONFIG_ENV = "TOKEN_BROKER_CONFIG"
PORT_ENV = "TOKEN_BROKER_PORT"
GRACEFUL_SHUTDOWN_SECONDS = 30
"""How long `serve` waits for in-flight requests after SIGTERM before closing them."""


class CommandError(Exception):
    """An operator mistake: printed one line per problem, exit status 2."""


def _settings(
    args: argparse.Namespace, check: Callable[[Settings], list[str]] | None = None
) -> Settings:
    overrides: dict[str, Any] = {}
    data_dir = getattr(args, "data_dir", None)
    if data_dir:
        from broker.demo import DemoDataError, data_dir_settings

        try:
            overrides = data_dir_settings(Path(data_dir))
        except DemoDataError as exc:
            raise CommandError(str(exc)) from None
    try:
        return load_settings(
            getattr(args, "config", None) or os.environ.get(CONFIG_ENV), check=check, **overrides
        )
    except SettingsError as exc:
        raise CommandError(str(exc)) from None


def _cmd_demo(args: argparse.Namespace) -> int:
    from broker.demo import DemoDataError, run_demo
    from broker.listen import ListenError
    from broker.preflight import PreflightError, WrongKeyError

    try:
        return run_demo(
            args.host, args.port, args.shotgrid_port, args.data_dir, log_format=args.log_format
        )
    except WrongKeyError:
        raise CommandError(_demo_wrong_key(args.data_dir)) from None
    except (SettingsError, ListenError, DemoDataError, PreflightError) as exc:
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


def _serve_problems(settings: Settings) -> list[str]:
    from broker.preflight import store_url_problems

    return settings.production_problems() + store_url_problems(settings.store_url)


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from broker.listen import ListenError, check_listen
    from broker.preflight import PreflightError, check_store

    if args.workers < 1:
        raise CommandError("--workers must be at least 1")
    settings = _settings(args, check=_serve_problems)
    try:
        warning = check_store(settings)
        check_listen(args.host, args.port)
    except (PreflightError, ListenError) as exc:
        raise CommandError(str(exc)) from None
    if args.config:
        os.environ[CONFIG_ENV] = str(args.config)
    from broker.contrast import accent_warning
    from broker.logs import configure_logging, get_logger
    from broker.serving import multiprocess_metrics, server_options

    configure_logging(settings.log_level, settings.log_format)
    log = get_logger("broker.cli")
    for line in (warning, accent_warning(settings.accent_color)):
        if line:
            log.warning(line)
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


def _admin_command(
    func: Callable[[argparse.Namespace, Admin], int], *, read_only: bool = False
) -> Callable[[argparse.Namespace], int]:
    """A `keys` or `clients` command: settings checked (store URL, key-encryption key),
    the store opened, and every failure of the store or the keys turned into one line
    naming the setting. `read_only` commands refuse a SQLite file that does not exist."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        from broker.admin import AdminError, admin_problems, open_admin
        from broker.client_policy import ClientPolicyError
        from broker.preflight import (
            STORE_URL,
            redact_url,
            unreachable_message,
            wrong_key_message,
        )
        from broker.store import StoreError, StoreUnavailable
        from broker.tokens.crypto import DecryptionError
        from broker.tokens.keys import KeyError_

        settings = _settings(args, check=functools.partial(admin_problems, read_only=read_only))
        assert settings.store_url is not None
        shown = redact_url(settings.store_url)
        try:
            admin = open_admin(settings)
            try:
                return func(args, admin)
            finally:
                admin.store.close()
        except ClientPolicyError as exc:
            raise CommandError(f"{CLIENT_OPTIONS.get(exc.field, exc.field)}: {exc}") from None
        except (AdminError, KeyError_) as exc:
            raise CommandError(str(exc)) from None
        except StoreUnavailable as exc:
            raise CommandError(
                unreachable_message(shown, exc) + "; check that it runs and that the URL names it"
            ) from None
        except DecryptionError:
            if getattr(args, "data_dir", None):
                raise CommandError(_demo_wrong_key(args.data_dir)) from None
            raise CommandError(wrong_key_message(shown)) from None
        except StoreError as exc:
            raise CommandError(f"{STORE_URL}: {exc}") from None

    return run


def _demo_wrong_key(data_dir: str) -> str:
    return (
        f"--data-dir {data_dir}: its secret.key does not open the signing keys in its "
        "broker.db (was one of them replaced?); start the demo on a new --data-dir"
    )


CLIENT_OPTIONS = {
    "client_id": "CLIENT_ID",
    "name": "--name",
    "grant_types": "--grant",
    "redirect_uris": "--redirect-uri",
    "post_logout_redirect_uris": "--post-logout-redirect-uri",
    "allowed_origins": "--origin",
    "scopes": "--scope",
    "audiences": "--audience",
    "may_introspect": "--introspect",
    "may_exchange_shotgrid": "--shotgrid-exchange",
    "max_exchange_lifetime": "--max-exchange-lifetime",
    "backchannel_logout_uri": "--backchannel-logout-uri",
}
"""The option of `clients add`/`update` that sets each field `client_policy` may name."""


def _keys_list(args: argparse.Namespace, admin: Admin) -> int:
    from broker.admin import key_rows

    rows = key_rows(admin)
    print(f"{'KID':<45} {'ALG':<6} {'STATE':<8} CREATED")
    for kid, alg, state, created in rows:
        print(f"{kid:<45} {alg:<6} {state:<8} {created}")
    return 0


def _keys_rotate(args: argparse.Namespace, admin: Admin) -> int:
    from broker.admin import rotate_keys

    rotated, warnings = rotate_keys(admin)
    for warning in warnings:
        print(f"token-broker: warning: {warning}", file=sys.stderr)
    for current, nxt in rotated:
        print(f"signing with {current}; next key {nxt} published")
    return 0


def _keys_retire(args: argparse.Namespace, admin: Admin) -> int:
    from broker.admin import retire_key

    replacement = retire_key(admin, args.kid)
    print(f"retired {args.kid}; unpublished once the tokens it signed have expired")
    if replacement:
        print(f"next key {replacement} published in its place")
    return 0


def _clients_list(args: argparse.Namespace, admin: Admin) -> int:
    clients = admin.store.list_clients()
    for c in clients:
        kind = "public" if c.public else "confidential"
        print(f"{c.client_id}\t{kind}\t{' '.join(c.grant_types)}\t{' '.join(c.redirect_uris)}")
    if not clients:
        from broker.preflight import redact_url

        assert admin.settings.store_url is not None
        shown = redact_url(admin.settings.store_url)
        print(f"token-broker: no clients registered in {shown}", file=sys.stderr)
    return 0


def _clients_add(args: argparse.Namespace, admin: Admin) -> int:
    from broker.admin import add_client, limits_of

    record, secret = add_client(
        admin.store,
        limits_of(admin.settings),
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
        backchannel_logout_uri=args.backchannel_logout_uri,
        name=args.name or "",
        replace_existing=args.replace,
        admin=args.admin,
    )
    print(f"added client {record.client_id}")
    if secret:
        print(f"client secret (shown once, store it now): {secret}")
    return 0


def _clients_update(args: argparse.Namespace, admin: Admin) -> int:
    from broker.admin import limits_of, policy_line, update_client

    record = update_client(
        admin.store,
        limits_of(admin.settings),
        args.client_id,
        grants=args.grant,
        scopes=args.scope,
        audiences=[] if args.no_audiences else args.audience,
        may_introspect=args.introspect,
        may_exchange_shotgrid=args.shotgrid_exchange,
        max_exchange_lifetime=args.max_exchange_lifetime,
        admin=args.admin,
        backchannel_logout_uri=args.backchannel_logout_uri,
        no_backchannel_logout_uri=args.no_backchannel_logout_uri,
    )
    print(f"updated {policy_line(record)}")
    return 0


def _clients_remove(args: argparse.Namespace, admin: Admin) -> int:
    from broker.admin import remove_client

    remove_client(admin.store, args.client_id)
    print(f"removed client {args.client_id}")
    return 0


_cmd_keys_list = _admin_command(_keys_list, read_only=True)
_cmd_keys_rotate = _admin_command(_keys_rotate)
_cmd_keys_retire = _admin_command(_keys_retire)
_cmd_clients_list = _admin_command(_clients_list, read_only=True)
_cmd_clients_add = _admin_command(_clients_add)
_cmd_clients_update = _admin_command(_clients_update)
_cmd_clients_remove = _admin_command(_clients_remove)


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


CLIENT_MISSING = "token-broker login needs the client library: pip install shotgrid-broker-client"


def _cmd_login(args: argparse.Namespace) -> int:
    """The device flow for shells: the URL and code go to stderr, the access token to
    stdout (for `TOKEN=$(token-broker login ...)`); tokens are cached per user, so the
    next call prints a cached or refreshed token without asking again."""
    try:
        from broker_client.login import DeviceLogin, LoginError, TokenCache
    except ImportError:
        raise CommandError(CLIENT_MISSING) from None
    cache = TokenCache(args.cache) if args.cache else TokenCache()
    try:
        with DeviceLogin(args.issuer, args.client_id, scope=args.scope, cache=cache) as login:
            if args.new:
                cache.delete(login.issuer, login.client_id)
            token = login.access_token()
    except LoginError as exc:
        raise CommandError(str(exc)) from None
    print(token, flush=True)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the contract), not a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def _port(text: str, *, lowest: int = 1) -> int:
    """A TCP port argument; uvicorn would log 99999 and listen on a port of the kernel's
    choosing, and the issuer would name the wrong one."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not lowest <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port ({lowest}-65535)")
    return port


def _store_options(group: bool) -> _Parser:
    """`--config` and `--data-dir` of `keys` and `clients`, accepted before or after the
    action (`clients --data-dir D list`, `clients list --data-dir D`)."""
    options = _Parser(add_help=False)
    default = None if group else argparse.SUPPRESS
    options.add_argument("--config", metavar="FILE", default=default, help="TOML settings file")
    options.add_argument(
        "--data-dir",
        metavar="DIR",
        default=default,
        help="the store and key-encryption key of a demo's data dir (e.g. .broker-demo), "
        "instead of BROKER_STORE_URL and BROKER_SECRET_KEY",
    )
    return options


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
    demo.add_argument("--port", type=_port, default=8000)
    demo.add_argument("--shotgrid-port", type=_port, default=8100)
    demo.add_argument("--data-dir", default=".broker-demo")
    demo.add_argument(
        "--log-format",
        choices=("console", "json"),
        help="log lines for people (console) or machines (json); default: BROKER_LOG_FORMAT "
        "when set, else console",
    )
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
        type=_port,
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
    emu.add_argument(
        "--port",
        type=functools.partial(_port, lowest=0),
        default=8100,
        help="0: any free port (the printed URL names it)",
    )
    emu.add_argument("--users", metavar="FILE", help="TOML directory of users and projects")
    emu.set_defaults(func=_cmd_shotgrid_emulator)

    group_options, action_options = [_store_options(True)], [_store_options(False)]
    store_help = (
        "The store and key-encryption key come from BROKER_STORE_URL and BROKER_SECRET_KEY "
        "(or --config FILE), or from a demo's data dir with --data-dir DIR."
    )
    keys = sub.add_parser(
        "keys",
        help="manage signing keys",
        description=f"Signing keys. {store_help}",
        parents=group_options,
    )
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    keys_sub.add_parser(
        "list", help="list keys (kid, alg, state, created)", parents=action_options
    ).set_defaults(func=_cmd_keys_list)
    keys_sub.add_parser(
        "rotate",
        help="promote the next key to signing and publish a new next key",
        parents=action_options,
    ).set_defaults(func=_cmd_keys_rotate)
    retire = keys_sub.add_parser(
        "retire",
        help="retire a key that does not sign (retiring the next key publishes a new one)",
        parents=action_options,
    )
    retire.add_argument("kid")
    retire.set_defaults(func=_cmd_keys_retire)

    clients = sub.add_parser(
        "clients",
        help="manage the OAuth client registry",
        description=f"OAuth clients. {store_help}",
        parents=group_options,
    )
    clients_sub = clients.add_subparsers(dest="clients_command", required=True, metavar="ACTION")
    clients_sub.add_parser(
        "list", help="list registered clients", parents=action_options
    ).set_defaults(func=_cmd_clients_list)
    add = clients_sub.add_parser(
        "add",
        help="register a client",
        description="Register a client: at least one --grant; authorization_code also needs "
        "a --redirect-uri (https, http on 127.0.0.1/[::1]/localhost, or a native app's "
        "com.example.app:/path). A confidential client's secret is generated and printed once.",
        parents=action_options,
    )
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
        "--grant",
        action="append",
        required=True,
        metavar="GRANT_TYPE",
        help="allowed grant type (required; repeat): password, refresh_token, "
        "authorization_code, client_credentials, urn:ietf:params:oauth:grant-type:token-exchange",
    )
    add.add_argument(
        "--redirect-uri",
        action="append",
        metavar="URI",
        help="registered redirect URI (repeat): https://..., http://127.0.0.1/... (loopback "
        "URIs match any port) or com.example.app:/path; no #fragment",
    )
    add.add_argument(
        "--post-logout-redirect-uri",
        action="append",
        metavar="URI",
        help="where RP-initiated logout may send the browser (repeat; same rules)",
    )
    add.add_argument(
        "--origin",
        action="append",
        metavar="ORIGIN",
        help="extra CORS origin beyond those of the redirect URIs: https://host[:port], no path",
    )
    add.add_argument(
        "--scope",
        action="append",
        metavar="SCOPE",
        help="allowed scope (repeat; default: openid profile email offline_access)",
    )
    add.add_argument(
        "--audience",
        action="append",
        metavar="AUD",
        help="audience the client may request by token exchange (repeat; one of BROKER_AUDIENCES)",
    )
    add.add_argument(
        "--introspect", action="store_true", help="may call /introspect (confidential only)"
    )
    add.add_argument(
        "--shotgrid-exchange",
        action="store_true",
        help="may exchange tokens for ShotGrid tokens (confidential, with the exchange grant)",
    )
    add.add_argument(
        "--max-exchange-lifetime",
        type=int,
        metavar="SECONDS",
        help="how long an exchanged token may outlive its subject (0 or more; default: not at all)",
    )
    add.add_argument(
        "--admin",
        action="store_true",
        help="may use the admin API (client_credentials with scope admin; confidential only)",
    )
    add.add_argument(
        "--backchannel-logout-uri",
        metavar="URI",
        help="where the broker POSTs a logout token when a session of this client ends "
        "(https, or http on loopback)",
    )
    add.add_argument("--replace", action="store_true", help="overwrite an existing client")
    add.set_defaults(func=_cmd_clients_add)
    update = clients_sub.add_parser(
        "update",
        help="change a client's grants, scopes or token-exchange policy (secret kept)",
        description="Options not given keep their value; list options replace the list.",
        parents=action_options,
    )
    update.add_argument("client_id")
    update.add_argument(
        "--grant", action="append", metavar="GRANT_TYPE", help="allowed grant type (repeat)"
    )
    update.add_argument("--scope", action="append", metavar="SCOPE", help="allowed scope (repeat)")
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
    update.add_argument(
        "--admin",
        action=argparse.BooleanOptionalAction,
        help="give or take the right to use the admin API",
    )
    backchannel = update.add_mutually_exclusive_group()
    backchannel.add_argument(
        "--backchannel-logout-uri",
        metavar="URI",
        help="where the broker POSTs a logout token when a session of this client ends",
    )
    backchannel.add_argument(
        "--no-backchannel-logout-uri",
        action="store_true",
        help="stop sending this client back-channel logouts",
    )
    update.set_defaults(func=_cmd_clients_update)
    remove = clients_sub.add_parser("remove", help="remove a client", parents=action_options)
    remove.add_argument("client_id")
    remove.set_defaults(func=_cmd_clients_remove)

    login = sub.add_parser(
        "login",
        help="sign in with the device flow and print an access token",
        description="Sign a person in with the broker's device flow (the URL and code go to "
        "stderr), keep the tokens in the per-user cache of broker_client.login, and print "
        "an access token on stdout. Needs the shotgrid-broker-client package.",
    )
    login.add_argument("--issuer", required=True, metavar="URL", help="the broker's issuer URL")
    login.add_argument("--client-id", required=True, metavar="ID", help="e.g. dna-cli")
    login.add_argument(
        "--scope",
        default="openid profile email offline_access",
        help="space-separated scopes (default: %(default)s)",
    )
    login.add_argument("--cache", metavar="FILE", help="token cache file (default: per user)")
    login.add_argument("--new", action="store_true", help="ignore cached tokens and sign in again")
    login.set_defaults(func=_cmd_login)
    return parser


_VALUED_OPTIONS = frozenset({"--data-dir", "--config"})


def _kid_as_positional(argv: Sequence[str]) -> list[str]:
    """`keys retire KID`: kids are base64url, so one may begin with '-', which argparse
    would take for an unknown option. The first bare word after `retire` is the kid: pass
    it after `--` so it is read as one."""
    args = list(argv)
    try:
        start = args.index("retire", args.index("keys")) + 1
    except ValueError:
        return args
    i = start
    while i < len(args):
        token = args[i]
        if token == "--":
            return args
        if token.split("=", 1)[0] in _VALUED_OPTIONS:
            i += 1 if "=" in token else 2
            continue
        if token in ("-h", "--help"):
            return args
        if token.startswith("-") and len(token) > 1:
            return [*args[:i], *args[i + 1 :], "--", token]
        return args
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_kid_as_positional(sys.argv[1:] if argv is None else argv))
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except CommandError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"token-broker: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
