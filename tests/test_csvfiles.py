"""Policy CSV files: parsing with file:line errors, Casbin tokenizer traps, canonical export."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from casbin.persist.adapter import _extract_tokens
from hypothesis import given, settings
from hypothesis import strategies as st

from rolegate.config import REPO_ROOT
from rolegate.errors import PolicyError
from rolegate.store import (
    Location,
    csvfiles,
    format_rule_line,
    read_policy_dir,
    read_policy_file,
    scan_policy_dir,
    write_policy_dir,
)

SAMPLES = REPO_ROOT / "policies"
HEADER = "# header comment\ng, alice, admin, acme\n"  # the line under test is line 3


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def rules_of(sourced) -> list[tuple]:
    return [item.rule for item in sourced]


# --------------------------------------------------------------------------- reading


def test_sample_policies_read_without_error():
    sourced = read_policy_dir(SAMPLES)
    assert len(sourced) > 20
    first = sourced[0]
    assert first.rule == ("g", "alice", "admin", "acme")
    assert str(first.location) == f"{SAMPLES / 'acme.csv'}:6"
    assert first.managed_by == "api"  # below `# rolegate: managed-by api`
    assert ("p", "viewer", "*", "/projects/*", "read", "allow") in rules_of(sourced)
    assert {Path(item.location.path).name for item in sourced} == {
        "acme.csv",
        "globex.csv",
        "roles.csv",
    }


def test_comments_blank_lines_spacing_crlf_and_bom(tmp_path: Path):
    content = (
        "\ufeff# a comment\r\n"
        "\r\n"
        "   # an indented comment\r\n"
        "g,alice,admin,acme\r\n"
        "  p ,  viewer , * , /projects/* , read , allow  \r\n"
        "\t\n"
        'g, "bob", "editor", acme\n'
        "p, owner, *, /documents/#frag, read, allow"  # no trailing newline; '#' inside a value
    )
    sourced = read_policy_file(write(tmp_path / "a.csv", content))
    assert [(item.rule, item.location.line) for item in sourced] == [
        (("g", "alice", "admin", "acme"), 4),
        (("p", "viewer", "*", "/projects/*", "read", "allow"), 5),
        (("g", "bob", "editor", "acme"), 7),  # quotes honoured
        (("p", "owner", "*", "/documents/#frag", "read", "allow"), 8),
    ]


@pytest.mark.parametrize(
    ("line", "code", "fragment"),
    [
        ("x, a, b, acme", "unknown-ptype", "unknown rule type 'x'"),
        ("P, a, b, acme", "unknown-ptype", "unknown rule type"),
        ("p, a, acme, /x, read", "field-count", "`p` rules have 5 values"),
        ("g, a, b, acme, extra", "field-count", "`g` rules have 3 values"),
        ("g, a, b, acme,", "field-count", "found 4"),
        ("g, a, , acme", "empty-value", "the role (value 2) is empty"),
        ('g, a, "", acme', "empty-value", "is empty"),
        ("p, a, acme, /x, read, permit", "bad-effect", "`allow` or `deny`"),
        ("p, a, acme, /x, read, Allow", "bad-effect", "`allow` or `deny`"),
        ("g, a\x0bb, c, acme", "control-char", "U+000B"),
        ("g, a\x1b[31m, c, acme", "control-char", "U+001B"),
        ("g, a\u200bb, c, acme", "control-char", "U+200B"),
        ('g, "a,b", c, acme', "casbin-misread", "contains ','"),
        ('g, a"b, c, acme', "casbin-misread", "contains '\"'"),
        ('g, "a""b", c, acme', "casbin-misread", "contains '\"'"),
        ("p, a, acme, /x(y), read, allow", "casbin-misread", "contains '('"),
        ("p, a, acme, /x], read, allow", "casbin-misread", "contains ']'"),
        ("g, a, b, acme # why", "casbin-misread", "comment"),
        ("g, a, b, # acme", "casbin-misread", "comment"),
        ('g, "a, b, acme', "syntax", "malformed quoting"),
        ("g, " + "a" * 256 + ", b, acme", "too-long", "at most 255"),
    ],
)
def test_line_errors_name_file_and_line(tmp_path: Path, line: str, code: str, fragment: str):
    path = write(tmp_path / "policies" / "acme.csv", HEADER + line + "\ng, bob, viewer, acme\n")
    with pytest.raises(PolicyError) as caught:
        read_policy_dir(tmp_path / "policies")
    error = caught.value
    assert error.location == f"{path}:3"
    assert str(error).startswith(f"{path}:3: ")
    assert fragment in error.message
    assert error.problem.code == code
    assert error.code == "invalid_policy" and error.http_status == 400


def test_values_casbin_would_misread_really_are_misread():
    """The premise of `casbin-misread`: Casbin's tokenizer keeps quotes and splits on commas."""
    assert _extract_tokens('g, "a,b", c, acme') == ["g", '"a', 'b"', "c", "acme"]
    assert _extract_tokens("g, a, b, acme # why") == ["g", "a", "b", "acme # why"]
    assert _extract_tokens("p, a, acme, f(x, y), read, allow") == [
        "p",
        "a",
        "acme",
        "f(x, y)",
        "read",
        "allow",
    ]
    with pytest.raises(IndexError):
        _extract_tokens("p, a, acme, /x), read, allow")


