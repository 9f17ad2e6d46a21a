"""`serve --watch-policies`: apply edits of the policy files to the store while the service runs.

One watcher runs per service, in the `serve` process before the server forks its workers (the
master), never in the workers. Every `interval` seconds it compares the files' stat
fingerprints; on a change it lints the directory and:

- with errors: applies nothing, logs the error and records it in
  `<data dir>/policy-reload-error.json`; the workers' `/readyz` shows it as `last_reload_error`
  while the previous revision keeps serving;
- otherwise: applies what changed in the files since the last good state (rules added to the
  files are added, rules removed from the files are removed) as one change set with actor
  `file:<path>`, and clears the recorded error. Only file-managed rules are removed: rules
  managed by the admin API are kept (see docs/policy-as-code.md, "Who manages a rule"). The workers
  pick up the new revision through their store polling (`Rolegate.refresh`).

The baseline is the files as they are when the watcher starts (apply them first with
`--sync-policies` when the store may differ). When the files had errors at start, the first good
state only adds rules (nothing is removed, since the previous file state is unknown).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

from ..errors import Conflict, RolegateError
from ..rules import Rule
from ..store.csvfiles import _policy_files
from ..store.db import MANAGED_BY_FILES
from ..store.policies import ChangeSet, PolicyStore
from ..store.source import ManagedPolicySource
from .impact import diff_rules
from .lint import LintReport, lint_policy_dir

log = logging.getLogger("rolegate.watch")

RELOAD_ERROR_FILE = "policy-reload-error.json"
DEFAULT_INTERVAL = 1.0
MAX_LOGGED_IMPACT_LINES = 50
_RETRIES = 3


# --------------------------------------------------------------------------- the shared error


def write_reload_error(data_dir: Path | str, message: str | None) -> None:
    """Record (or clear, with None) the watcher's last reload error for every worker to see."""
    path = Path(data_dir) / RELOAD_ERROR_FILE
    if message is None:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"error": message, "pid": os.getpid(), "at": datetime.now(UTC).isoformat()}
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(record), encoding="utf-8")
    os.replace(temporary, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError):
        return False
    return True


def read_reload_error(data_dir: Path | str) -> str | None:
    """The recorded reload error, or None (no record, or its watcher process has exited)."""
    path = Path(data_dir) / RELOAD_ERROR_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("error"), str):
        return None
    pid = record.get("pid")
    if isinstance(pid, int) and not _alive(pid):
        return None
    return record["error"]


# --------------------------------------------------------------------------- the watcher


def _describe_errors(report: LintReport, limit: int = 5) -> str:
    shown = [str(issue) for issue in report.errors[:limit]]
    more = len(report.errors) - len(shown)
    return "policy files not applied: " + "; ".join(shown) + (f" (and {more} more)" if more else "")


def _file_managed(report: LintReport) -> set[Rule]:
    """The rules the files manage (`managed-by api` seeds are applied by sync and import)."""
    return {item.rule for item in report.rules if item.managed_by == MANAGED_BY_FILES}


def policy_fingerprint(policy_dir: Path) -> tuple:
    """Stat data of every policy file of `policy_dir` (and problems such as outside symlinks):
    equal fingerprints mean unchanged files (also used by the shadow policy, rolegate.shadow)."""
    try:
        files, problems = _policy_files(policy_dir)
    except OSError as exc:
        return (("error", str(exc)),)
    entries: list[tuple[object, ...]] = []
    for path in files:
        try:
            stat = path.stat()
            entries.append(
                (str(path), stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size, stat.st_ino)
            )
        except OSError as exc:
            entries.append((str(path), str(exc)))
    return (tuple(entries), tuple(str(problem) for problem in problems))


