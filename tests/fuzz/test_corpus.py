"""Replay the fuzzing corpus (tests/fuzz/corpus, see its README) in every normal test run: the issue's attack
inputs and whatever the fuzzers found. PDUs go to an in-process gateway on loopback; Part 10 streams to the
parser. Same checks as the fuzzers, no time budget."""

from __future__ import annotations

import pytest

from imaging.archive import Archive
from imaging.config import load_settings
from imaging.dimse.server import Gateway
from imaging.errors import ArchiveError
from imaging.index.extract import parse
from tests.archive_fixtures import echo, quiet
from tests.fuzz.budget import corpus
from tests.fuzz.wire import exchange, well_formed

# A thread of the gateway that dies with an exception fails the test (pytest only warns by default).
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")

PDU_CASES = corpus("pdu")
PARSE_CASES = corpus("parse")


def test_corpus_is_there():
    assert len(PDU_CASES) >= 10 and len(PARSE_CASES) >= 10


@pytest.fixture(scope="module")
def gateway_port(tmp_path_factory):
    """One gateway for the whole corpus (what one case leaves behind must not trouble the next)."""
    settings = load_settings(
        None,
        data_dir=tmp_path_factory.mktemp("corpus") / "data",
        dev_mode=True,
        min_free_bytes=0,
        network_timeout=20,
    )
    archive = Archive.open(settings)
    gateway = Gateway(archive)
    port = gateway.start("127.0.0.1", 0)
    yield port
    gateway.stop()
    archive.close()


@pytest.mark.parametrize("case", PDU_CASES, ids=[p.stem for p in PDU_CASES])
def test_pdu_case(gateway_port, case):
    answer = exchange(gateway_port, case.read_bytes())
    assert well_formed(answer), answer[:64]
    assert echo(gateway_port)


@pytest.mark.parametrize("case", PARSE_CASES, ids=[p.stem for p in PARSE_CASES])
def test_parse_case(case):
    try:
        with quiet():
            parse(case.read_bytes())
    except ArchiveError:
        pass
