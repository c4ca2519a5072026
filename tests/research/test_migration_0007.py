"""Revision 0007_ui (issue 17) upgrades an index created at 0001 and leaves `cohort_export` as the model
defines it."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

import imaging.app  # noqa: F401  (every table in the metadata)
from imaging.archive import Archive
from imaging.config import load_settings
from imaging.index.db import MIGRATIONS
from imaging.orm import Base
from imaging.research.exports import CohortExport

TABLE = CohortExport.__tablename__


def test_upgrade_from_0001_creates_cohort_export(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    engine = create_engine(f"sqlite:///{data / 'index.sqlite'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    command.upgrade(cfg, "0001")
    assert TABLE not in inspect(engine).get_table_names()
    engine.dispose()
    archive = Archive.open(load_settings(data_dir=data))  # upgrades to every head
    try:
        with archive.db.read() as session:
            conn = session.connection()
            heads = {row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))}
            assert "0007_ui" in heads
            assert TABLE in inspect(conn).get_table_names()
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert [d for d in diff if TABLE in repr(d)] == []
    finally:
        archive.close()
