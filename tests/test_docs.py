"""The README stays true: every setting documented, the quick start is two commands CI runs."""

from __future__ import annotations

import dataclasses
import re

from rolegate.config import REPO_ROOT, SETTINGS, Settings

README = (REPO_ROOT / "README.md").read_text()


def settings_table() -> str:
    match = re.search(r"<!-- settings-table:start -->(.*)<!-- settings-table:end -->", README, re.S)
    assert match, "README lost its settings table markers"
    return match.group(1)


def test_every_setting_is_documented_and_nothing_else():
    table = settings_table()
    documented = set(re.findall(r"^\| `(ROLEGATE_[A-Z_]+)`", table, re.M))
    declared = {setting.env for setting in SETTINGS}
    assert declared - documented == set(), "settings missing from the README table"
    assert documented - declared == set(), "README documents settings that do not exist"


def test_settings_defaults_declared_once():
    defaults = {field.name: field.default for field in dataclasses.fields(Settings)}
    assert set(defaults) == {setting.name for setting in SETTINGS}
    for setting in SETTINGS:
        assert defaults[setting.name] == setting.default, setting.name


def test_quick_start_is_two_commands_and_ci_runs_the_test_one():
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)\n```", quick, re.S)
    assert len(commands) == 2
    assert all("\n" not in command for command in commands)
    install_and_serve, install_and_test = commands
    assert "serve --demo" in install_and_serve
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert install_and_test in ci
