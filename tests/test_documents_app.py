"""The example documents app (examples/documents-app) on PostgreSQL, against a real Rolegate
server: every list it returns equals the rows `/v1/check` allows one by one."""

from __future__ import annotations

import importlib.util
import itertools
import sys

import pytest
import sqlalchemy as sa
from pg import fresh_schema_url, postgres_url_or_skip

from rolegate.config import REPO_ROOT

APP_FILE = REPO_ROOT / "examples" / "documents-app" / "app.py"
USERS = ("alice", "bob", "carol", "frank", "erin", "mallory")


@pytest.fixture
def database_url():
    """A fresh PostgreSQL schema for the app's tables."""
    with fresh_schema_url(postgres_url_or_skip()) as url:
        yield url


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("documents_app", APP_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["documents_app"] = module  # SQLAlchemy resolves the annotations through it
    spec.loader.exec_module(module)
    return module


def seed(module, url: str) -> None:
    module.create_schema(url)
    database = sa.create_engine(url, poolclass=sa.NullPool)
    with module.Session(database) as session:
        session.add_all(
            [
                module.Organization(id="acme", name="Acme"),
                module.Organization(id="globex", name="Globex"),
                module.TeamMember(org_id="acme", user_id="bob", role="editor"),
                module.TeamMember(org_id="globex", user_id="frank", role="contractor"),
            ]
        )
        session.flush()
        session.add_all(
            [
                module.Project(id=1, org_id="acme", name="site", created_by="bob"),
                module.Project(id=2, org_id="acme", name="app", created_by="alice"),
                module.Project(id=3, org_id="globex", name="ops", created_by="erin"),
                module.Project(id=4, org_id="globex", name="web", created_by="bob"),
            ]
        )
        session.flush()
        documents = [
            ("plan", "acme", 1, "bob"),
            ("Plan", "acme", 1, "alice"),
            ("q3%", "acme", 2, None),
            ("q_3", "acme", None, "carol"),
            ("finance", "globex", 3, "frank"),
            ("notes", "globex", 4, "bob"),
            ("orphan", None, None, "bob"),  # no org: never visible
            ("ünï", "globex", None, "erin"),
        ]
        session.add_all(
            module.Document(id=i, org_id=o, project_id=p, title=f"doc {i}", created_by=c)
            for i, o, p, c in documents
        )
        session.commit()
    database.dispose()


def checked(live, user, token_org, rows, resource, action) -> list:
    """The rows `/v1/check` allows, asked one by one (what the app would do without plans)."""
    allowed = []
    for row_id, org, owner in rows:
        if org is None or token_org not in (None, org):
            continue
        extra = {"owner": owner} if owner else {}
        answer = live.check(user, token_org, f"{resource}/{row_id}", action, org=org, **extra)
        assert answer.status == 200, answer.text
        if answer.body["allowed"]:
            allowed.append(row_id)
    return allowed


def test_lists_equal_row_by_row_checks(example, live, database_url):
    seed(example, database_url)
    app = example.create_app(database_url, live.url).test_client()
    database = sa.create_engine(database_url, poolclass=sa.NullPool)
    with database.connect() as conn:
        documents = conn.execute(
            sa.text("SELECT id, org_id, created_by FROM documents ORDER BY id")
        )
        documents = [tuple(row) for row in documents]
        projects = conn.execute(sa.text("SELECT id, org_id, created_by FROM projects ORDER BY id"))
        projects = [tuple(row) for row in projects]
    database.dispose()
    seen_any = set()
    for user, token_org in itertools.product(USERS, (None, "globex")):
        headers = live.auth(user, token_org)
        for action in ("read", "update"):
            listed = app.get(f"/documents?action={action}", headers=headers)
            assert listed.status_code == 200, listed.get_json()
            got = [d["id"] for d in listed.get_json()["documents"]]
            expected = checked(live, user, token_org, documents, "/documents", action)
            assert sorted(got) == sorted(expected), (user, token_org, action)
            seen_any.update(got)
        listed = app.get("/projects/updatable", headers=headers)
        got = [p["id"] for p in listed.get_json()["projects"]]
        assert got == [
            int(i) for i in checked(live, user, token_org, projects, "/projects", "update")
        ]
    assert "orphan" not in seen_any
    assert {"plan", "Plan", "q3%", "q_3", "notes"} <= seen_any


def test_specific_lists(example, live, database_url):
    seed(example, database_url)
    app = example.create_app(database_url, live.url).test_client()

    def ids(path, user, org=None, key="documents"):
        return [row["id"] for row in app.get(path, headers=live.auth(user, org)).get_json()[key]]

    # bob: editor in acme, viewer in globex; updates documents only as their creator
    assert ids("/documents?action=update", "bob") == ["notes", "plan"]
    assert ids("/projects/updatable", "bob", key="projects") == [1, 2]
    # alice administers acme: every acme document, not globex's
    assert ids("/documents?action=update", "alice") == ["Plan", "plan", "q3%", "q_3"]
    assert ids("/documents", "mallory") == []
    assert app.get("/documents").status_code == 401  # no token: Rolegate's answer passes through
