"""Migration 0006_federation: an index created at revision 0001 upgrades to the heads, and then holds exactly
the federation tables the models define (no difference for autogeneration to find)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

import imaging.app  # noqa: F401  (defines every table, as autogeneration sees them)
from imaging.index.db import MIGRATIONS, Database
from imaging.orm import Base

TABLES = {
    "federation_incoming",
    "federation_outgoing",
    "federation_peer",
    "federation_query",
    "federation_request_study",
    "federation_token_use",
}


def test_upgrade_from_0001(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    command.upgrade(config, "0001")
    assert not TABLES & set(inspect(engine).get_table_names())
    engine.dispose()

    db = Database(url)
    db.migrate()
    assert set(inspect(db.write_engine).get_table_names()) >= TABLES
    with db.write_engine.connect() as connection:
        heads = {row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))}
        assert "0006_federation" in heads
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert [d for d in differences if "federation" in repr(d)] == []
    db.dispose()
