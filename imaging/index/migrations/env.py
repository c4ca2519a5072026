"""Alembic environment: the engine is handed in by imaging.index.db.Database.migrate.

Upgrades need no models. Autogeneration (`imaging schema revision`, `check`) compares against Base.metadata, which
holds every table once the composition root (imaging.app) has been imported."""

from alembic import context

from imaging.orm import Base

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # `alembic` command line: take the URL from the ini/env
    from sqlalchemy import create_engine

    engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///data/index.sqlite")

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
