"""Typed settings: `BROKER_*` environment variables, then an optional TOML file, then defaults.

Every field is documented by the docstring under it; that text is the README's settings
table (`python -m broker.settings` prints it, and a test keeps the README in step). A
missing or invalid value becomes a `SettingsError` with one line per problem, each naming
its setting, all found in one pass (a command's own requirements included, so fixing one
line never uncovers another that was already wrong); secrets are `SecretStr`, so neither
`repr` nor an error message ever shows them.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import ipaddress
import json
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "BROKER_"

_FILE_VALUES: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "broker_settings_file", default=None
)


class SettingsError(Exception):
    """What is wrong with the settings: `problems`, one line each naming its setting (the
    CLI prints each line and exits 2). `str()` joins them with newlines."""

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class _TomlValues(PydanticBaseSettingsSource):
    """Values of the TOML file given to `load_settings`, below the environment."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_FILE_VALUES.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_VALUES.get() or {})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=True,
        frozen=True,
    )

    # --- identity of the broker ---------------------------------------------------------------
    issuer: str | None = None
    """Public base URL of the broker, exactly as clients see it (no trailing slash); every URL in the metadata derives from it. Required by `serve`."""

    allow_insecure_issuer: bool = False
    """Allow an `http://` issuer outside loopback. Development only: tokens then travel in clear."""

    # --- upstream ShotGrid ---------------------------------------------------------------------
    shotgrid_url: str | None = None
    """Base URL of the ShotGrid site, e.g. `https://studio.shotgrid.autodesk.com`. Required by `serve`."""

    shotgrid_script_name: str | None = None
    """Name of the broker's ShotGrid script (API user): used for upstream re-checks and the `sudo` exchange strategy."""

    shotgrid_script_key: SecretStr | None = None
    """Application key of that script."""

    upstream_strategy: Literal["sudo", "custody"] = "sudo"
    """How the broker gets ShotGrid tokens for a user: `sudo` (script key with `sudo_as_login`, nothing of the user's kept) or `custody` (the user's upstream refresh token kept encrypted)."""

    upstream_connect_timeout: float = Field(3.0, gt=0)
    """Seconds to wait for a TCP/TLS connection to ShotGrid."""

    upstream_read_timeout: float = Field(10.0, gt=0)
    """Seconds to wait for ShotGrid to answer a request."""

    upstream_circuit_failures: int = Field(5, ge=0)
    """Consecutive failed ShotGrid calls (timeouts, connection errors, 5xx) after which the circuit breaker opens and upstream calls fail fast with 503 (0 turns the breaker off)."""

    upstream_circuit_cooldown: float = Field(30.0, gt=0)
    """Seconds the open circuit fails fast before one trial call is let through to ShotGrid."""

    upstream_retries: int = Field(2, ge=0)
    """Extra attempts, with jittered backoff, for idempotent ShotGrid reads (HumanUser lookups) after a connection error or 502/503/504; logins and token calls are never retried."""

    upstream_retry_backoff: float = Field(0.1, ge=0)
    """Base of the exponential backoff between those retries, in seconds (full jitter: a random wait up to base x 2^attempt)."""

    readyz_upstream_timeout: float = Field(2.0, gt=0)
    """Timeout of the ShotGrid reachability probe reported by `/readyz`."""

    readyz_upstream_cache: float = Field(5.0, ge=0)
    """Seconds a `/readyz` ShotGrid probe result is reused, so frequent probes do not hammer ShotGrid."""

    upstream_recheck: int = Field(900, ge=0)
    """Seconds between re-checks, at refresh time, that the user is still active in ShotGrid; also how long the admin page trusts a person's permission group before reading it again."""

    upstream_recheck_max_stale: int = Field(3600, ge=0)
    """While ShotGrid is down, refreshes keep succeeding until the re-check is overdue by this many seconds; then they fail with 503."""

    # --- store and secrets ------------------------------------------------------------------------
    store_url: str | None = None
    """Where state lives: `sqlite:///relative/path/broker.db` (three slashes: relative to the working directory), `sqlite:////var/lib/broker/broker.db` (four: absolute), or `mongodb://host/dbname?replicaSet=rs0`. A SQLite file is created on first use, its directory never. Required by `serve`."""

    secret_key: SecretStr | None = None
    """Key-encryption key: 32 random bytes, base64url-encoded (`python -c "import secrets,base64;print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())"`). Encrypts signing keys and upstream tokens at rest. Required by `serve`."""

    old_secret_keys: list[SecretStr] = Field(default_factory=list)
    """Previous key-encryption keys, still accepted for reading records written under them (rotation)."""

    # --- tokens -------------------------------------------------------------------------------------
    signing_alg: Literal["RS256", "ES256"] = "RS256"
    """Algorithm of new signing keys for access tokens (ID tokens are always RS256)."""

    access_token_ttl: int = Field(600, gt=0)
    """Lifetime of access tokens and ID tokens, in seconds."""

    refresh_idle_ttl: int = Field(7 * 86400, gt=0)
    """A refresh token unused for this many seconds expires."""

    refresh_absolute_ttl: int = Field(30 * 86400, gt=0)
    """A login (session and its refresh families) ends this many seconds after it started."""

    refresh_reuse_grace: float = Field(5.0, ge=0)
    """Seconds during which a just-rotated refresh token may be presented again and gets the same successor."""

    default_audience: str = "dna-api"
    """`aud` of access tokens unless token exchange asks for another."""

    audiences: list[str] = Field(default_factory=lambda: ["dna-api", "review-api"])
    """Audiences (resource servers) the broker knows; token exchange may target these."""

    key_rotation_interval: int = Field(30 * 86400, ge=0)
    """Seconds between automatic signing-key rotations (0 turns automatic rotation off)."""

    jwks_max_age: int = Field(300, gt=0)
    """`Cache-Control: max-age` of `/jwks.json`; keys are published at least this long before they sign."""

    # --- revocation (feed, back-channel logout, ShotGrid event log) -----------------------------------
    backchannel_poll: float = Field(1.0, gt=0)
    """Seconds between looks at the back-channel logout outbox: a logout token is sent within about this long of the session's end."""

    backchannel_timeout: float = Field(5.0, gt=0)
    """Seconds a back-channel logout POST may take to connect, and again to be answered, before the attempt counts as failed."""

    backchannel_max_attempts: int = Field(8, ge=1)
    """Attempts at one back-channel logout before the broker gives up on it (logged, and counted as `broker_backchannel_logouts_total{outcome="gave_up"}`)."""

    backchannel_retry_backoff: float = Field(2.0, gt=0)
    """Seconds before the first retry of a failed back-channel logout; each further retry waits twice as long, at most 5 minutes."""

    shotgrid_events_poll: float = Field(10.0, ge=0)
    """Seconds between reads of ShotGrid's event log (`EventLogEntry`) for users deactivated there, whose sessions then end at once (one reader across all processes and replicas, with the script key; 0 turns it off, leaving the refresh re-check)."""

    # --- browser login (authorization endpoint, login page, SSO) -------------------------------------
    site_name: str = "ShotGrid"
    """Name shown on the login page ("Sign in to <site name>")."""

    logo_url: str | None = None
    """Logo shown above the login form (an https or same-origin URL); none by default."""

    accent_color: str = Field("#2563eb", pattern=r"^#[0-9a-fA-F]{6}$")
    """Accent colour of the login page (buttons, links, focus rings), as `#rrggbb`. Text stays readable (WCAG AA, 4.5:1): on a light colour the button text turns dark and links use a darker shade, with a warning at start-up."""

    pat_help_url: str | None = None
    """Link the login page gives for binding a Personal Access Token (needed on Autodesk Identity cloud sites), e.g. your studio's wiki page; without it the page names the ShotGrid menu to use."""

    login_form_ttl: int = Field(1800, gt=0)
    """Seconds a rendered login form stays valid (its CSRF token expires after this)."""

    shotgrid_signin_poll_interval: float = Field(2.0, gt=0)
    """Seconds between the login page's checks, from the browser, whether ShotGrid sign-in (App Session Launcher) was approved. Whatever this is, ShotGrid itself is polled at most every 2 s per sign-in, across all processes."""

    # --- device authorization (RFC 8628) ------------------------------------------------------------
    device_code_ttl: int = Field(600, gt=0, le=600)
    """Lifetime of a device authorization's device and user codes, in seconds (at most 600: RFC 8628 §5.4's advice against remote phishing)."""

    device_poll_interval: int = Field(5, ge=1)
    """Seconds a device must wait between polls of `/token` (the `interval` of RFC 8628 §3.2); each poll too soon gets `slow_down` and adds 5 for that device."""

    device_max_wrong_codes_per_ip: int = Field(10, gt=0)
    """Wrong user codes one client IP may enter on the device page within `BROKER_LOGIN_FAILURE_WINDOW` before further attempts get 429."""

    # --- failed-login throttling --------------------------------------------------------------------
    login_max_failures_per_user_ip: int = Field(5, gt=0)
    """Failed logins for one username from one client address within the window before that address gets 429 for that username; the strict limit, checked before ShotGrid is called. People at other addresses are not affected; a successful login clears it."""

    login_max_failures_per_user: int = Field(20, ge=0)
    """Failed logins for one username from all addresses together within the window before every attempt for it gets 429: bounds guessing spread over many addresses. Keep it well above ShotGrid's own lockout (10 failures), or the broker becomes the cheaper way to lock a person out; 20 per 900 s keeps within OWASP ASVS's 100 failures an hour. 0 turns it off."""

    login_max_failures_per_ip: int = Field(30, ge=0)
    """Failed logins from one client address (an IPv6 /64) within the window before it gets 429 for every username: bounds password spraying. Each username counts once per (username, address) window, so one person retrying counts once; everyone behind one NAT shares it. 0 turns it off."""

    login_failure_window: int = Field(900, gt=0)
    """Length, in seconds, of the failed-login counting windows (a window begins at its first attempt); a throttled attempt's `Retry-After` is what is left of the window that refused it."""

    # --- administration ------------------------------------------------------------------------------
    admin_rate_limit: int = Field(120, ge=1)
    """Admin API and admin page requests per minute allowed per client address and per administrator (429 beyond)."""

    admin_permission_groups: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["Admin"]
    )
    """ShotGrid permission groups whose people may use the admin page (`/admin`), comma-separated or a JSON list, spelled exactly as ShotGrid names them. Read from ShotGrid with the script key at a session's first visit and again every `BROKER_UPSTREAM_RECHECK` seconds, so a person taken out of the group loses the page within that period. Empty: the page refuses everyone (the admin API is unaffected)."""

    audit_retention: int = Field(30 * 86400, ge=0)
    """Seconds the audit events the admin API shows (sign-ins, session ends, revocations, key and admin events) are kept in the store (0: none are kept; the log lines remain)."""

    audit_max_events: int = Field(100_000, ge=0)
    """Most audit events kept in the store; the oldest beyond this are pruned (0: none are kept)."""

    # --- HTTP -------------------------------------------------------------------------------------------
    max_body_bytes: int = Field(64 * 1024, gt=0)
    """Largest request body accepted, in bytes (413 beyond)."""

    pin_workers: bool = False
    """`serve` only: each worker process claims a CPU of its own (the first free one it may use) and keeps all its threads on it, so its event loop and core threads never hand the GIL across cores. For hosts or cpusets given to the broker, one worker per core; a worker finding no free CPU runs unpinned. Not for containers sharing CPUs: each has its own temp directory, so all would claim the same first CPU."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Minimum level of log lines."""

    log_format: Literal["json", "console"] = "json"
    """`json`: one JSON object per line (production); `console`: human-readable (the default of `demo`, whose `--log-format` wins over this)."""

    # --- proxies and connections (SECURITY.md says what each one protects against) ------------
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Addresses or networks (CIDR) of the reverse proxies in front of the broker, comma-separated (`10.0.0.5,10.1.0.0/16`) or a JSON list. Only a request whose TCP peer is one of them has its client address taken from the forwarded header (the right-most address that is not itself a listed proxy); from anyone else the header is ignored. Empty: the TCP peer is the client, whatever the headers say."""

    forwarded_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    """Which header the trusted proxies write: `x-forwarded-for`, or `forwarded` (RFC 7239). Only that one is read, so a client cannot slip an address in through the header the proxy passes along untouched."""

    http_head_timeout: float = Field(10.0, gt=0)
    """Seconds a client has to send a complete request head once it has started one; a connection still sending its head after that gets 408 and is closed."""

    http_idle_timeout: float = Field(5.0, gt=0)
    """Seconds a connection may stay open without a request in progress: before its first request and between requests (HTTP keep-alive). Then it is closed. Behind a load balancer that keeps idle connections to the broker, set it above the balancer's idle timeout (AWS ALB: 60 s), or the balancer may reuse a connection just as the broker closes it."""

    http_max_connections: int = Field(1000, gt=0)
    """Open connections each worker process serves at once; requests on connections beyond it get 503."""

    @field_validator("issuer")
    @classmethod
    def _issuer_shape(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with https:// (or http:// for development)")
        if value.endswith("/") or "?" in value or "#" in value:
            raise ValueError("must have no trailing slash, query or fragment")
        return value

    @field_validator("shotgrid_url")
    @classmethod
    def _shotgrid_url_shape(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with https:// or http://")
        return value.rstrip("/") if value else value

    @field_validator("secret_key")
    @classmethod
    def _kek_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            decode_key(value)
        return value

    @field_validator("old_secret_keys")
    @classmethod
    def _old_keks_shape(cls, value: list[SecretStr]) -> list[SecretStr]:
        for item in value:
            decode_key(item)
        return value

    @field_validator("trusted_proxies", "admin_permission_groups", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    @field_validator("admin_permission_groups")
    @classmethod
    def _groups_shape(cls, value: list[str]) -> list[str]:
        names = [item.strip() for item in value]
        if any(not name for name in names):
            raise ValueError("a permission group name must not be empty")
        return list(dict.fromkeys(names))

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_shape(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address or CIDR network (no names, no '*')"
                ) from None
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlValues(settings_cls))

    def production_problems(self) -> list[str]:
        """What `serve` refuses to start without, one line each."""
        problems = []
        for name in ("issuer", "shotgrid_url", "store_url", "secret_key"):
            if getattr(self, name) is None:
                problems.append(f"{env_name(name)} is required")
        if (
            self.issuer
            and self.issuer.startswith("http://")
            and not self.allow_insecure_issuer
            and not _is_loopback_url(self.issuer)
        ):
            problems.append(
                f"{env_name('issuer')} must be https:// (set "
                f"{env_name('allow_insecure_issuer')}=true only for development)"
            )
        if self.upstream_strategy == "sudo" and not (
            self.shotgrid_script_name and self.shotgrid_script_key
        ):
            problems.append(
                f"{env_name('upstream_strategy')}=sudo needs {env_name('shotgrid_script_name')}"
                f" and {env_name('shotgrid_script_key')}"
            )
        return problems


def _is_loopback_url(url: str) -> bool:
    host = url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost", "[::1]")


def decode_key(value: SecretStr) -> bytes:
    """A base64url 32-byte key-encryption key."""
    raw = value.get_secret_value().strip()
    try:
        key = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("must be base64url-encoded") from None
    if len(key) != 32:
        raise ValueError("must decode to exactly 32 bytes")
    return key


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _problem_lines(exc: ValidationError) -> tuple[list[str], set[str]]:
    """One line per invalid value, and the names (fields or unknown keys) at fault."""
    lines: list[str] = []
    names: set[str] = set()
    for err in exc.errors():
        loc = str(err["loc"][0]) if err["loc"] else "settings"
        names.add(loc)
        name = env_name(loc) if loc in Settings.model_fields else loc
        if err["type"] == "extra_forbidden":
            line = f"{loc}: unknown setting"
        else:
            line = f"{name}: {err['msg'].removeprefix('Value error, ')}"
        if line not in lines:
            lines.append(line)
    return lines, names


Check = Callable[[Settings], list[str]]
"""A command's own requirements on valid settings (e.g. `Settings.production_problems`),
one line per problem."""


def _without(names: set[str], overrides: dict[str, Any]) -> Settings | None:
    """The settings with every invalid value replaced by its default (unknown keys
    dropped), so a command's requirements can be checked in the same pass; None if even
    that does not validate."""
    defaults = {
        n: Settings.model_fields[n].get_default(call_default_factory=True)
        for n in names
        if n in Settings.model_fields
    }
    file_values = {k: v for k, v in (_FILE_VALUES.get() or {}).items() if k not in names}
    token = _FILE_VALUES.set(file_values)
    try:
        return Settings(**{**overrides, **defaults})
    except ValidationError:
        return None
    finally:
        _FILE_VALUES.reset(token)


def load_settings(
    config_file: str | Path | None = None, *, check: Check | None = None, **overrides: Any
) -> Settings:
    """Environment over TOML file over defaults; `overrides` (used by `demo`) win over all.

    `check` adds a command's requirements (`serve`: `Settings.production_problems`): its
    lines come in the same `SettingsError` as the invalid values, checked on the settings
    with those values at their defaults, minus lines about a setting already named."""
    file_values: dict[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        try:
            with path.open("rb") as fh:
                file_values = tomllib.load(fh)
        except OSError as exc:
            raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None
        file_values = {str(k).lower(): v for k, v in file_values.items()}
    token = _FILE_VALUES.set(file_values)
    try:
        try:
            settings = Settings(**overrides)
        except ValidationError as exc:
            lines, names = _problem_lines(exc)
            fallback = _without(names, overrides) if check is not None else None
            if check is not None and fallback is not None:
                named = tuple(env_name(n) for n in names)
                lines += [p for p in check(fallback) if not any(n in p for n in named)]
            raise SettingsError(lines) from None
    finally:
        _FILE_VALUES.reset(token)
    problems = check(settings) if check is not None else []
    if problems:
        raise SettingsError(problems)
    return settings


def _default_text(info: FieldInfo) -> str:
    factory = info.default_factory
    value = factory() if factory is not None else info.default  # type: ignore[call-arg]
    if value is None:
        return "—"
    if isinstance(value, list):
        return ", ".join(f"`{v}`" for v in value) if value else "(none)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def settings_markdown_table() -> str:
    """The README's settings table, derived from the declarations above."""
    lines = ["| setting | default | meaning |", "| --- | --- | --- |"]
    for name, info in Settings.model_fields.items():
        doc = (info.description or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{env_name(name)}` | {_default_text(info)} | {doc} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(settings_markdown_table())
