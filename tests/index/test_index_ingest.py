"""The index on SQLite and PostgreSQL: computed study attributes, duplicate / overwrite / reject policy with
storage_event records, bound parameters for hostile match values, reindex and fsck."""

from __future__ import annotations

import pytest
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid
from sqlalchemy import func, select

from imaging.config import OverwritePolicy
from imaging.errors import DuplicateConflict
from imaging.index.attributes import Level
from imaging.index.query import Query, find
from imaging.index.schema import Instance, Series, StorageEvent, Study
from imaging.index.writer import Disposition
from imaging.maintenance import fsck, reindex
from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient


def _study(archive, *, counts=(3, 2), sc: int = 1):
    st = SyntheticStudy(patient=synthetic_patient(3))
    results = []
    for n, count in enumerate(counts, start=1):
        for ds in ct_series(st, count, series_number=n, rows=16, columns=16):
            results.append(archive.ingestor.ingest_dataset(ds))
    for ds in ct_series(st, sc, series_number=9, rows=16, columns=16, modality="OT"):
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        results.append(archive.ingestor.ingest_dataset(ds))
    return st, results


def _bytes(ds) -> bytes:
    from io import BytesIO

    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def test_computed_study_attributes(db_url, make_archive):
    archive = make_archive()
    st, _ = _study(archive)
    with archive.db.read() as s:
        study = s.scalars(select(Study).where(Study.StudyInstanceUID == st.StudyInstanceUID)).one()
        assert study.ModalitiesInStudy == "CT\\OT"
        assert study.SOPClassesInStudy == "1.2.840.10008.5.1.4.1.1.2\\1.2.840.10008.5.1.4.1.1.7"
        assert study.NumberOfStudyRelatedSeries == 3
        assert study.NumberOfStudyRelatedInstances == 6
        counts = sorted(s.scalars(select(Series.NumberOfSeriesRelatedInstances)).all())
        assert counts == [1, 2, 3]


def test_duplicate_overwrite_reject(db_url, make_archive):
    archive = make_archive()
    st = SyntheticStudy(patient=synthetic_patient(4))
    ds = next(ct_series(st, 1, rows=16, columns=16))
    first = archive.ingestor.ingest(_bytes(ds))
    assert first.disposition is Disposition.STORED
    # Identical bytes: success, nothing rewritten, recorded.
    again = archive.ingestor.ingest(_bytes(ds))
    assert again.disposition is Disposition.DUPLICATE and again.object_key == first.object_key
    # Different bytes under the same SOP Instance UID, policy reject: refused, old object kept, new one gone.
    ds.SeriesDescription = "CHANGED"
    changed = _bytes(ds)
    with pytest.raises(DuplicateConflict):
        archive.ingestor.ingest(changed)
    assert archive.store.exists(first.object_key)
    assert len(list(archive.store.keys())) == 1
    # Policy overwrite: replaced, old object removed, counters unchanged.
    archive.ingestor.policy = OverwritePolicy.OVERWRITE
    over = archive.ingestor.ingest(changed)
    assert over.disposition is Disposition.OVERWRITTEN and over.object_key != first.object_key
    assert not archive.store.exists(first.object_key)
    with archive.db.read() as s:
        events = [
            (e.kind, e.old_key, e.new_key)
            for e in s.scalars(select(StorageEvent).order_by(StorageEvent.event_pk))
        ]
        row = s.scalars(select(Instance)).one()
        study = s.scalars(select(Study)).one()
    assert [e[0] for e in events] == ["duplicate", "rejected", "overwritten"]
    assert events[2][1:] == (first.object_key, over.object_key)
    assert row.object_key == over.object_key and study.NumberOfStudyRelatedInstances == 1


@pytest.mark.parametrize(
    "value",
    ["'; DROP TABLE instance; --", "%", "_YN*", "x' OR '1'='1", "SYN\\' OR 1=1 --", "*\\*"],
)
def test_hostile_match_values_are_bound_parameters(db_url, make_archive, value):
    archive = make_archive()
    _study(archive, counts=(1,), sc=0)
    with archive.db.read() as s:
        for key in ("PatientID", "PatientName", "AccessionNumber", "StudyDescription"):
            matches = find(s, Query(level=Level.STUDY, keys={key: value}))
            assert len(matches) == (1 if value == "*\\*" else 0), (key, value)
    with archive.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 1  # the table is still there


def test_reindex_and_fsck(db_url, make_archive):
    archive = make_archive()
    st, results = _study(archive)
    assert fsck(archive).clean
    report = reindex(archive)
    assert report.indexed == 6 and not report.unreadable
    with archive.db.read() as s:
        study = s.scalars(select(Study)).one()
        assert (study.NumberOfStudyRelatedInstances, study.NumberOfStudyRelatedSeries) == (6, 3)
        assert study.ModalitiesInStudy == "CT\\OT"
    # Corrupt one object, remove another, add an unindexed one.
    bad, gone = results[0].object_key, results[1].object_key
    archive.store.path_for(bad).write_bytes(b"corrupted")
    archive.store.delete(gone)
    extra = archive.store.put(
        _bytes(next(ct_series(st, 1, series_number=5, rows=16, columns=16))), "clinical"
    )
    report = fsck(archive)
    assert report.corrupt == [bad] and report.missing == [gone] and report.unindexed == [extra.key]
    report = fsck(archive, repair=True)
    assert report.repaired == 3
    assert (archive.settings.data_dir / "quarantine").iterdir()
    assert fsck(archive).clean
    with archive.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 5
        assert s.scalars(select(Study)).one().NumberOfStudyRelatedInstances == 5


def test_same_uid_in_two_partitions(db_url, make_archive):
    archive = make_archive()
    ds = next(ct_series(SyntheticStudy(StudyInstanceUID=generate_uid()), 1, rows=16, columns=16))
    archive.ingestor.ingest(_bytes(ds))
    archive.ingestor.ingest(_bytes(ds), partition="project-x")
    with archive.db.read() as s:
        assert len(find(s, Query(level=Level.IMAGE, keys={}))) == 1
        assert len(find(s, Query(level=Level.IMAGE, keys={}, partition="project-x"))) == 1
