"""Fixtures for tests/observability: see tests/archive_fixtures.py."""

from tests.archive_fixtures import *  # noqa: F403
