"""Every feature adds its tables and columns as an Alembic revision of its own (a head of its own): a database
migrated to every head must be exactly what the models define, on both index backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from imaging.cli.schema import differences


def test_migrations_match_the_models_on_sqlite(tmp_path: Path) -> None:
    assert differences(f"sqlite:///{tmp_path / 'index.sqlite'}") == []


@pytest.mark.postgres
def test_migrations_match_the_models_on_postgresql(pg_database: str) -> None:
    assert differences(pg_database) == []
