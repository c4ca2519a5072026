"""Fuzzing bounded in time, and the corpus of what it found.

Each fuzz test runs Hypothesis in short batches until its time budget is spent (`IMAGING_FUZZ_SECONDS`, 30 s
by default; CI keeps the default): Hypothesis has no wall-clock budget of its own, and one long run would
stop only at `max_examples`. Every batch starts from a fresh seed, so each run explores new inputs.

An input that fails is written to `tests/fuzz/corpus/<target>/found-<sha1>.bin` before the test fails (the
shrunk one last), to be committed: tests/fuzz/test_corpus.py replays the corpus in every normal test run.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"
SECONDS = float(os.environ.get("IMAGING_FUZZ_SECONDS", "30"))


_deadline = [0.0]


def run_for(seconds: float, batch: Callable[[], None]) -> int:
    """Call `batch` (a Hypothesis test) until `seconds` have passed; returns how many batches ran. The
    examples of the last batch that fall after the deadline are skipped (`expired`)."""
    _deadline[0] = time.monotonic() + seconds
    batches = 0
    while not expired():
        batch()
        batches += 1
    return batches


def expired() -> bool:
    """Past the running budget: an example returns at once."""
    return time.monotonic() >= _deadline[0]


def save_case(target: str, data: bytes) -> Path:
    """Keep a failing input in the corpus (idempotent)."""
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"found-{hashlib.sha1(data).hexdigest()[:16]}.bin"
    if not path.exists():
        path.write_bytes(data)
    return path


def corpus(target: str) -> list[Path]:
    folder = CORPUS / target
    return sorted(p for p in folder.glob("*.bin") if p.is_file()) if folder.is_dir() else []