def test_column_points_at_the_bad_value(tmp_path: Path):
    write(tmp_path / "d" / "a.csv", "p, alice, acme, /docs, read, maybe\n")
    _, problems = scan_policy_dir(tmp_path / "d")
    assert [(p.location.line, p.location.column, p.code) for p in problems] == [
        (1, 30, "bad-effect")
    ]


def test_scan_collects_every_problem_in_file_order(tmp_path: Path):
    directory = tmp_path / "policies"
    write(directory / "b.csv", "g, a, b\ng, ok, ok, b\np, a, b, c, d, e\n")
    write(directory / "a.csv", "g, ok, ok, a\n\ng, x, , a\n")
    write(directory / "sub" / "c.csv", b"g, caf\xe9, r, c\n")
    rules, problems = scan_policy_dir(directory)
    assert rules_of(rules) == [("g", "ok", "ok", "a"), ("g", "ok", "ok", "b")]
    assert [(Path(p.location.path).name, p.location.line, p.code) for p in problems] == [
        ("a.csv", 3, "empty-value"),
        ("b.csv", 1, "field-count"),
        ("b.csv", 3, "bad-effect"),
        ("c.csv", 1, "encoding"),
    ]
    with pytest.raises(PolicyError) as caught:
        read_policy_dir(directory)
    assert caught.value.location == f"{directory / 'a.csv'}:3"


def test_dir_layout_subdirectories_tests_and_other_files(tmp_path: Path):
    directory = tmp_path / "policies"
    write(directory / "roles.csv", "g, admin, editor, *\n")
    write(directory / "orgs" / "acme.csv", "g, alice, admin, acme\n")
    write(directory / "tests" / "broken.csv", "this is not a policy\n")
    write(directory / "orgs" / "tests" / "broken.csv", "neither is this\n")
    write(directory / ".git" / "x.csv", "nor this\n")
    write(directory / "README.md", "# not CSV\n")
    write(directory / "notes.txt", "x, y\n")
    sourced = read_policy_dir(directory)
    assert [(Path(i.location.path).relative_to(directory).as_posix(), i.rule) for i in sourced] == [
        ("orgs/acme.csv", ("g", "alice", "admin", "acme")),
        ("roles.csv", ("g", "admin", "editor", "*")),
    ]


def test_missing_directory_is_refused(tmp_path: Path):
    with pytest.raises(PolicyError, match="does not exist"):
        read_policy_dir(tmp_path / "nope")
    write(tmp_path / "file.csv", "g, a, b, c\n")
    with pytest.raises(PolicyError, match="not a directory"):
        read_policy_dir(tmp_path / "file.csv")


def test_non_utf8_file_is_refused_with_its_line(tmp_path: Path):
    path = write(tmp_path / "d" / "acme.csv", HEADER.encode() + b"g, jos\xe9, admin, acme\n")
    with pytest.raises(PolicyError) as caught:
        read_policy_dir(tmp_path / "d")
    assert caught.value.location == f"{path}:3"
    assert "not valid UTF-8" in caught.value.message
    assert caught.value.problem.code == "encoding"


def test_binary_file_is_refused(tmp_path: Path):
    path = write(tmp_path / "d" / "acme.csv", "g, a, b, acme\n".encode("utf-16"))
    with pytest.raises(PolicyError) as caught:
        read_policy_file(path)
    assert caught.value.problem.code == "binary"
    assert "NUL" in caught.value.message
    assert caught.value.location.startswith(f"{path}:")


