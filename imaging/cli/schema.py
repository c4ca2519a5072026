"""`imaging schema upgrade`: bring the index to the newest schema (a deployment's one-shot migration step,
under the database lock; every process also does it at start, finding nothing left to do), and prepare the
storage (its bucket). `imaging schema regenerate`: rewrite the initial Alembic migration from the models
(developers; only while no release has shipped a schema). The composition root is imported first, so every
feature's tables are in the metadata being compared."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

import imaging.app  # noqa: F401  (defines every table)
from imaging.console import ConfigOpt, DataDirOpt, console, open_archive
from imaging.index.db import MIGRATIONS

app = typer.Typer(no_args_is_help=True)


@app.command("upgrade")
def upgrade(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Migrate the index to the newest schema and prepare the storage; exits when done."""
    open_archive(config, data_dir).close()
    console.print("index schema up to date; storage ready")


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
