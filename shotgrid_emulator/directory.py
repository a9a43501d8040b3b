"""The emulated site's directory: HumanUsers, the ApiUser (script) and Projects.

Passwords and script keys are held only as salted PBKDF2-HMAC-SHA256 hashes. The iteration
count is deliberately low (1000): this is a test double, and hundreds of logins per test
run must stay fast. It is not a production password store.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shotgrid_emulator.totp import InvalidSecret, decode_secret

_ITERATIONS = 1000
_AUTH_METHODS = ("default", "ldap", "saml2", "oxygen")
# Permission groups (PermissionRuleSet entities) every site has. The names are ShotGrid's
# stock roles; the ids are arbitrary but stable (ASSUMED: real ids differ per site).
DEFAULT_PERMISSION_RULE_SETS = {"Admin": 5, "Manager": 7, "Artist": 8}


class DirectoryError(ValueError):
    """A users file that cannot be loaded; the message is one line naming the problem."""


@dataclass(frozen=True, slots=True)
class Secret:
    """A salted hash of a password or script key; the plain text is not kept."""

    salt: bytes
    digest: bytes

    @classmethod
    def of(cls, plain: str) -> Secret:
        salt = secrets.token_bytes(16)
        return cls(salt, _derive(plain, salt))

    def matches(self, plain: str) -> bool:
        return hmac.compare_digest(self.digest, _derive(plain, self.salt))

    def __repr__(self) -> str:
        return "Secret(***)"


def _derive(plain: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", plain.encode(), salt, _ITERATIONS)


# Compared against when the login is unknown, so an unknown user costs the same as a
# wrong password (no user enumeration by timing).
_DUMMY = Secret.of(secrets.token_urlsafe(16))


@dataclass(slots=True)
class HumanUser:
    id: int
    login: str
    email: str
    name: str
    password: Secret | None
    projects: list[int] = field(default_factory=list)
    sg_status_list: str = "act"
    two_factor: bool = False
    """Two-factor authentication required: a password alone is refused (code 106)."""
    sso_only: bool = False
    """Signs in through SSO only: legacy username/password refused (code 108)."""
    can_impersonate_this_user: bool = True
    may_sudo: bool = False
    """Emulator-internal: the permission "allow 'sudo'" of the user's role."""
    retired: bool = False
    permission_rule_set: str = "Artist"
    """The name of the user's permission group (a PermissionRuleSet)."""
    totp_secret: str | None = field(default=None, repr=False)
    """Base32 RFC 6238 secret of a `two_factor` user; without one no code is ever valid."""

    @property
    def active(self) -> bool:
        return self.sg_status_list == "act"

    @property
    def firstname(self) -> str:
        return self.name.split(" ", 1)[0]

    @property
    def lastname(self) -> str:
        parts = self.name.split(" ", 1)
        return parts[1] if len(parts) > 1 else ""


@dataclass(slots=True)
class Script:
    """An ApiUser. Its `firstname` is the script name (research §8.1)."""

    id: int
    name: str
    key: Secret
    may_sudo: bool = True


@dataclass(slots=True)
class Project:
    id: int
    name: str
    sg_status_list: str = "Active"


