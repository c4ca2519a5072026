"""Fixtures for the HTTP fuzz tests: the seeded DICOMweb app on a real port (tests/dicomweb/conftest.py)."""

from tests.dicomweb.conftest import fresh, seeded  # noqa: F401
