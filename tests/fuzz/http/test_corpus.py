"""Replays every case of the HTTP fuzz corpus as a plain test: each must answer 2xx-4xx (or be parsed or
refused, for the parser). tests/fuzz/corpus/http/ holds the 500s issue 12 reported (`issue12-*`), those found
walking every route and parameter for the same kinds of failure (`review-*`), and whatever the Hypothesis
tests find (they leave `found-<target>.json`, shrunk)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.dicomweb.conftest import Seeded
from tests.fuzz.http.cases import run_case

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "http"
CASES = sorted(CORPUS.glob("*.json"))


def test_the_corpus_is_not_empty() -> None:
    assert len(CASES) >= 5


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_corpus_case(seeded: Seeded, path: Path) -> None:
    case = json.loads(path.read_text())
    with httpx.Client(
        base_url=seeded.server.url, headers={"Authorization": f"Bearer {seeded.tokens['admin']}"}, timeout=60
    ) as client:
        status = run_case(case, seeded, client)
    assert status is None or status < 500, f"{path.name}: {status}"
