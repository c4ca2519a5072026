"""Revision 0002_dimse upgrades an index created at 0001: instance.partition filled from the study, rows that
re-used a SOP Instance UID in another series or study (possible before the rule) leave the index keeping the
first stored, recorded as `rejected` storage events, counters recomputed; the unique index then holds; the
audit records of Begin Transferring get their right code (110102)."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from imaging.index.db import MIGRATIONS, Database
from tests.archive_fixtures import PG_ADMIN_URL, _pg_connect


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/index.sqlite"
        return
    try:
        admin = _pg_connect(PG_ADMIN_URL)
    except Exception as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    name = f"imaging_mig_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _upgrade(engine: Engine, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    command.upgrade(cfg, revision)


def _fill_at_0001(engine: Engine) -> None:
    now = dt.datetime(2024, 3, 15, 10, 0)
    rows = {
        "patient": [
            {"patient_pk": 1, "partition": "clinical", "PatientID": "P1"},
            {"patient_pk": 2, "partition": "clinical", "PatientID": "P2"},
        ],
        "study": [
            {"study_pk": 1, "patient_pk": 1, "partition": "clinical", "StudyInstanceUID": "2.25.1"},
            {"study_pk": 2, "patient_pk": 2, "partition": "clinical", "StudyInstanceUID": "2.25.2"},
            {"study_pk": 3, "patient_pk": 1, "partition": "research-1", "StudyInstanceUID": "2.25.3"},
        ],
        "series": [
            {"series_pk": 1, "study_pk": 1, "SeriesInstanceUID": "2.25.11", "Modality": "CT", "n": 2},
            {"series_pk": 2, "study_pk": 1, "SeriesInstanceUID": "2.25.12", "Modality": "OT", "n": 1},
            {"series_pk": 3, "study_pk": 2, "SeriesInstanceUID": "2.25.21", "Modality": "MR", "n": 1},
            {"series_pk": 4, "study_pk": 3, "SeriesInstanceUID": "2.25.31", "Modality": "CT", "n": 1},
        ],
        # 2.25.100 three times in the clinical partition (series 1, series 2, another study) and once in a
        # project: only the first clinical row and the project's stay.
        "instance": [
            (1, 1, "2.25.100", "a"),
            (2, 1, "2.25.101", "b"),
            (3, 2, "2.25.100", "c"),
            (4, 3, "2.25.100", "d"),
            (5, 4, "2.25.100", "e"),
        ],
    }
    with engine.begin() as conn:
        for row in rows["patient"]:
            conn.execute(
                text(
                    'INSERT INTO patient (patient_pk, partition, "PatientID", "IssuerOfPatientID",'
                    ' "PatientName", "PatientBirthDate", "PatientSex") VALUES (:patient_pk, :partition,'
                    " :PatientID, '', '', '', '')"
                ),
                row,
            )
        for row in rows["study"]:
            conn.execute(
                text(
                    'INSERT INTO study (study_pk, patient_pk, partition, "StudyInstanceUID", "StudyDate",'
                    ' "StudyTime", "AccessionNumber", "StudyID", "ReferringPhysicianName", "StudyDescription",'
                    ' "ModalitiesInStudy", "SOPClassesInStudy", "NumberOfStudyRelatedSeries",'
                    ' "NumberOfStudyRelatedInstances", updated_at, stable, priority) VALUES (:study_pk,'
                    " :patient_pk, :partition, :StudyInstanceUID, '', '', '', '', '', '', 'CT', '1.2', 9, 9,"
                    " :now, :stable, '')"
                ),
                {**row, "now": now, "stable": True},
            )
        for row in rows["series"]:
            conn.execute(
                text(
                    'INSERT INTO series (series_pk, study_pk, "SeriesInstanceUID", "Modality", "SeriesNumber",'
                    ' "SeriesDescription", "BodyPartExamined", "SeriesDate", "SeriesTime",'
                    ' "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",'
                    ' "NumberOfSeriesRelatedInstances", last_received_at, stable) VALUES (:series_pk,'
                    " :study_pk, :SeriesInstanceUID, :Modality, 1, '', '', '', '', '', '', :n, :now, :stable)"
                ),
                {**row, "now": now, "stable": True},
            )
        for pk, series_pk, uid, key in rows["instance"]:
            conn.execute(
                text(
                    'INSERT INTO instance (instance_pk, series_pk, "SOPInstanceUID", "SOPClassUID",'
                    ' "ContentDate", "ContentTime", "TransferSyntaxUID", object_key, size, metadata_json,'
                    " received_at) VALUES (:pk, :series_pk, :uid, '1.2.840.10008.5.1.4.1.1.2', '', '',"
                    " '1.2.840.10008.1.2.1', :key, 10, :blob, :now)"
                ),
                {
                    "pk": pk,
                    "series_pk": series_pk,
                    "uid": uid,
                    "key": f"clinical/{key}",
                    "blob": b"x",
                    "now": now,
                },
            )
        conn.execute(
            text(
                'INSERT INTO audit_record (event_id, action, outcome, "user", source, partition,'
                ' "StudyInstanceUID", patient_ref, detail, created_at) VALUES'
                " ('110100', 'R', '0', 'system', '', '', '', '', '', :now)"
            ),
            {"now": now},
        )


def test_upgrade_from_0001(url: str) -> None:
    db = Database(url)
    try:
        _upgrade(db.write_engine, "0001")
        _fill_at_0001(db.write_engine)
        db.migrate()
        with db.write_engine.connect() as conn:
            instances = conn.execute(
                text('SELECT instance_pk, partition, "SOPInstanceUID" FROM instance ORDER BY instance_pk')
            ).all()
            series = dict(
                conn.execute(text('SELECT series_pk, "NumberOfSeriesRelatedInstances" FROM series')).all()
            )
            studies = {
                r[0]: tuple(r[1:])
                for r in conn.execute(
                    text(
                        'SELECT study_pk, "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",'
                        ' "ModalitiesInStudy" FROM study'
                    )
                )
            }
            patients = (
                conn.execute(text("SELECT patient_pk FROM patient ORDER BY patient_pk")).scalars().all()
            )
            events = conn.execute(text("SELECT kind, new_key FROM storage_event ORDER BY event_pk")).all()
            codes = conn.execute(text("SELECT event_id FROM audit_record")).scalars().all()
        assert [tuple(r) for r in instances] == [
            (1, "clinical", "2.25.100"),
            (2, "clinical", "2.25.101"),
            (5, "research-1", "2.25.100"),
        ]
        assert series == {1: 2, 4: 1}  # series 2 and 3 lost their only instance
        assert studies == {1: (1, 2, "CT"), 3: (9, 9, "CT")}  # study 2 emptied; study 3 untouched
        assert patients == [1]
        assert [tuple(e) for e in events] == [("rejected", "clinical/c"), ("rejected", "clinical/d")]
        assert codes == ["110102"]
        assert any(
            ix["name"] == "uq_instance_uid" and ix["unique"]
            for ix in inspect(db.write_engine).get_indexes("instance")
        )
        with pytest.raises(IntegrityError), db.write_engine.begin() as conn:
            conn.execute(text("UPDATE instance SET partition = 'clinical' WHERE instance_pk = 5"))
    finally:
        db.dispose()
