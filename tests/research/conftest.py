"""Research tests run on SQLite and PostgreSQL: see tests/archive_fixtures.py."""

from tests.archive_fixtures import *  # noqa: F403
