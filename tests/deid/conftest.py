"""Fixtures of the de-identification tests."""

from __future__ import annotations

import pytest

from tests.deid import corpus as corpus_module

KEY = b"test-project-key-0123456789abcdef"
OTHER_KEY = b"another-project-key-fedcba987654"


@pytest.fixture
def corpus() -> corpus_module.Corpus:
    """A fresh corpus per test (tests may edit it; the engine must not)."""
    return corpus_module.build()
