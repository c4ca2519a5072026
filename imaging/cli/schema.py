"""`imaging schema regenerate`: rewrite the initial Alembic migration from the models (developers; only
while no release has shipped a schema). The composition root is imported first, so every feature's tables
are in the metadata being compared."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

import imaging.app  # noqa: F401  (defines every table)
from imaging.index.db import MIGRATIONS

app = typer.Typer(no_args_is_help=True)


@app.command("regenerate")
def regenerate() -> None:
    """Regenerate migrations/versions/0001_initial_schema.py from the models."""
    for old in (MIGRATIONS / "versions").glob("0001_*.py"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{Path(tmp) / 'gen.sqlite'}")
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["engine"] = engine
        command.revision(cfg, message="initial schema", autogenerate=True, rev_id="0001")
