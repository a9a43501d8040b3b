"""The `token-broker` command line: argument parsing only, each command calls into the core.

Every command exits non-zero with a single line on stderr for bad arguments or settings,
as ../CONTRACT.md requires; tracebacks are for bugs, not for operator mistakes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


class CommandError(Exception):
    """An operator mistake: printed as one line, exit status 2."""


def _not_implemented(name: str) -> Callable[[argparse.Namespace], int]:
    def run(_: argparse.Namespace) -> int:
        raise CommandError(f"`token-broker {name}` is not implemented yet")

    return run


def _cmd_shotgrid_emulator(args: argparse.Namespace) -> int:
    from broker.upstream.emulator import run_emulator_cli

    return run_emulator_cli(host=args.host, port=args.port, users_file=args.users)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    demo.set_defaults(func=_not_implemented("demo"))

    serve = sub.add_parser(
        "serve",
        help="run the broker for production (settings from BROKER_* or --config)",
        description="Production server. Settings come from BROKER_* environment variables, "
        "then the TOML file given with --config, then defaults.",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--config", metavar="FILE", help="TOML settings file")
    serve.set_defaults(func=_not_implemented("serve"))

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
        func=_not_implemented("keys list")
    )
    keys_sub.add_parser(
        "rotate", help="promote the next key to signing and publish a new next key"
    ).set_defaults(func=_not_implemented("keys rotate"))
    retire = keys_sub.add_parser("retire", help="retire a key by kid")
    retire.add_argument("kid")
    retire.set_defaults(func=_not_implemented("keys retire"))

    clients = sub.add_parser(
        "clients", help="manage the OAuth client registry", description="OAuth clients."
    )
    clients.add_argument("--config", metavar="FILE", help="TOML settings file")
    clients_sub = clients.add_subparsers(dest="clients_command", required=True, metavar="ACTION")
    clients_sub.add_parser("list", help="list registered clients").set_defaults(
        func=_not_implemented("clients list")
    )
    add = clients_sub.add_parser("add", help="register a client")
    add.add_argument("client_id")
    add.set_defaults(func=_not_implemented("clients add"))
    remove = clients_sub.add_parser("remove", help="remove a client")
    remove.add_argument("client_id")
    remove.set_defaults(func=_not_implemented("clients remove"))
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
