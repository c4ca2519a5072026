"""Revision 0005_identity upgrades an index created at 0001 (the tokens and audit records it holds are kept)
and leaves the tables of this revision as the models define them."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

import imaging.app  # noqa: F401  (every table in the metadata)
from imaging.archive import Archive
from imaging.config import load_settings
from imaging.index.db import MIGRATIONS
from imaging.orm import Base

TABLES = {"api_token", "audit_record", "audit_cursor"}


def test_upgrade_from_0001(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'index.sqlite'}"
    engine = create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    command.upgrade(cfg, "0001")
    with engine.begin() as conn:
        digest = "a" * 64
        conn.execute(
            text(
                "INSERT INTO api_token (token_hash, role, project, description, created_at, revoked)"
                " VALUES (:h, 'admin', '', 'old', '2026-01-01 00:00:00', 0)"
            ),
            {"h": digest},
        )
        conn.execute(
            text(
                "INSERT INTO audit_record (event_id, action, outcome, user, source, partition,"
                ' "StudyInstanceUID", patient_ref, detail, created_at)'
                " VALUES ('110112', 'E', '0', 'cli', '', '', '', '', 'old', '2026-01-01 00:00:00')"
            )
        )
    engine.dispose()
    archive = Archive.open(load_settings(data_dir=data))
    try:
        with archive.db.read() as session:
            conn = session.connection()
            row = conn.execute(text("SELECT created_by, revoked_at FROM api_token")).one()
            assert tuple(row) == ("", None)
            audit_row = conn.execute(text("SELECT event_type, access_point, detail FROM audit_record")).one()
            assert tuple(audit_row) == ("", "", "old")
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert [d for d in diff if _table_of(d) in TABLES] == []
    finally:
        archive.close()


def _table_of(difference: object) -> str:
    first = difference[0] if isinstance(difference, list) else difference
    for item in first if isinstance(first, tuple) else ():
        name = getattr(item, "name", None)
        table = getattr(item, "table", None)
        if table is not None:
            return str(table.name)
        if isinstance(item, str) and item in TABLES:
            return item
        if name in TABLES:
            return str(name)
    return ""