def test_huge_file_is_refused(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(csvfiles, "MAX_POLICY_FILE_BYTES", 64)
    path = write(tmp_path / "d" / "acme.csv", "g, alice, admin, acme\n" * 10)
    with pytest.raises(PolicyError) as caught:
        read_policy_dir(tmp_path / "d")
    assert caught.value.problem.code == "too-large"
    assert caught.value.location == f"{path}:1"
    write(tmp_path / "e" / "small.csv", "g, alice, admin, acme\n")
    assert len(read_policy_dir(tmp_path / "e")) == 1


def test_symlinks_outside_the_directory_are_refused(tmp_path: Path):
    directory = tmp_path / "policies"
    write(directory / "roles.csv", "g, admin, editor, *\n")
    outside = write(tmp_path / "elsewhere" / "secret.csv", "g, mallory, admin, acme\n")
    os.symlink(outside, directory / "acme.csv")
    with pytest.raises(PolicyError) as caught:
        read_policy_dir(directory)
    assert caught.value.problem.code == "symlink-outside"
    assert caught.value.location == f"{directory / 'acme.csv'}:1"

    os.remove(directory / "acme.csv")
    os.symlink(outside.parent, directory / "orgs")
    _, problems = scan_policy_dir(directory)
    assert [p.code for p in problems] == ["symlink-outside"]

    os.remove(directory / "orgs")
    write(directory / "real" / "acme.csv", "g, alice, admin, acme\n")
    os.symlink(directory / "real" / "acme.csv", directory / "link.csv")  # inside: fine
    assert sorted(rules_of(read_policy_dir(directory))) == [
        ("g", "admin", "editor", "*"),
        ("g", "alice", "admin", "acme"),
        ("g", "alice", "admin", "acme"),
    ]


def test_location_str():
    assert str(Location("policies/acme.csv", 7, 12)) == "policies/acme.csv:7"
    assert Location("x.csv", 1).column == 1


# --------------------------------------------------------------------------- writing


def test_export_round_trips_and_is_byte_identical(tmp_path: Path):
    rules = rules_of(read_policy_dir(SAMPLES))
    first = write_policy_dir(tmp_path / "one", reversed(rules))
    second = write_policy_dir(tmp_path / "two", rules)
    assert [path.name for path in first] == ["roles.csv", "acme.csv", "globex.csv"]
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()
    assert sorted(rules_of(read_policy_dir(tmp_path / "one"))) == sorted(set(rules))

    again = write_policy_dir(tmp_path / "one", rules)
    assert [path.read_bytes() for path in again] == [path.read_bytes() for path in second]


def test_export_format(tmp_path: Path):
    rules = [
        ("p", "viewer", "*", "/projects/*", "read", "allow"),
        ("g", "member", "viewer", "*"),
        ("g", "admin", "editor", "*"),
        ("p", "admin", "*", "/members", "manage", "allow"),
        ("g", "bob", "editor", "acme"),
        ("g", "bob", "editor", "acme"),  # duplicates collapse
    ]
    write(tmp_path / "notes.txt", "kept\n")
    write(tmp_path / "old.csv", "g, gone, x, old\n")
    paths = write_policy_dir(tmp_path, rules)
    assert (tmp_path / "roles.csv").read_text() == (
        "g, admin, editor, *\n"
        "# rolegate: global-membership\n"  # `member` holds no rule and no role holds it
        "g, member, viewer, *\n"
        "\n"
        "p, admin, *, /members, manage, allow\n"
        "p, viewer, *, /projects/*, read, allow\n"
    )
    assert (tmp_path / "acme.csv").read_text() == "g, bob, editor, acme\n"
    assert paths == [tmp_path / "roles.csv", tmp_path / "acme.csv"]
    assert (tmp_path / "notes.txt").exists() and (tmp_path / "old.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "acme.csv",
        "notes.txt",
        "old.csv",
        "roles.csv",
    ]
    assert write_policy_dir(tmp_path / "empty", []) == []


@pytest.mark.parametrize("org", ["../evil", "a/b", ".hidden", "roles", "ROLES", "con", "", "a b"])
def test_export_refuses_unsafe_org_file_names(tmp_path: Path, org: str):
    with pytest.raises(PolicyError):
        write_policy_dir(tmp_path / "out", [("g", "alice", "admin", org)])
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_export_refuses_invalid_rules_and_case_collisions(tmp_path: Path):
    with pytest.raises(PolicyError, match="contains ','"):
        write_policy_dir(tmp_path, [("g", "a,b", "admin", "acme")])
    with pytest.raises(PolicyError, match="differ only in case"):
        write_policy_dir(tmp_path, [("g", "a", "admin", "Acme"), ("g", "a", "admin", "acme")])
    assert list(tmp_path.iterdir()) == []


def test_format_rule_line():
    assert format_rule_line(("p", "editor", "*", "/projects/*", "update", "allow")) == (
        "p, editor, *, /projects/*, update, allow"
    )
    assert format_rule_line(["g", "alice", "admin", "acme"]) == "g, alice, admin, acme"


_VALUE = st.text(alphabet=st.sampled_from("abcxyzAZ019/*:._-@ é"), min_size=1, max_size=12).filter(
    lambda value: value == value.strip()
)
_ORG = st.one_of(st.just("*"), st.from_regex(r"[a-z0-9][a-z0-9_-]{0,8}", fullmatch=True))
_RULE = st.one_of(
    st.tuples(st.just("p"), _VALUE, _ORG, _VALUE, _VALUE, st.sampled_from(["allow", "deny"])),
    st.tuples(st.just("g"), _VALUE, _VALUE, _ORG),
).filter(lambda rule: rule[2 if rule[0] == "p" else 3] != "roles")


@settings(max_examples=60, deadline=None)
@given(st.lists(_RULE, max_size=30))
def test_export_then_read_is_the_same_rule_set(rules):
    with tempfile.TemporaryDirectory() as directory:
        write_policy_dir(Path(directory), rules)
        sourced = read_policy_dir(Path(directory))
        assert sorted(rules_of(sourced)) == sorted(set(rules))
        # And Casbin's own tokenizer reads every exported line exactly as we do.
        for item in sourced:
            assert tuple(_extract_tokens(format_rule_line(item.rule))) == item.rule
