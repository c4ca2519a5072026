"""Cohort previews and exports with progress (issue 17), on SQLite and PostgreSQL: the count of what
filters select before saving, and the durable row of each zip download — its totals, its progress as the
stream goes out, `complete` or `interrupted` (with where to resume), a prepared export started once by its
own user, and the Export records of the audit trail a researcher sees (their own)."""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import update

from imaging.archive import Archive
from imaging.errors import Conflict, InvalidRequest, NotFound
from imaging.orm import utcnow
from imaging.research import exports
from imaging.research.cohorts import manifest, preview, save_cohort
from imaging.research.exports import (
    CohortExport,
    begin_export,
    export_audit_trail,
    export_info,
    get_export,
    list_exports,
    prepare_export,
    stream_export,
)
from imaging.research.projects import create_project
from imaging.research.publication import publish_study
from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient

PROJECT = "lung"
OPTIONS = ["Retain Longitudinal Temporal Information Full Dates", "Clean Descriptors"]


def _project(archive: Archive) -> list[str]:
    """Three studies (CT CHEST of 2 and 3 images, an MR) published into the project."""
    create_project(archive, PROJECT, options=OPTIONS)
    published = []
    for n, (modality, count, date) in enumerate(
        (("CT", 2, "20240101"), ("CT", 3, "20240301"), ("MR", 2, "20240501"))
    ):
        st = SyntheticStudy(
            patient=synthetic_patient(20 + n), StudyDate=date, StudyDescription=f"{modality} CHEST"
        )
        for ds in ct_series(st, count, rows=16, columns=16, modality=modality):
            archive.ingestor.ingest_dataset(ds, source="test")
        published.append(publish_study(archive, PROJECT, st.StudyInstanceUID, user="test").study_uid)
    return published


def test_preview_counts_what_filters_select(make_archive: Callable[..., Archive], db_url: str) -> None:
    archive = make_archive()
    _project(archive)
    with archive.db.read() as session:
        everything = preview(session, PROJECT, {})
        ct = preview(session, PROJECT, {"Modality": "CT"})
        spring = preview(session, PROJECT, {"StudyDate": "20240201-", "Modality": "C*"}, sample=1)
        none = preview(session, PROJECT, {"Modality": "CT"}, "HIGH")  # nothing was triaged
        blank = preview(session, PROJECT, {"Modality": " ", "BodyPartExamined": "*"})
        with pytest.raises(InvalidRequest, match="unsupported cohort filter"):
            preview(session, PROJECT, {"PatientName": "DOE*"})
        with pytest.raises(InvalidRequest, match="StudyDate"):
            preview(session, PROJECT, {"StudyDate": "2024-01-01"})
        with pytest.raises(InvalidRequest, match="priority"):
            preview(session, PROJECT, {}, "URGENT")
    assert (everything.studies, everything.series, everything.instances) == (3, 3, 7)
    assert (ct.studies, ct.series, ct.instances) == (2, 2, 5) and ct.size > 0
    assert (spring.studies, spring.instances, len(spring.sample)) == (1, 3, 1)
    assert spring.sample[0].count == 3 and spring.sample[0].Modality == "CT"
    assert none.studies == 0 and (blank.studies, blank.series) == (3, 3)
    # The manifest of the saved cohort holds what the preview counted.
    save_cohort(archive, PROJECT, "ct", {"Modality": "CT", "BodyPartExamined": ""})
    m = manifest(archive, PROJECT, "ct")
    assert sum(s.count for s in m.series) == ct.instances and m.size == ct.size


def _zip(chunks: Any) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(b"".join(chunks)))


