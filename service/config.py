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
    return int(value)


def _float(value: str) -> float:
    return float(value)


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
        "database_url",
        "sqlite:///rolegate.db",
        _text,
        "SQLAlchemy URL of the policy store. SQLite file in the working directory by default; "
        "`postgresql+psycopg://user@host/db` in production.",
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
        "data_dir", ".rolegate", _text, "Where the service keeps generated files (demo secret)."
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
    Setting("log_level", "INFO", _text, "Log level (DEBUG, INFO, WARNING, ERROR)."),
    Setting(
        "log_format",
        "json",
        _text,
        "Log lines: `json` (one object per line, with the request id) or `text`.",
    ),
    Setting(
        "min_revision_wait",
        2.0,
        _float,
        "Seconds a check with `min_revision` waits for this worker to catch up before 503 "
        "`revision_unavailable`.",
    ),
    Setting("workers", 0, _int, "`serve`: gunicorn worker processes (0: one per CPU)."),
    Setting("threads", 4, _int, "`serve`: request threads per worker."),
    Setting(
        "worker_timeout",
        30,
        _int,
        "`serve`: seconds a request may run before gunicorn restarts the worker.",
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


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///rolegate.db"
    policy_dir: str = "policies"
    model: str = ""
    data_dir: str = ".rolegate"
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
    decision_log: str = ""
    decision_log_db: bool = False
    decision_log_retention_days: int = 30
    api_key_secret: str | None = None
    poll_interval: float = 2.0
    log_level: str = "INFO"
    log_format: str = "json"
    min_revision_wait: float = 2.0
    workers: int = 0
    threads: int = 4
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
