"""Shared fixtures. External programs: a test that needs one is marked; in CI (CI=true) a missing
program fails the test instead of skipping it."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

import imaging.app  # noqa: F401  (the composition root wires the features: event subscriptions, models)

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_program(path: str) -> str:
    """Return `path` if executable; skip locally, fail in CI."""
    found = shutil.which(path)
    if found is None:
        message = f"required program {path} is not installed"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture(autouse=True)
def _restore_pydicom_validation() -> object:
    """dicomweb-client sets pydicom's global validation mode to RAISE and does not restore it when the
    wrapped call raises; keep that from leaking into later tests."""
    from pydicom import config

    reading, writing = config.settings.reading_validation_mode, config.settings.writing_validation_mode
    yield
    config.settings.reading_validation_mode, config.settings.writing_validation_mode = reading, writing
