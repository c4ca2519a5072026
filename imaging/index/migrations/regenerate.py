"""Regenerate the initial migration from the models (only while no release has shipped a schema).

Usage: python -m imaging.index.migrations.regenerate
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine

from imaging.index.models import load_all

VERSIONS = Path(__file__).parent / "versions"


def main() -> None:
    load_all()
    for old in VERSIONS.glob("0001_*.py"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{tmp}/gen.sqlite")
        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent))
        cfg.attributes["engine"] = engine
        command.revision(cfg, message="initial schema", autogenerate=True, rev_id="0001")


if __name__ == "__main__":
    main()
