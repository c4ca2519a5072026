"""Study searches stay index-driven: the study list reads its order off ix_study_date and stops after a page
(no sort of the partition); with planner statistics (refreshed when the archive opens) an exact PatientID or
AccessionNumber match starts from that column's index instead of walking every study. Also: `find_rows`
answers what `find` answers, in the same order, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import insert

from imaging.archive import Archive
from imaging.index.attributes import LEVEL_KEYS, Level
from imaging.index.matching import COLUMNS
from imaging.index.query import Query, _ordered, count, find, find_rows
from imaging.index.schema import Patient, Study
from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient

STUDIES = 400


def _bulk_studies(archive: Archive) -> None:
    with archive.db.write() as s:
        conn = s.connection()
        conn.execute(
            insert(Patient),
            [
                {"patient_pk": 10_000 + i, "PatientID": f"P{i:05d}", "PatientName": f"NAME{i:05d}^X"}
                for i in range(STUDIES)
            ],
        )
        conn.execute(
            insert(Study),
            [
                {
                    "study_pk": 10_000 + i,
                    "patient_pk": 10_000 + i,
                    "StudyInstanceUID": f"2.25.{i}",
                    "StudyDate": f"20{10 + i % 15:02d}0101",
                    "StudyTime": f"{i % 24:02d}0000",
                    "AccessionNumber": f"A{i:05d}",
                }
                for i in range(STUDIES)
            ],
        )


def _plan(archive: Archive, keys: dict[str, str]) -> str:
    query = Query(level=Level.STUDY, keys=keys, limit=101)
    stmt = _ordered(query, [Study.__table__.c.study_pk])
    compiled = stmt.compile(dialect=archive.db.read_engine.dialect)
    params = tuple(compiled.construct_params()[name] for name in compiled.positiontup or ())
    with archive.db.read() as s:
        rows = s.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), params).all()
    return " | ".join(str(r[3]) for r in rows)


def test_study_searches_use_the_indexes(make_archive, tmp_path) -> None:
    archive = make_archive()
    _bulk_studies(archive)
    archive.close()
    archive = make_archive(tmp_path / "data0")  # opening the archive refreshes the planner statistics
    listing = _plan(archive, {})
    assert "ix_study_date" in listing and "TEMP B-TREE" not in listing, listing
    assert "ix_study_date" in _plan(archive, {"StudyDate": "20150101-20161231"})
    assert "ix_study_date" in _plan(archive, {"PatientName": "*NAME001*"})
    by_id = _plan(archive, {"PatientID": "P00123"})
    assert "patient USING" in by_id and "ix_study_date" not in by_id, by_id
    by_accession = _plan(archive, {"AccessionNumber": "A00123"})
    assert "ix_study_accession" in by_accession, by_accession
    with archive.db.read() as s:
        assert [m.study.StudyInstanceUID for m in find(s, Query(Level.STUDY, {"PatientID": "P00123"}))] == [
            "2.25.123"
        ]


@pytest.mark.parametrize("level", [Level.STUDY, Level.SERIES, Level.IMAGE])
def test_find_rows_answers_what_find_answers(db_url, make_archive, level: Level) -> None:
    archive = make_archive()
    for n in range(3):
        st = SyntheticStudy(patient=synthetic_patient(n), StudyDate=f"2020010{n + 1}")
        for number in (1, 2):
            for ds in ct_series(st, 2, series_number=number, rows=16, columns=16):
                archive.ingestor.ingest_dataset(ds)
    keys = [k for k in LEVEL_KEYS[level] if k in COLUMNS]
    for query in (
        Query(level=level),
        Query(level=level, limit=3, offset=1),
        Query(level=level, keys={"PatientName": "SYNTH000?^*", "StudyDate": "20200102-"}),
    ):
        with archive.db.read() as s:
            matches = find(s, query)
            rows = find_rows(s, query, [COLUMNS[k] for k in keys])
            total = count(s, query)
            unpaged = find(s, Query(level=level, keys=query.keys))
        assert rows and [tuple(m.value(k) for k in keys) for m in matches] == [tuple(r) for r in rows]
        assert total == len(unpaged)