@dataclass(slots=True)
class Directory:
    users: list[HumanUser]
    scripts: list[Script]
    projects: list[Project]
    user_authentication_method: str = "default"
    site_name: str = "emulator"
    app_session_launcher_enabled: bool = False
    """Site info's `authentication_app_session_launcher_enabled` (research §1.5, §6)."""
    permission_rule_sets: dict[str, int] = field(
        default_factory=lambda: dict(DEFAULT_PERMISSION_RULE_SETS)
    )
    """Permission group name -> PermissionRuleSet id."""

    def user(self, login: str, *, include_retired: bool = False) -> HumanUser | None:
        for user in self.users:
            if user.login == login and (include_retired or not user.retired):
                return user
        return None

    def user_by_id(self, user_id: int) -> HumanUser | None:
        for user in self.users:
            if user.id == user_id and not user.retired:
                return user
        return None

    def script(self, name: str) -> Script | None:
        return next((s for s in self.scripts if s.name == name), None)

    def script_by_id(self, script_id: int) -> Script | None:
        return next((s for s in self.scripts if s.id == script_id), None)

    def project(self, project_id: int) -> Project | None:
        return next((p for p in self.projects if p.id == project_id), None)

    def check_password(self, login: str, password: str) -> HumanUser | None:
        """The user whose password this is, or None (same cost for unknown logins)."""
        user = self.user(login)
        secret = user.password if user is not None and user.password is not None else _DUMMY
        ok = secret.matches(password)
        return user if ok and user is not None and user.password is not None else None

    @classmethod
    def demo(cls) -> Directory:
        """The contract's demo site (CONTRACT.md, "Demo users")."""

        def user(uid: int, login: str, name: str, projects: Iterable[int], **kw: Any) -> HumanUser:
            return HumanUser(
                id=uid,
                login=login,
                email=f"{login}@example.com",
                name=name,
                password=Secret.of(f"{login}-pw"),
                projects=list(projects),
                **kw,
            )

        return cls(
            users=[
                user(101, "alice", "Alice Artist", [201, 202]),
                user(102, "bob", "Bob Builder", [202, 203]),
                user(103, "carol", "Carol Coordinator", [201], sg_status_list="dis"),
                user(
                    104,
                    "dave",
                    "Dave Director",
                    [203],
                    two_factor=True,
                    totp_secret="JBSWY3DPEHPK3PXP",
                ),
                user(105, "erin", "Erin Editor", [202], sso_only=True),
                user(106, "frank", "Frank Admin", [201, 202, 203], permission_rule_set="Admin"),
            ],
            scripts=[Script(id=301, name="token-broker", key=Secret.of("token-broker-key"))],
            projects=[
                Project(201, "Spring Shorts"),
                Project(202, "Harbor Lights"),
                Project(203, "Night Market"),
            ],
            app_session_launcher_enabled=True,
        )

    @classmethod
    def from_toml_file(cls, path: str | Path) -> Directory:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise DirectoryError(f"cannot read users file {str(path)!r}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise DirectoryError(f"users file {str(path)!r} is not valid TOML: {exc}") from exc
        try:
            return cls.from_mapping(data)
        except DirectoryError as exc:
            raise DirectoryError(f"users file {str(path)!r}: {exc}") from exc

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Directory:
        site = _table(data, "site", "site")
        method = _get(site, "user_authentication_method", str, "site", "default")
        if method not in _AUTH_METHODS:
            raise DirectoryError(f"site.user_authentication_method must be one of {_AUTH_METHODS}")
        asl = _get(site, "authentication_app_session_launcher_enabled", bool, "site", False)
        rule_sets = dict(DEFAULT_PERMISSION_RULE_SETS)
        projects = [
            Project(
                id=_get(p, "id", int, f"projects[{i}]"),
                name=_get(p, "name", str, f"projects[{i}]"),
            )
            for i, p in enumerate(_array(data, "projects"))
        ]
        project_ids = {p.id for p in projects}
        users = []
        for i, u in enumerate(_array(data, "users")):
            where = f"users[{i}]"
            password = _get(u, "password", str, where, "")
            status = _get(u, "sg_status_list", str, where, "act")
            if status not in ("act", "dis"):
                raise DirectoryError(f"{where}.sg_status_list must be 'act' or 'dis'")
            member_of = _get(u, "projects", list, where, [])
            for pid in member_of:
                if pid not in project_ids:
                    raise DirectoryError(f"{where}.projects names unknown project {pid!r}")
            two_factor = _get(u, "two_factor", bool, where, False)
            totp_secret = _get(u, "totp_secret", str, where, None)
            if totp_secret is not None:
                if not two_factor:
                    raise DirectoryError(f"{where}.totp_secret needs two_factor = true")
                try:
                    decode_secret(totp_secret)
                except InvalidSecret as exc:
                    raise DirectoryError(f"{where}.totp_secret: {exc}") from exc
            group = _get(u, "permission_rule_set", str, where, "Artist")
            if not group:
                raise DirectoryError(f"{where}.permission_rule_set must not be empty")
            # A group the stock set lacks is a custom one the site defined (ASSUMED ids).
            rule_sets.setdefault(group, max(rule_sets.values()) + 1)
            users.append(
                HumanUser(
                    id=_get(u, "id", int, where),
                    login=_get(u, "login", str, where),
                    email=_get(u, "email", str, where, ""),
                    name=_get(u, "name", str, where, ""),
                    password=Secret.of(password) if password else None,
                    projects=list(member_of),
                    sg_status_list=status,
                    two_factor=two_factor,
                    totp_secret=totp_secret,
                    sso_only=_get(u, "sso_only", bool, where, False),
                    can_impersonate_this_user=_get(
                        u, "can_impersonate_this_user", bool, where, True
                    ),
                    may_sudo=_get(u, "may_sudo", bool, where, False),
                    retired=_get(u, "retired", bool, where, False),
                    permission_rule_set=group,
                )
            )
        scripts = [
            Script(
                id=_get(s, "id", int, f"scripts[{i}]"),
                name=_get(s, "name", str, f"scripts[{i}]"),
                key=Secret.of(_get(s, "key", str, f"scripts[{i}]")),
                may_sudo=_get(s, "may_sudo", bool, f"scripts[{i}]", True),
            )
            for i, s in enumerate(_array(data, "scripts"))
        ]
        _unique([u.id for u in users] + [s.id for s in scripts], "user/script id")
        _unique([u.login for u in users if not u.retired], "users.login")
        _unique([s.name for s in scripts], "scripts.name")
        _unique([p.id for p in projects], "projects.id")
        return cls(
            users=users,
            scripts=scripts,
            projects=projects,
            user_authentication_method=method,
            site_name=_get(site, "name", str, "site", "emulator"),
            app_session_launcher_enabled=asl,
            permission_rule_sets=rule_sets,
        )


_MISSING: Any = object()


def _table(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise DirectoryError(f"{where} must be a table")
    return value


def _array(data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise DirectoryError(f"{key} must be an array of tables ([[{key}]])")
    return value


def _get(
    table: Mapping[str, Any], key: str, kind: type, where: str, default: Any = _MISSING
) -> Any:
    if key not in table:
        if default is _MISSING:
            raise DirectoryError(f"{where}.{key} is required")
        return default
    value = table[key]
    # bool is a subclass of int: an `id = true` must not pass as 1.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DirectoryError(f"{where}.{key} must be of type {kind.__name__}")
    return value


def _unique(values: list[Any], what: str) -> None:
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise DirectoryError(f"duplicate {what} {value!r}")
        seen.add(value)