def test_export_rows_follow_the_stream(
    make_archive: Callable[..., Archive], db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exports, "WRITE_INTERVAL", 0.0)  # every object written: the test reads each step
    archive = make_archive()
    _project(archive)
    save_cohort(archive, PROJECT, "all", {})
    export_pk, m = begin_export(archive, PROJECT, "all", user="token:7:researcher")
    with archive.db.read() as session:
        started = export_info(get_export(session, export_pk, project=PROJECT, user="token:7:researcher"))
    assert started["status"] == "streaming" and started["series"] == [0, 3] and started["objects"] == [0, 7]
    assert started["bytes"] == [0, m.size]
    with _zip(stream_export(archive, export_pk, m)) as zf:
        assert len([n for n in zf.namelist() if n.endswith(".dcm")]) == 7
    with archive.db.read() as session:
        done = export_info(get_export(session, export_pk, project=PROJECT, user="token:7:researcher"))
    assert done["status"] == "complete" and done["series"] == [3, 3] and done["bytes"] == [m.size, m.size]
    assert done["finished_at"] is not None and done["resume_after"] == ""

    # A client that goes away after the first series: interrupted, resumable after that series.
    export_pk, m = begin_export(archive, PROJECT, "all", user="token:7:researcher")
    stream = stream_export(archive, export_pk, m)
    first_series = m.series[0]
    for _chunk in stream:
        with archive.db.read() as session:
            row = get_export(session, export_pk, project=PROJECT, user="token:7:researcher")
            if row.objects_done == first_series.count and row.series_done == 1:
                break
    stream.close()  # what the server does when the client disconnects
    with archive.db.read() as session:
        cut = export_info(get_export(session, export_pk, project=PROJECT, user="token:7:researcher"))
    assert cut["status"] == "interrupted" and cut["series"] == [1, 3]
    assert cut["resume_after"] == first_series.SeriesInstanceUID
    resumed_pk, m = begin_export(
        archive, PROJECT, "all", user="token:7:researcher", start_after=cut["resume_after"]
    )
    with _zip(stream_export(archive, resumed_pk, m, start_after=cut["resume_after"])) as zf:
        rest = [n for n in zf.namelist() if n.endswith(".dcm")]
    assert len(rest) == 7 - first_series.count
    with archive.db.read() as session:
        resumed = export_info(get_export(session, resumed_pk, project=PROJECT, user="token:7:researcher"))
        mine = list_exports(session, PROJECT, user="token:7:researcher")
        theirs = list_exports(session, PROJECT, user="token:8:researcher")
        trail = export_audit_trail(session, PROJECT, user="token:7:researcher")
    assert resumed["status"] == "complete" and resumed["series"] == [2, 2]
    assert [x.export_pk for x in mine] == [resumed_pk, export_pk, export_pk - 1] and theirs == []
    assert [t["event_id"] for t in trail] == ["110106"] * 3 and "resumed after" in trail[0]["detail"]


def test_prepared_exports_start_once_for_their_own_user(
    make_archive: Callable[..., Archive], db_url: str
) -> None:
    archive = make_archive()
    _project(archive)
    save_cohort(archive, PROJECT, "all", {})
    with pytest.raises(NotFound):
        prepare_export(archive, PROJECT, "missing", user="token:7:researcher")
    prepared = prepare_export(archive, PROJECT, "all", user="token:7:researcher")
    with archive.db.read() as session:
        assert (
            export_info(get_export(session, prepared, project=PROJECT, user="token:7:researcher"))["status"]
            == "ready"
        )
        with pytest.raises(NotFound):  # nobody else sees it
            get_export(session, prepared, project=PROJECT, user="token:8:researcher")
    with pytest.raises(NotFound):
        begin_export(archive, PROJECT, "all", user="token:8:researcher", export_pk=prepared)
    assert begin_export(archive, PROJECT, "all", user="token:7:researcher", export_pk=prepared)[0] == prepared
    with pytest.raises(Conflict):
        begin_export(archive, PROJECT, "all", user="token:7:researcher", export_pk=prepared)
    # Rows that stopped moving (the server went away mid-stream; a page never started its download).
    forgotten = prepare_export(archive, PROJECT, "all", user="token:7:researcher")
    long_ago = utcnow() - dt.timedelta(seconds=exports.STALLED_SECONDS + 1)
    with archive.db.write() as session:
        session.execute(update(CohortExport).values(updated_at=long_ago))
    with archive.db.read() as session:
        assert (
            export_info(get_export(session, prepared, project=PROJECT, user="token:7:researcher"))["status"]
            == "stalled"
        )
        assert (
            export_info(get_export(session, forgotten, project=PROJECT, user="token:7:researcher"))["status"]
            == "not started"
        )
