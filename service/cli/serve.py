"""`rolegate serve` (granian workers through `rolegate.server`, or Flask's reloader with --dev)
and `rolegate token`."""

from __future__ import annotations

import atexit
import os
import secrets
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..config import Settings
from ..core import default_policy_dir
from ..errors import ConfigError
from ..identity import mint_token, parse_duration
from ..logs import configure_logging

if TYPE_CHECKING:
    from ..engine import Engine

DEMO_SECRET_FILE = "demo-secret"


def demo_secret(data_dir: Path) -> str:
    """The demo's HS256 secret, generated once and kept (mode 600) in the data dir."""
    path = data_dir / DEMO_SECRET_FILE
    if path.is_file():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secret + "\n")
    return secret


def demo_settings(settings: Settings) -> Settings:
    """Sample policies and a local HS256 secret: a service that works with no configuration."""
    changes: dict[str, Any] = {"jwt_secret": demo_secret(settings.data_path)}
    if not os.environ.get("ROLEGATE_POLICY_DIR"):
        changes["policy_dir"] = str(default_policy_dir())
    if settings.jwt_public_key or settings.jwks_url:
        raise ConfigError(
            "--demo uses its own HS256 secret: unset ROLEGATE_JWT_PUBLIC_KEY/JWKS_URL"
        )
    return settings.replace(**changes)


def upgrade_demo_store(settings: Settings) -> None:
    """Bring the demo's own SQLite store (in ROLEGATE_HOME) to this version's schema, so the
    quick start keeps working after an upgrade of Rolegate. A store named by
    ROLEGATE_DATABASE_URL is never migrated implicitly: `rolegate db upgrade` does that."""
    if os.environ.get("ROLEGATE_DATABASE_URL"):
        return
    from ..store.db import make_engine
    from ..store.schema import upgrade

    engine = make_engine(settings.database_url)
    try:
        before, after = upgrade(engine)
    finally:
        engine.dispose()
    if not before.empty and before.current != after.current:
        click.echo(f"demo store upgraded from schema {before.current} to {after.current}", err=True)


def prepare_metrics_dir() -> Path:
    """PROMETHEUS_MULTIPROC_DIR for this instance's workers: the configured directory (emptied of
    a previous run's files) or a new temporary one, removed when the server exits."""
    from .. import metrics

    configured = os.environ.get(metrics.MULTIPROC_ENV)
    if configured:
        path = Path(configured)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        return path
    path = Path(tempfile.mkdtemp(prefix="rolegate-metrics-"))
    os.environ[metrics.MULTIPROC_ENV] = str(path)
    master = os.getpid()

    def remove() -> None:
        if os.getpid() == master:  # forked workers inherit atexit handlers
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)
    return path


def prepare_store(settings: Settings, *, sync_policies: bool, load: bool = False) -> Engine | None:
    """Before any worker starts: the schema check (an empty database is created), the policy
    dir's import and the identity settings' validation; with `load`, the policy too, returned
    as the engine every worker is forked with (and catches up from: `Rolegate.resume`)."""
    from ..core import Rolegate

    core = Rolegate.from_settings(settings)
    try:
        if sync_policies:
            core.sync_policies()
        if load:
            core.load()
            return core.engine
        return None
    finally:
        core.close()


def print_demo_help(settings: Settings, host: str, port: int) -> None:
    token = mint_token(settings, subject="alice", org="acme", ttl_seconds=24 * 3600)
    url = f"http://{host}:{port}"
    body = '{"resource": "/projects/42", "action": "delete", "explain": true}'
    click.echo("Rolegate demo: sample policies from " + settings.policy_dir)
    click.echo("A token for alice (admin of acme), valid 24 h; try:")
    click.echo(
        f"  curl -s {url}/v1/check -H 'Authorization: Bearer {token}' "
        f"-H 'Content-Type: application/json' -d {shlex.quote(body)}"
    )
    click.echo("More tokens: rolegate token --demo --sub bob --org acme")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers", type=int, default=None, help="Worker processes [ROLEGATE_WORKERS, else CPU count]."
)
@click.option("--threads", type=int, default=None, help="Threads per worker [ROLEGATE_THREADS].")
@click.option(
    "--timeout", type=int, default=None, help="Request timeout, seconds [ROLEGATE_WORKER_TIMEOUT]."
)
@click.option(
    "--graceful-timeout",
    type=int,
    default=None,
    help="Seconds to finish in-flight requests on SIGTERM [ROLEGATE_GRACEFUL_TIMEOUT].",
)
@click.option("--sync-policies", is_flag=True, help="Import the policy dir into the store first.")
@click.option(
    "--watch-policies", is_flag=True, help="Apply edits of the policy dir to the store (1 s polls)."
)
@click.option("--demo", is_flag=True, help="Sample policies and a generated HS256 secret.")
@click.option("--dev", is_flag=True, help="Flask's reloader instead of the worker processes.")
def serve(
    host: str,
    port: int,
    workers: int | None,
    threads: int | None,
    timeout: int | None,
    graceful_timeout: int | None,
    sync_policies: bool,
    watch_policies: bool,
    demo: bool,
    dev: bool,
):
    """Run the decision service."""
    from ..api import create_app
    from ..server import ServerOptions, run_server

    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    if demo:
        settings = demo_settings(settings)
        upgrade_demo_store(settings)
        sync_policies = True
    # Loaded once here, before the fork: the workers share its memory and start at once. With
    # --dev, Flask's reloader builds its own app.
    engine = prepare_store(settings, sync_policies=sync_policies, load=not dev)
    if watch_policies:  # one watcher, in this process (the server's master), never in workers
        from ..policy.watch import start_watcher

        start_watcher(settings)
    if demo:
        print_demo_help(settings, host, port)
    if dev:
        create_app(settings).run(host=host, port=port, use_reloader=True, debug=False)
        return
    options = ServerOptions(
        host=host,
        port=port,
        workers=workers or settings.workers or os.cpu_count() or 1,
        threads=threads or settings.threads,
        timeout=timeout or settings.worker_timeout,
        graceful_timeout=graceful_timeout or settings.graceful_timeout,
    )
    prepare_metrics_dir()  # after the import above: only the workers write metric files
    run_server(lambda: create_app(settings, engine=engine), options)


@click.command()
@click.option("--sub", "subject", required=True, help="Subject (user id).")
@click.option("--org", default=None, help="Organisation claim.")
@click.option("--role", "roles", multiple=True, help="Role claim (repeatable).")
@click.option("--ttl", default="1h", show_default=True, help="Lifetime: 90s, 15m, 1h, 2d.")
@click.option("--demo", is_flag=True, help="Sign with the demo secret of `serve --demo`.")
def token(subject: str, org: str | None, roles: tuple[str, ...], ttl: str, demo: bool):
    """Mint an HS256 token with the configured secret (development and tests)."""
    settings = Settings.from_env()
    if demo:
        settings = settings.replace(jwt_secret=demo_secret(settings.data_path))
    try:
        seconds = parse_duration(ttl)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ttl") from None
    click.echo(mint_token(settings, subject=subject, org=org, roles=roles, ttl_seconds=seconds))


COMMANDS = (serve, token)
