"""Issue 12, finding 5: a SOP Instance UID is unique in its partition, not only in its series. Re-using a UID
in another series or another study must not bypass the `reject` overwrite policy, QIDO never returns two
instances with one UID, and the index itself refuses a second row (both backends)."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from imaging.errors import DuplicateConflict
from imaging.index.attributes import Level
from imaging.index.query import Query, find
from imaging.index.schema import ChangeLog, Instance, Patient, Series, StorageEvent, Study
from imaging.index.writer import Disposition
from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient


def _bytes(ds) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _two_slices(elsewhere: str):
    """Two different objects with one SOP Instance UID: `elsewhere` is "series" (same study, other series)
    or "study" (another study of another patient)."""
    first = next(ct_series(SyntheticStudy(patient=synthetic_patient(21)), 1, rows=16, columns=16))
    if elsewhere == "series":
        second = next(
            ct_series(SyntheticStudy(patient=synthetic_patient(21)), 1, series_number=2, rows=16, columns=16)
        )
        second.StudyInstanceUID = first.StudyInstanceUID
    else:
        second = next(ct_series(SyntheticStudy(patient=synthetic_patient(22)), 1, rows=16, columns=16))
    second.SOPInstanceUID = second.file_meta.MediaStorageSOPInstanceUID = first.SOPInstanceUID
    assert second.SeriesInstanceUID != first.SeriesInstanceUID
    return first, second


def _images(archive, sop_instance_uid: str, partition: str = "clinical") -> list:
    with archive.db.read() as s:
        return find(
            s, Query(level=Level.IMAGE, keys={"SOPInstanceUID": sop_instance_uid}, partition=partition)
        )


@pytest.mark.parametrize("elsewhere", ["series", "study"])
def test_reject_holds_across_series_and_studies(db_url, make_archive, elsewhere):
    archive = make_archive()
    first, second = _two_slices(elsewhere)
    stored = archive.ingestor.ingest(_bytes(first))
    with pytest.raises(DuplicateConflict):
        archive.ingestor.ingest(_bytes(second))
    matches = _images(archive, str(first.SOPInstanceUID))
    assert [m.series.SeriesInstanceUID for m in matches] == [first.SeriesInstanceUID]
    with archive.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 1
        assert s.scalar(select(func.count()).select_from(Series)) == 1
        assert s.scalar(select(func.count()).select_from(Study)) == 1
        assert s.scalars(select(StorageEvent.kind)).all() == ["rejected"]
    assert list(archive.store.keys()) == [stored.object_key]


@pytest.mark.parametrize("elsewhere", ["series", "study"])
def test_overwrite_moves_the_instance(db_url, make_archive, elsewhere):
    """With `overwrite`, the newer object replaces the older wherever it was: one row, in the new series; the
    emptied series (and study, and patient) go, counters and computed attributes follow."""
    archive = make_archive(overwrite_policy="overwrite")
    first, second = _two_slices(elsewhere)
    old = archive.ingestor.ingest(_bytes(first))
    new = archive.ingestor.ingest(_bytes(second))
    assert new.disposition is Disposition.OVERWRITTEN
    assert not archive.store.exists(old.object_key) and archive.store.exists(new.object_key)
    matches = _images(archive, str(first.SOPInstanceUID))
    assert len(matches) == 1
    with archive.db.read() as s:
        row = s.scalars(select(Instance)).one()
        series = s.scalars(select(Series)).one()
        study = s.scalars(select(Study)).one()
        assert row.object_key == new.object_key and row.series_pk == series.series_pk
        assert series.SeriesInstanceUID == second.SeriesInstanceUID
        assert series.NumberOfSeriesRelatedInstances == 1
        assert study.StudyInstanceUID == second.StudyInstanceUID
        assert (study.NumberOfStudyRelatedSeries, study.NumberOfStudyRelatedInstances) == (1, 1)
        assert s.scalar(select(func.count()).select_from(Patient)) == 1
        changes = [
            (c.kind, c.SeriesInstanceUID)
            for c in s.scalars(select(ChangeLog).order_by(ChangeLog.seq))
            if c.kind != "InstanceStored"
        ]
    assert changes == [
        ("InstanceDeleted", str(first.SeriesInstanceUID)),
        ("InstanceOverwritten", str(second.SeriesInstanceUID)),
    ]


def test_overwrite_keeps_the_rest_of_the_old_series(db_url, make_archive):
    """Moving one instance out of a series of three leaves two, and the study's counts say so."""
    archive = make_archive(overwrite_policy="overwrite")
    st = SyntheticStudy(patient=synthetic_patient(23))
    three = list(ct_series(st, 3, rows=16, columns=16))
    for ds in three:
        archive.ingestor.ingest(_bytes(ds))
    moved = next(ct_series(st, 1, series_number=2, rows=16, columns=16))
    moved.SOPInstanceUID = moved.file_meta.MediaStorageSOPInstanceUID = three[0].SOPInstanceUID
    archive.ingestor.ingest(_bytes(moved))
    with archive.db.read() as s:
        counts = dict(
            s.execute(select(Series.SeriesInstanceUID, Series.NumberOfSeriesRelatedInstances)).all()
        )
        study = s.scalars(select(Study)).one()
    assert counts == {three[0].SeriesInstanceUID: 2, moved.SeriesInstanceUID: 1}
    assert (study.NumberOfStudyRelatedSeries, study.NumberOfStudyRelatedInstances) == (2, 3)


def test_same_uid_in_another_partition_is_allowed(db_url, make_archive):
    archive = make_archive()
    first, second = _two_slices("study")
    archive.ingestor.ingest(_bytes(first))
    archive.ingestor.ingest(_bytes(second), partition="research-x")
    assert len(_images(archive, str(first.SOPInstanceUID))) == 1
    assert len(_images(archive, str(first.SOPInstanceUID), "research-x")) == 1


def test_index_refuses_a_second_row(db_url, make_archive):
    """The rule holds in the schema, so that two gateway processes racing with one UID cannot both win."""
    archive = make_archive()
    first, _ = _two_slices("study")
    archive.ingestor.ingest(_bytes(first))
    with archive.db.read() as s:
        row = s.scalars(select(Instance)).one()
        values = {c.key: getattr(row, c.key) for c in Instance.__table__.columns if c.key != "instance_pk"}
    with archive.db.write() as s:
        study_pk = s.scalar(select(Study.study_pk))
        series_pk = s.execute(
            insert(Series)
            .values(study_pk=study_pk, SeriesInstanceUID=generate_uid())
            .returning(Series.series_pk)
        ).scalar_one()
    with pytest.raises(IntegrityError), archive.db.write() as s:
        s.execute(insert(Instance).values(**{**values, "series_pk": series_pk, "object_key": "clinical/x"}))
