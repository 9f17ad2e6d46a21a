"""Policy as code: lint, format, diff with access impact, test suites and the file watcher.

Everything here works on plain rule tuples and policy directories; the CLI (`rolegate.cli.policy`)
and the service (`serve --watch-policies`) are thin front ends over these functions.
"""

from .fmt import format_policy_dir, format_policy_text
from .impact import AccessChange, PolicyDiff, diff_rules
from .lint import GLOBAL_MEMBERSHIP_MARKER, LintIssue, LintReport, lint_policy_dir, lint_rules
from .suite import SuiteCase, SuiteResult, load_suites, run_suites

__all__ = [
    "GLOBAL_MEMBERSHIP_MARKER",
    "AccessChange",
    "LintIssue",
    "LintReport",
    "PolicyDiff",
    "SuiteCase",
    "SuiteResult",
    "diff_rules",
    "format_policy_dir",
    "format_policy_text",
    "lint_policy_dir",
    "lint_rules",
    "load_suites",
    "run_suites",
]
