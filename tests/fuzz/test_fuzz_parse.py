"""The DICOM parser of the ingest path (imaging.index.extract.parse) under fuzzing: whatever the bytes, it
returns a parsed instance or raises a precise ArchiveError (CannotUnderstand, DataSetMismatch), never another
exception. Seeds: generated CT slices and the test files pydicom ships (every transfer syntax it has),
mutated; bounded in time (tests/fuzz/budget.py)."""

from __future__ import annotations

import warnings
from io import BytesIO

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.control import current_build_context

from imaging.errors import ArchiveError
from imaging.index.extract import parse
from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient
from tests.archive_fixtures import bundled_testdata_files, quiet
from tests.fuzz.budget import SECONDS, corpus, expired, run_for, save_case
from tests.fuzz.strategies import mutated

pytestmark = [pytest.mark.fuzz, pytest.mark.slow]


def seeds() -> list[bytes]:
    found = [p.read_bytes() for p in bundled_testdata_files() if p.stat().st_size <= 256 * 1024]
    for ds in ct_series(SyntheticStudy(patient=synthetic_patient(5)), 2, rows=8, columns=8):
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        found.append(buffer.getvalue())
    found += [p.read_bytes() for p in corpus("parse")]
    return [s for s in found if s]


def check(data: bytes) -> None:
    """`parse` answers with a result or a precise ArchiveError; anything else is a finding (kept)."""
    try:
        with quiet():
            parse(data)
    except ArchiveError:
        return
    except Exception:
        if current_build_context().is_final:
            save_case("parse", data)
        raise


def test_parse_raises_only_precise_errors() -> None:
    pool = seeds()
    streams = st.one_of(
        mutated(pool, skip=128),  # mostly after the preamble: the meta group and the data set
        st.binary(max_size=512).map(lambda b: b"\0" * 128 + b"DICM" + b),
    )

    @settings(
        max_examples=200,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(streams)
    def batch(data: bytes) -> None:
        if expired():
            return
        tried.append(len(data))
        check(data)

    tried: list[int] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_for(SECONDS, batch)
    print(f"parse: {len(tried)} inputs in {SECONDS:.0f} s")
    assert tried
