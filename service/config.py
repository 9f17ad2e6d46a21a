"""Settings: one frozen object built from ROLEGATE_* environment variables or a mapping.

Every setting is declared once in `SETTINGS` with its variable name, default and documentation;
the README's configuration table is checked against this list by a test.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .logs import LOG_FORMATS, LOG_LEVELS

ENV_PREFIX = "ROLEGATE_"
PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent  # a source checkout (tests, bench); not meaningful in a wheel


def shipped_path(name: str) -> Path:
    """A file shipped with Rolegate (`model.conf`, `policies`): the installed package's copy
    (`rolegate/shipped/`, made by the build), else the source checkout's top-level one."""
    packaged = PACKAGE_DIR / "shipped" / name
    return packaged if packaged.exists() else REPO_ROOT / name


def _text(value: str) -> str:
    return value.strip()


def _optional_text(value: str) -> str | None:
    value = value.strip()
    return value or None


def _int(value: str) -> int:
    try:
        return int(value.strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {value!r}") from None


def _float(value: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise ValueError(f"expected a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def _choice(accepted: tuple[str, ...], *, upper: bool = False) -> Callable[[str], str]:
    def parse(value: str) -> str:
        chosen = value.strip().upper() if upper else value.strip().lower()
        if chosen not in accepted:
            raise ValueError(f"expected one of {', '.join(accepted)}, got {value!r}")
        return chosen

    return parse


def _database_url(value: str) -> str:
    """A SQLAlchemy URL of a backend the store supports (`postgres://` gets a hint)."""
    from .store.urls import validate_database_url

    value = value.strip()
    if not value:
        return ""  # the default: rolegate.db in ROLEGATE_HOME
    return validate_database_url(value)


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected 1/0, true/false, yes/no or on/off, got {value!r}")


def _csv_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _method_actions(value: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in _csv_list(value):
        method, equals, action = (part.strip() for part in item.partition("="))
        if not equals or not method.isalpha() or not method.isascii() or not action:
            raise ValueError(f"expected METHOD=action pairs, got {item!r}")
        pairs.append((method.upper(), action))
    return tuple(pairs)


def _path_prefix(value: str) -> str:
    value = value.strip().rstrip("/")
    if value and (not value.startswith("/") or "?" in value or "#" in value):
        raise ValueError(f"expected a path starting with '/', got {value!r}")
    return value


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    parse: Callable[[str], Any]
    doc: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "home",
        "",
        _text,
        "Rolegate's per-user home: the default data dir and SQLite database live here, the same "
        "for every command wherever it runs. Default: `$XDG_DATA_HOME/rolegate`, else "
        "`~/.local/share/rolegate`.",
    ),
    Setting(
        "database_url",
        "",
        _database_url,
        "SQLAlchemy URL of the policy store. Default: the SQLite file `rolegate.db` in "
        "ROLEGATE_HOME; `postgresql+psycopg://user@host/db` in production.",
    ),
    Setting("policy_dir", "policies", _text, "Directory of policy CSV files (`*.csv`)."),
    Setting(
        "model",
        "",
        _text,
        "Path of the Casbin model. Default: `model.conf` in the working directory, else the one "
        "shipped with Rolegate.",
    ),
    Setting(
        "data_dir",
        "",
        _text,
        "Where the service keeps generated files (demo secret, reload errors). Default: "
        "ROLEGATE_HOME.",
    ),
    Setting("jwt_secret", None, _optional_text, "HMAC secret for HS256/384/512 tokens."),
    Setting(
        "jwt_public_key",
        None,
        _optional_text,
        "PEM public key (file path or PEM text) for RS*/PS*/ES*/EdDSA tokens.",
    ),
    Setting("jwks_url", None, _optional_text, "JWKS URL of the identity provider (http or https)."),
    Setting(
        "jwt_algorithms",
        (),
        _csv_list,
        "Comma-separated algorithm allow-list; default: every algorithm of the key's kind.",
    ),
    Setting("jwt_issuer", None, _optional_text, "Required `iss` of tokens (unset: not checked)."),
    Setting(
        "jwt_audience",
        (),
        _csv_list,
        "Accepted `aud` values, comma-separated (unset: not checked, with a start-up warning).",
    ),
    Setting("jwt_leeway", 30, _int, "Clock skew allowed for `exp`/`nbf`/`iat`, in seconds."),
    Setting("jwks_lifespan", 300, _int, "Seconds a fetched JWKS is cached."),
    Setting("jwks_timeout", 3.0, _float, "Seconds before a JWKS fetch gives up (503)."),
    Setting(
        "jwks_cooldown", 30, _int, "Minimum seconds between refetches caused by unknown `kid`s."
    ),
    Setting(
        "claims",
        "generic",
        _text,
        "Claim preset: generic, clerk, supabase, auth0 or keycloak (see README).",
    ),
    Setting(
        "claim_subject",
        None,
        _optional_text,
        "Dotted claim path of the subject (overrides preset).",
    ),
    Setting(
        "claim_org",
        None,
        _optional_text,
        "Dotted claim path of the organisation (overrides preset).",
    ),
    Setting(
        "claim_roles", None, _optional_text, "Dotted claim path of the roles (overrides preset)."
    ),
    Setting(
        "trust_token_roles",
        False,
        _bool,
        "When 1, roles in the token count as the subject's roles in the token's org.",
    ),
    Setting(
        "default_role",
        None,
        _optional_text,
        "Role of a subject with no membership in the org (unset: such a subject gets nothing).",
    ),
    Setting(
        "org_admin_role",
        None,
        _optional_text,
        "Role of an org's first admin (POST /v1/orgs); unset: the one top role of the policy "
        "allowed `manage` on `/members`.",
    ),
    Setting(
        "allow_regex_patterns",
        False,
        _bool,
        "When 1, resource patterns written through the admin API and in policy files may use "
        "regular-expression syntax (matched in linear time); default: literal text, `:name`, "
        "`/*` and `*` only.",
    ),
    Setting(
        "decision_log",
        "",
        _text,
        "Decision log sink: empty for none, `-` for stdout, or a file path (JSON lines).",
    ),
    Setting(
        "decision_log_db",
        False,
        _bool,
        "When 1, decisions are also written to the `decision_log` table of the store's database "
        "(searchable through `GET /v1/orgs/<org>/decisions`).",
    ),
    Setting(
        "decision_log_retention_days",
        30,
        _int,
        "Days the database decision log keeps a record (0: keep forever).",
    ),
    Setting(
        "shadow_policy_dir",
        None,
        _optional_text,
        "Candidate policy directory evaluated beside the live policy for every decision, off the "
        "request path (watched for edits); disagreements go to `/metrics` and the decision log "
        "(unset: no shadow evaluation). See docs/audit.md.",
    ),
    Setting(
        "api_key_secret",
        None,
        _optional_text,
        "Server key for API key HMACs (default: generated and kept in the data dir).",
    ),
    Setting(
        "poll_interval",
        2.0,
        _float,
        "Seconds between policy revision polls of the store (0 disables polling).",
    ),
    Setting(
        "log_level",
        "INFO",
        _choice(LOG_LEVELS, upper=True),
        "Log level (DEBUG, INFO, WARNING, ERROR).",
    ),
    Setting(
        "log_format",
        "json",
        _choice(LOG_FORMATS),
        "Log lines: `json` (one object per line, with the request id) or `text`.",
    ),
    Setting(
        "min_revision_wait",
        2.0,
        _float,
        "Seconds a check with `min_revision` may wait for a reload already running in this "
        "worker before 503 `revision_unavailable` (a revision the store does not have: 400 "
        "`revision_ahead` at once).",
    ),
    Setting("workers", 0, _int, "`serve`: worker processes (0: one per CPU)."),
    Setting(
        "threads",
        2,
        _int,
        "`serve`: Python threads running requests, per worker (16 per thread more are queued).",
    ),
    Setting(
        "worker_timeout",
        30,
        _int,
        "`serve`: seconds a request may run before its worker is restarted.",
    ),
    Setting(
        "graceful_timeout",
        30,
        _int,
        "`serve`: seconds in-flight requests get to finish after SIGTERM.",
    ),
    Setting(
        "forward_auth_actions",
        (),
        _method_actions,
        "`/v1/forward-auth`: METHOD=action pairs, comma-separated, replacing or adding to the "
        "defaults GET/HEAD=read, POST=create, PUT/PATCH=update, DELETE=delete (e.g. "
        "`OPTIONS=read,POST=submit`).",
    ),
    Setting(
        "forward_auth_strip_prefix",
        "",
        _path_prefix,
        "`/v1/forward-auth`: path prefix removed from the forwarded path before deciding (a path "
        "outside it is denied, 403 `outside_prefix`).",
    ),
    Setting(
        "forward_auth_mount",
        "",
        _path_prefix,
        "`/v1/forward-auth`: path prefix put before the forwarded path (after the strip) to form "
        "the resource.",
    ),
    Setting(
        "subject_attributes",
        "",
        _text,
        "CSV file of subject attributes (`org,subject,<name>,...`) that a policy sync makes the "
        "store's equal (empty: attributes only through the admin API). See docs/authzen.md.",
    ),
    Setting(
        "authzen_resource_template",
        "/{type}/{id}",
        _text,
        "AuthZEN: resource path of `resource {type, id}`; `{properties.<name>}` inserts a "
        "resource property (empty when absent). See docs/authzen.md.",
    ),
    Setting(
        "authzen_owner_property",
        "ownerID",
        _text,
        "AuthZEN: resource property naming the resource's owner (empty: no owner).",
    ),
    Setting(
        "authzen_owner_attribute",
        "email",
        _text,
        "AuthZEN: subject attribute that the owner property may also name the subject by "
        "(empty: only the subject id).",
    ),
    Setting(
        "authzen_subject_types",
        ("user",),
        _csv_list,
        "AuthZEN: comma-separated subject types Rolegate decides for (any other type: deny, "
        "empty search).",
    ),
    Setting(
        "authzen_public_url",
        "",
        _text,
        "AuthZEN discovery: public base URL of this service (empty: from the request's host).",
    ),
)

SETTING_BY_NAME = {setting.name: setting for setting in SETTINGS}


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    """`$XDG_DATA_HOME/rolegate`, else `~/.local/share/rolegate` (the XDG per-user data dir)."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_DATA_HOME", "").strip()
    if base and Path(base).is_absolute():
        return Path(base) / "rolegate"
    try:
        return Path.home() / ".local" / "share" / "rolegate"
    except RuntimeError:  # no HOME and no passwd entry (some containers): set ROLEGATE_HOME
        return Path("/var/lib/rolegate")


@dataclass(frozen=True)
class Settings:
    home: str = ""
    database_url: str = ""
    policy_dir: str = "policies"
    model: str = ""
    data_dir: str = ""
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwks_url: str | None = None
    jwt_algorithms: tuple[str, ...] = ()
    jwt_issuer: str | None = None
    jwt_audience: tuple[str, ...] = ()
    jwt_leeway: int = 30
    jwks_lifespan: int = 300
    jwks_timeout: float = 3.0
    jwks_cooldown: int = 30
    claims: str = "generic"
    claim_subject: str | None = None
    claim_org: str | None = None
    claim_roles: str | None = None
    trust_token_roles: bool = False
    default_role: str | None = None
    org_admin_role: str | None = None
    allow_regex_patterns: bool = False
    decision_log: str = ""
    decision_log_db: bool = False
    decision_log_retention_days: int = 30
    shadow_policy_dir: str | None = None
    api_key_secret: str | None = None
    poll_interval: float = 2.0
    log_level: str = "INFO"
    log_format: str = "json"
    min_revision_wait: float = 2.0
    workers: int = 0
    threads: int = 2
    worker_timeout: int = 30
    graceful_timeout: int = 30
    forward_auth_actions: tuple[tuple[str, str], ...] = ()
    forward_auth_strip_prefix: str = ""
    forward_auth_mount: str = ""
    subject_attributes: str = ""
    authzen_resource_template: str = "/{type}/{id}"
    authzen_owner_property: str = "ownerID"
    authzen_owner_attribute: str = "email"
    authzen_subject_types: tuple[str, ...] = ("user",)
    authzen_public_url: str = ""

    def __post_init__(self) -> None:
        """Resolve the home-relative defaults once, to absolute paths (cwd-independent)."""
        home = Path(self.home).expanduser() if self.home else default_home()
        object.__setattr__(self, "home", str(home.absolute()))
        if not self.data_dir:
            object.__setattr__(self, "data_dir", str(home.absolute()))
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{home.absolute() / 'rolegate.db'}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every `ROLEGATE_*` variable; unknown `ROLEGATE_*` names are an error (typos)."""
        environ = os.environ if environ is None else environ
        known = {setting.env for setting in SETTINGS}
        unknown = sorted(
            name for name in environ if name.startswith(ENV_PREFIX) and name not in known
        )
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = environ.get(setting.env)
            if raw is None:
                continue
            try:
                values[setting.name] = setting.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{setting.env}: {exc}") from None
        values.update(overrides)
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        """Build from already-typed values (tests, CLI flags)."""
        unknown = sorted(set(values) - set(SETTING_BY_NAME))
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def model_path(self) -> Path:
        if self.model:
            return Path(self.model)
        local = Path("model.conf")
        return local if local.is_file() else shipped_path("model.conf")

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)
