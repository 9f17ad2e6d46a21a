"""HTTP front end: Flask blueprints over the Rolegate core."""

from __future__ import annotations

from flask import Flask

from .. import shadow
from ..config import Settings
from ..core import Rolegate
from ..engine import Engine
from ..logs import configure_logging
from . import audit, authzen, console, decisions, errors, forward_auth, health, hooks, orgs
from . import plan as plan_api
from .fastpath import FastPath

MAX_BODY_BYTES = 4 * 1024 * 1024

BLUEPRINTS = (
    decisions.bp,
    health.bp,
    orgs.bp,
    audit.bp,
    console.bp,
    forward_auth.bp,
    authzen.bp,
    plan_api.bp,
)


def init_app(app: Flask) -> None:
    """Register every blueprint and the one JSON error shape."""
    errors.init_app(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)


def create_app(
    settings: Settings | None = None,
    *,
    core: Rolegate | None = None,
    engine: Engine | None = None,
    sync_policies: bool = False,
    follow_store: bool = True,
) -> Flask:
    """The Flask application. Tests pass `settings` (or a ready `core`); `serve` passes the
    settings and the engine its master loaded before forking this worker.

    Builds the core from settings (reading `ROLEGATE_*` when none are given), loads the policy
    (or catches `engine`'s snapshot up with the store) and registers the API blueprints and the
    JSON error handlers. `follow_store`: keep the policy at the store's revision from this
    process (LISTEN/NOTIFY and the revision poll, stopped by `core.close()`).
    """
    if core is None:
        settings = settings or Settings.from_env()
        configure_logging(settings.log_level, settings.log_format)
        core = Rolegate.from_settings(settings, engine=engine)
        if engine is None:
            core.start(sync_policies=sync_policies)
        else:
            if sync_policies:
                core.sync_policies()
            core.resume()
    app = Flask("rolegate")  # templates and static files live beside the package root
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the documented field order
    app.extensions["rolegate"] = core
    request_hooks = hooks.init_app(app, core)
    shadow.init_app(app, core)
    init_app(app)
    app.wsgi_app = FastPath(app, core, request_hooks)  # type: ignore[method-assign]
    if follow_store:
        core.start_sync()
    return app
