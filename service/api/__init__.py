"""HTTP front end: Flask blueprints over the Rolegate core."""

from __future__ import annotations

from flask import Flask

from . import audit, console, decisions, errors, health, orgs

MAX_BODY_BYTES = 4 * 1024 * 1024

BLUEPRINTS = (decisions.bp, health.bp, orgs.bp, audit.bp, console.bp)


def init_app(app: Flask) -> None:
    """Register every blueprint and the one JSON error shape."""
    errors.init_app(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
