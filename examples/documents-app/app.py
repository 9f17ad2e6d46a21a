"""Example: a documents app that lists only the rows Rolegate allows, with one SQL query.

    ROLEGATE_URL=http://127.0.0.1:8000 DATABASE_URL=postgresql+psycopg://... flask --app app run

Schema (the Supabase-style seed): organizations, team_members, projects, documents (with
created_by, the owner). Authorization lives in Rolegate: the app forwards the caller's token to
`POST /v1/plan` and turns the answer into a WHERE clause with `rolegate.sqlalchemy.plan_filter`,
so "list my documents" never fetches a row the caller may not read, and never needs one
`/v1/check` per row.

    GET /documents                 documents the caller may read
    GET /documents?action=update   documents the caller may update (owner or admin)
    GET /projects/updatable        projects the caller may update
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import sqlalchemy as sa
from flask import Flask, jsonify, request
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from rolegate.sqlalchemy import plan_filter


class Base(DeclarativeBase):
    pass


class Organization(Base):
    __tablename__ = "organizations"
    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))


class TeamMember(Base):
    __tablename__ = "team_members"
    org_id: Mapped[str] = mapped_column(sa.ForeignKey("organizations.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    role: Mapped[str] = mapped_column(sa.String(64))  # mirrored into Rolegate as `g` rules


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(primary_key=True)
    org_id: Mapped[str] = mapped_column(sa.ForeignKey("organizations.id"))
    name: Mapped[str] = mapped_column(sa.String(200))
    created_by: Mapped[str | None] = mapped_column(sa.String(64))


class Document(Base):
    __tablename__ = "documents"
    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    org_id: Mapped[str | None] = mapped_column(sa.ForeignKey("organizations.id"))
    project_id: Mapped[int | None] = mapped_column(sa.ForeignKey("projects.id"))
    title: Mapped[str] = mapped_column(sa.String(200))
    created_by: Mapped[str | None] = mapped_column(sa.String(64))  # the owner


# Each plan field -> the column holding it. Project ids are integers; plans compare text.
DOCUMENT_COLUMNS = {"org": Document.org_id, "owner": Document.created_by, "id": Document.id}
PROJECT_COLUMNS = {
    "org": Project.org_id,
    "owner": Project.created_by,
    "id": sa.cast(Project.id, sa.String),
}


class RolegateError(Exception):
    def __init__(self, status: int, body: dict):
        super().__init__(body)
        self.status, self.body = status, body


def fetch_plan(rolegate_url: str, authorization: str, action: str, resource: str) -> dict:
    """POST /v1/plan with the caller's own credentials (the token decides subject and org)."""
    call = urllib.request.Request(  # noqa: S310 (create_app admits http(s) URLs only)
        f"{rolegate_url}/v1/plan",
        data=json.dumps({"action": action, "resource": resource}).encode(),
        headers={"Content-Type": "application/json", "Authorization": authorization},
        method="POST",
    )
    try:
        with urllib.request.urlopen(call, timeout=10) as answer:  # noqa: S310
            return json.load(answer)
    except urllib.error.HTTPError as error:
        body = json.loads(error.read() or b"{}")
        raise RolegateError(error.code, body) from None


def create_app(database_url: str, rolegate_url: str) -> Flask:
    if not rolegate_url.startswith(("http://", "https://")):
        raise ValueError(f"rolegate_url must be an http(s) URL, got {rolegate_url!r}")
    app = Flask(__name__)
    database = sa.create_engine(database_url)
    app.extensions["database"] = database

    def plan(action: str, resource: str) -> dict:
        return fetch_plan(rolegate_url, request.headers.get("Authorization", ""), action, resource)

    @app.errorhandler(RolegateError)
    def rolegate_refused(error: RolegateError):
        return jsonify(error.body), error.status

    @app.get("/documents")
    def list_documents():
        action = request.args.get("action", "read")
        allowed = plan_filter(plan(action, "/documents/:id"), DOCUMENT_COLUMNS)
        with Session(database) as session:
            rows = session.scalars(sa.select(Document).where(allowed).order_by(Document.id))
            return {"documents": [{"id": d.id, "org": d.org_id, "title": d.title} for d in rows]}

    @app.get("/projects/updatable")
    def updatable_projects():
        allowed = plan_filter(plan("update", "/projects/:id"), PROJECT_COLUMNS)
        with Session(database) as session:
            rows = session.scalars(sa.select(Project).where(allowed).order_by(Project.id))
            return {"projects": [{"id": p.id, "org": p.org_id, "name": p.name} for p in rows]}

    return app


def create_schema(database_url: str) -> None:
    Base.metadata.create_all(sa.create_engine(database_url))
