"""The declarative base every table of the index is defined on, and the clock rows are stamped with.

Ground layer: the index's own tables (imaging.index.schema) and the ground packages that keep records in
the index (imaging.audit, imaging.consent) all build on it, so none of them needs the other to exist."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import DeclarativeBase


def utcnow() -> dt.datetime:
    """Now in UTC, naive: every timestamp column holds UTC (SQLite keeps no time zone)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass
