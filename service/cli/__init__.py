"""Command line: `rolegate <command>`. Each command lives in its own module of this package.

Errors raised as `RolegateError` become one `Error: ...` line on stderr and the error's exit code;
`--traceback` re-raises them for debugging.
"""

from __future__ import annotations

import sys

import click

from ..errors import RolegateError


class RolegateGroup(click.Group):
    """Maps typed errors to a message and an exit status in one place."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RolegateError as error:
            if ctx.params.get("traceback"):
                raise
            click.echo(f"Error: {error.message}", err=True)
            sys.exit(error.exit_code)


@click.group(cls=RolegateGroup)
@click.option("--traceback", is_flag=True, help="Show the full traceback of errors.")
@click.version_option(package_name="rolegate")
def main(traceback: bool) -> None:
    """Rolegate: authorization decisions over Casbin RBAC with domains."""


def _register() -> None:
    from . import audit, db, decide, org, policy, serve
    from . import plan as plan_cli
    from . import replay as replay_cli

    for module in (serve, decide, policy, org, audit, db, plan_cli, replay_cli):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