class PolicyWatcher:
    """Polls a policy directory and applies its changes to the store (see the module doc)."""

    def __init__(
        self,
        policy_dir: Path | str,
        store: ManagedPolicySource,
        *,
        data_dir: Path | str,
        model_path: Path | str,
        resource_function: str = "keyMatch2",
        default_role: str | None = None,
        interval: float = DEFAULT_INTERVAL,
        allow_regex: bool = False,
    ):
        self.policy_dir = Path(policy_dir)
        self.store = store
        self.data_dir = Path(data_dir)
        self.model_path = Path(model_path)
        self.resource_function = resource_function
        self.default_role = default_role
        self.allow_regex = allow_regex
        self.interval = interval
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fingerprint = self.fingerprint()
        report = self._lint()
        self._baseline: set[Rule] | None = None
        if report.ok:
            self._baseline = _file_managed(report)
            self._record(None)
        else:
            self._record(_describe_errors(report))

    def fingerprint(self) -> tuple:
        """Stat data of every policy file (and problems such as outside symlinks)."""
        return policy_fingerprint(self.policy_dir)

    def _lint(self) -> LintReport:
        return lint_policy_dir(
            self.policy_dir,
            resource_function=self.resource_function,
            default_role=self.default_role,
            allow_regex=self.allow_regex,
        )

    def _record(self, error: str | None) -> None:
        if error is not None:
            log.error("%s", error)
        self.last_error = error
        try:
            write_reload_error(self.data_dir, error)
        except OSError:
            log.exception("cannot record the policy reload error in %s", self.data_dir)

    def _changed_files(self, old: tuple, new: tuple) -> list[str]:
        before = {entry[0]: entry for entry in old[0]} if old and isinstance(old[0], tuple) else {}
        after = {entry[0]: entry for entry in new[0]} if new and isinstance(new[0], tuple) else {}
        return sorted(
            name for name in set(before) | set(after) if before.get(name) != after.get(name)
        )

    def poll_once(self) -> int | None:
        """Check once; apply a change. Returns the new revision when one was written."""
        fingerprint = self.fingerprint()
        if fingerprint == self._fingerprint:
            return None
        changed = self._changed_files(self._fingerprint, fingerprint)
        self._fingerprint = fingerprint
        return self.reload(changed)

    def reload(self, changed_files: list[str] | None = None) -> int | None:
        """Lint and apply the current files; None when nothing was written."""
        try:
            report = self._lint()
        except RolegateError as exc:
            self._record(f"policy files not applied: {exc.message}")
            return None
        if not report.ok:
            self._record(_describe_errors(report))
            return None
        wanted = _file_managed(report)
        source = changed_files[0] if changed_files and len(changed_files) == 1 else self.policy_dir
        try:
            revision = self._apply(wanted, actor=f"file:{source}")
        except RolegateError as exc:
            self._record(f"policy files not applied: {exc.message}")
            return None
        self._baseline = wanted
        self._record(None)
        return revision

    def _apply(self, wanted: set[Rule], *, actor: str) -> int | None:
        """Apply the file changes since the baseline; only file-managed rules are removed."""
        file_changes = ChangeSet.between(self._baseline or (), wanted)
        for attempt in range(_RETRIES):
            revision, owners = self.store.load_owners()
            present = set(owners)
            changes = ChangeSet(
                added=tuple(rule for rule in file_changes.added if rule not in present),
                removed=tuple(
                    rule
                    for rule in file_changes.removed
                    if owners.get(rule) == MANAGED_BY_FILES and self._baseline is not None
                ),
            )
            if changes.is_empty():
                return None
            try:
                new_revision = self.store.apply(
                    changes, actor=actor, expected_revision=revision, managed_by=MANAGED_BY_FILES
                )
            except Conflict as exc:
                if exc.code != "revision_conflict" or attempt == _RETRIES - 1:
                    raise
                continue
            self._log_applied(present, changes, new_revision)
            return new_revision
        return None

    def _log_applied(self, before: set[Rule], changes: ChangeSet, revision: int) -> None:
        log.info(
            "policy files changed: %d rules added, %d removed, store revision %d",
            len(changes.added),
            len(changes.removed),
            revision,
        )
        try:
            after = (before - set(changes.removed)) | set(changes.added)
            diff = diff_rules(before, after, model_path=self.model_path, old_label="store")
            lines = diff.render_text(max_rules=20).splitlines()
            for line in lines[:MAX_LOGGED_IMPACT_LINES]:
                log.info("  %s", line)
        except Exception:  # the impact is informational: never undo an applied change for it
            log.exception("could not compute the access impact of the applied change")

    # -- thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll_once()
            except Exception:  # keep watching whatever happened
                log.exception("policy watcher poll failed")

    def start(self) -> PolicyWatcher:
        self._thread = threading.Thread(target=self._run, name="rolegate-policy-watch", daemon=True)
        self._thread.start()
        log.info("watching %s for policy changes every %ss", self.policy_dir, self.interval)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def start_watcher(settings, *, interval: float = DEFAULT_INTERVAL) -> PolicyWatcher | None:
    """Start the watcher for `serve --watch-policies` (None in werkzeug's reloader child)."""
    if os.environ.get("WERKZEUG_RUN_MAIN") == "true":
        return None  # `--dev`: the reloader's parent process runs the watcher
    from ..engine.model import classify, load_model

    shape = classify(load_model(settings.model_path))
    store = PolicyStore.from_url(settings.database_url)
    watcher = PolicyWatcher(
        settings.policy_dir,
        store,
        data_dir=settings.data_path,
        model_path=settings.model_path,
        resource_function=shape.resource_function,
        default_role=settings.default_role,
        interval=interval,
        allow_regex=settings.allow_regex_patterns,
    )
    return watcher.start()
