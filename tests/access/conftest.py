"""Fixtures for tests/access: the DICOMweb app on a real port (tests/dicomweb/conftest.py)."""

from tests.dicomweb.conftest import fresh, seeded  # noqa: F401
