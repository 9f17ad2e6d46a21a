"""Policy storage: the SQL store (rules, revision, change log), its change feed, and the policy
CSV files. `rolegate.store.source` holds the protocols the rest of Rolegate types against."""

from .csvfiles import (
    MAX_POLICY_FILE_BYTES,
    Location,
    PolicyProblem,
    SourcedRule,
    format_rule_line,
    read_policy_dir,
    read_policy_file,
    scan_policy_dir,
    scan_policy_file,
    write_policy_dir,
)
from .db import casbin_rule, change_log, make_engine, metadata, policy_state
from .feed import ChangeFeed, NotifyFeed
from .policies import (
    ChangeEntry,
    ChangeSet,
    DomainReload,
    PolicyStore,
    entry_hash,
    rule_problem,
    validate_rule,
)
from .schema import init_schema
from .source import ManagedPolicySource, PolicySource, Subscribable

__all__ = [
    "MAX_POLICY_FILE_BYTES",
    "ChangeFeed",
    "ManagedPolicySource",
    "NotifyFeed",
    "PolicySource",
    "Subscribable",
    "ChangeEntry",
    "ChangeSet",
    "DomainReload",
    "Location",
    "PolicyProblem",
    "PolicyStore",
    "SourcedRule",
    "casbin_rule",
    "change_log",
    "entry_hash",
    "format_rule_line",
    "init_schema",
    "make_engine",
    "metadata",
    "policy_state",
    "read_policy_dir",
    "read_policy_file",
    "rule_problem",
    "scan_policy_dir",
    "scan_policy_file",
    "validate_rule",
    "write_policy_dir",
]
