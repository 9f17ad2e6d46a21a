"""Rolegate: an authorization decision service built on Casbin."""

from __future__ import annotations

import logging

from flask import Flask

from .config import Settings
from .core import Rolegate


def create_app(
    settings: Settings | None = None,
    *,
    core: Rolegate | None = None,
    sync_policies: bool = False,
) -> Flask:
    """The Flask application. Tests pass `settings` (or a ready `core`); `serve` passes nothing.

    Builds the core from settings (reading `ROLEGATE_*` when none are given), loads the policy
    and registers the API blueprints and the JSON error handlers.
    """
    if core is None:
        settings = settings or Settings.from_env()
        logging.basicConfig(level=settings.log_level.upper())
        core = Rolegate.from_settings(settings)
        core.start(sync_policies=sync_policies)
    from . import api

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = api.MAX_BODY_BYTES
    app.extensions["rolegate"] = core
    api.init_app(app)
    return app
