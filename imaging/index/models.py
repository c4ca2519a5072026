"""Every module that defines tables on `Base`, imported so Alembic and tests see the whole schema.
A feature package that adds tables adds its module here, then regenerates the migration:
`python -m imaging.index.migrations.regenerate`."""

from __future__ import annotations

import importlib

MODEL_MODULES = (
    "imaging.index.schema",
    "imaging.audit",
    "imaging.sharing.consent",
    "imaging.sharing.models",
    "imaging.projects",
    "imaging.cohorts",
    "triage.records",
)


def load_all() -> None:
    for name in MODEL_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
