"""Research projects: a name (= partition), de-identification options, a secret key and its members
(researcher tokens bound to the project). The partition itself — its table, key file and Deidentifier — is
what the ingest layer needs too, so it lives in `imaging.ingest.partitions`; this module creates and lists
projects and keeps the optional re-identification table."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging.archive import Archive
from imaging.errors import Conflict, InvalidRequest
from imaging.ingest.partitions import Project, parse_option, project_exists, write_key
from imaging.partition import is_project_name


def create_project(
    archive: Archive,
    name: str,
    *,
    options: list[str] | None = None,
    description: str = "",
    key: bytes | None = None,
    keep_reidentification: bool = False,
) -> Project:
    """Create a project; its key is generated (or given, to share pseudonyms with other sites) and
    written with 0600 permissions outside the data directory."""
    if not is_project_name(name):
        raise InvalidRequest("project names are 1-64 lower-case letters, digits, '-' or '_', not 'clinical'")
    try:
        chosen = [parse_option(o).value for o in options or []]
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    with archive.db.read() as session:
        if project_exists(session, name):
            raise Conflict("a project of that name exists")
    write_key(archive.settings.keys_path, name, key)
    with archive.db.write() as session:
        project = Project(
            name=name, options=chosen, description=description, keep_reidentification=keep_reidentification
        )
        session.add(project)
    return project


def list_projects(session: Session) -> list[Project]:
    return list(session.scalars(select(Project).order_by(Project.name)))


class ReidentificationTable:
    """source UID ↔ de-identified UID per project, in its own SQLite file beside the keys (admin only)."""

    def __init__(self, keys_dir: Path) -> None:
        self.path = keys_dir / "reidentification.sqlite"

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        conn = sqlite3.connect(self.path)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS uid_map (project TEXT, deid_uid TEXT, source_uid TEXT,"
            " PRIMARY KEY (project, deid_uid))"
        )
        os.chmod(self.path, 0o600)
        return conn

    def add(self, project: str, uid_map: dict[str, str]) -> None:
        with self._connect() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO uid_map VALUES (?, ?, ?)",
                [(project, new, old) for old, new in uid_map.items()],
            )

    def source_of(self, project: str, deid_uid: str) -> str | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT source_uid FROM uid_map WHERE project = ? AND deid_uid = ?", (project, deid_uid)
            ).fetchone()
        return None if row is None else str(row[0])
