"""Schema revision 0004_scale (worker heartbeats): an index created at 0001 upgrades to it, and what it
creates is what the model defines; processes that start together on a fresh database migrate it once,
one at a time under the database lock (PostgreSQL: an advisory lock; SQLite: the writer lock)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from imaging.index.db import MIGRATIONS, Database
from imaging.jobs.heartbeat import WorkerHeartbeat
from tests.archive_fixtures import PG_ADMIN_URL, _pg_connect

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _config(db: Database) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = db.write_engine
    return cfg


def _upgrade_from_0001(db: Database) -> None:
    command.upgrade(_config(db), "0001")
    assert "worker_heartbeat" not in inspect(db.write_engine).get_table_names()
    db.migrate()
    columns = {c["name"]: c for c in inspect(db.write_engine).get_columns("worker_heartbeat")}
    assert set(columns) == set(WorkerHeartbeat.__table__.columns.keys())
    for column in WorkerHeartbeat.__table__.columns:
        assert columns[column.name]["nullable"] == column.nullable, column.name
    indexes = {i["name"] for i in inspect(db.write_engine).get_indexes("worker_heartbeat")}
    assert indexes == {i.name for i in WorkerHeartbeat.__table__.indexes}
    with db.write_engine.connect() as conn:
        assert "0004_scale" in MigrationContext.configure(conn).get_current_heads()


def test_upgrade_from_0001_sqlite(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'index.sqlite'}")
    try:
        _upgrade_from_0001(db)
    finally:
        db.dispose()


@pytest.fixture
def fresh_pg() -> Any:
    try:
        admin = _pg_connect(PG_ADMIN_URL)
    except Exception as exc:
        pytest.fail(f"PostgreSQL not reachable: {exc}")
    name = f"imaging_mig_{threading.get_ident() % 100000}"
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.mark.postgres
def test_upgrade_from_0001_postgres(fresh_pg: str) -> None:
    db = Database(fresh_pg)
    try:
        _upgrade_from_0001(db)
    finally:
        db.dispose()


@pytest.mark.postgres
def test_concurrent_migrations_run_once(fresh_pg: str) -> None:
    """Four processes' worth of Database objects migrate a fresh database at the same moment: all succeed
    and the schema is whole (without the lock the later ones fail on tables that appeared meanwhile)."""
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def migrate() -> None:
        db = Database(fresh_pg)
        try:
            start.wait()
            db.migrate()
        except BaseException as exc:
            errors.append(exc)
        finally:
            db.dispose()

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    db = Database(fresh_pg)
    try:
        with db.write_engine.connect() as conn:
            heads = set(MigrationContext.configure(conn).get_current_heads())
            assert "0004_scale" in heads
            assert conn.execute(text("SELECT count(*) FROM worker_heartbeat")).scalar() == 0
    finally:
        db.dispose()
