"""Research projects: publication through the single ingest path into the project's partition, consistent
keyed pseudonyms, consent, quarantine, re-identification table kept apart, audit, cohorts and export."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from sqlalchemy import select

from imaging import audit
from imaging.archive import Archive
from imaging.consent import opt_out
from imaging.index.attributes import Level
from imaging.index.query import Query, find
from imaging.index.schema import Study
from imaging.ingest import ConsentRefused
from imaging.research.cohorts import export_to_folder, manifest, save_cohort, stream_zip
from imaging.research.projects import ReidentificationTable, create_project
from imaging.research.publication import publish_study
from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient

KEY = bytes(range(32))


def _study(archive: Archive, patient: int, *, series: int = 2, count: int = 3, **kw: Any) -> SyntheticStudy:
    st = SyntheticStudy(patient=synthetic_patient(patient), **kw)
    for n in range(series):
        for ds in ct_series(
            st, count, series_number=n + 1, rows=32, columns=32, body_part="CHEST" if n == 0 else "ABDOMEN"
        ):
            archive.ingestor.ingest_dataset(ds)
    return st


def _project_studies(archive: Archive, project: str) -> list[Any]:
    with archive.db.read() as s:
        return find(s, Query(level=Level.STUDY, partition=project))


@pytest.fixture
def archive(make_archive: Any, db_url: str) -> Archive:
    return make_archive()


def test_publish_materialises_a_deidentified_copy(archive: Archive) -> None:
    create_project(archive, "lung-study", options=["CLEAN_DESCRIPTORS"], key=KEY, keep_reidentification=True)
    st = _study(archive, 1)
    report = publish_study(archive, "lung-study", st.StudyInstanceUID, user="test")
    assert (report.published, report.quarantined) == (6, 0)
    assert report.study_uid.startswith("2.25.") and report.study_uid != st.StudyInstanceUID

    (match,) = _project_studies(archive, "lung-study")
    assert match.study.StudyInstanceUID == report.study_uid
    assert match.study.NumberOfStudyRelatedInstances == 6
    assert match.patient.PatientID == report.patient_pseudonym != st.patient.PatientID
    assert "SYNTH" not in match.patient.PatientName
    # The clinical study is untouched and still answers in its own partition only.
    with archive.db.read() as s:
        assert [m.study.StudyInstanceUID for m in find(s, Query(level=Level.STUDY))] == [st.StudyInstanceUID]

    # Every stored de-identified object: no identity left, marker present.
    with archive.db.read() as s:
        images = find(s, Query(level=Level.IMAGE, partition="lung-study"))
    for m in images:
        raw = archive.store.read(m.instance.object_key)
        for token in (st.patient.PatientID, "SYNTH0001", st.patient.PatientBirthDate, st.AccessionNumber):
            assert token.encode() not in raw
        assert dcmread(io.BytesIO(raw)).PatientIdentityRemoved == "YES"

    # The re-identification table (apart from the data) maps back; the audit trail has the publication.
    reid = ReidentificationTable(archive.settings.keys_path)
    assert reid.source_of("lung-study", report.study_uid) == st.StudyInstanceUID
    assert archive.settings.data_dir.resolve() not in reid.path.resolve().parents
    with archive.db.read() as s:
        (row,) = audit.query(s, event=audit.AuditEvent.INSTANCES_ACCESSED)
    assert row.StudyInstanceUID == report.study_uid and "Table E.1-1" in row.detail
    assert st.patient.PatientID not in row.detail + row.patient_ref


def test_publication_is_idempotent_and_consistent_across_studies(archive: Archive) -> None:
    create_project(archive, "p1", key=KEY)
    first = _study(archive, 1)
    second = _study(archive, 1)  # same patient, a later study
    other = _study(archive, 2)
    r1 = publish_study(archive, "p1", first.StudyInstanceUID)
    again = publish_study(archive, "p1", first.StudyInstanceUID)
    r2 = publish_study(archive, "p1", second.StudyInstanceUID)
    r3 = publish_study(archive, "p1", other.StudyInstanceUID)
    assert again.study_uid == r1.study_uid
    studies = {m.study.StudyInstanceUID: m for m in _project_studies(archive, "p1")}
    assert (
        len(studies) == 3 and studies[r1.study_uid].study.NumberOfStudyRelatedInstances == 6
    )  # no duplicates
    assert r1.patient_pseudonym == r2.patient_pseudonym != r3.patient_pseudonym
    # One date offset per patient: the interval between the patient's two studies is kept.
    assert studies[r1.study_uid].study.StudyDate == studies[r2.study_uid].study.StudyDate


def test_same_key_on_two_archives_gives_the_same_pseudonyms(
    make_archive: Any, db_url: str, tmp_path: Path
) -> None:
    if db_url:
        pytest.skip("two archives need two databases; covered on SQLite")
    a, b = make_archive(), make_archive()
    other = make_archive()
    create_project(a, "net", key=KEY)
    create_project(b, "net", key=KEY)
    create_project(other, "net", key=bytes(32))
    st = _study(a, 5)
    # Site B holds the same source study (e.g. received from the same PACS).
    for key in (m.instance.object_key for m in _images(a)):
        b.ingestor.ingest(a.store.read(key))
        other.ingestor.ingest(a.store.read(key))
    ra, rb, ro = (publish_study(x, "net", st.StudyInstanceUID) for x in (a, b, other))
    assert (ra.study_uid, ra.patient_pseudonym) == (rb.study_uid, rb.patient_pseudonym)
    assert ro.study_uid != ra.study_uid and ro.patient_pseudonym != ra.patient_pseudonym


def _images(archive: Archive, partition: str = "clinical") -> list[Any]:
    with archive.db.read() as s:
        return find(s, Query(level=Level.IMAGE, partition=partition))


def test_opted_out_patient_is_never_published(archive: Archive) -> None:
    create_project(archive, "p2", key=KEY)
    st = _study(archive, 7)
    with archive.db.write() as s:
        opt_out(s, st.patient.PatientID)
    with pytest.raises(ConsentRefused):
        publish_study(archive, "p2", st.StudyInstanceUID)
    assert _project_studies(archive, "p2") == []


def test_project_names_are_validated(archive: Archive) -> None:
    for bad in ("clinical", "../etc", "Upper", ""):
        with pytest.raises(ValueError):
            create_project(archive, bad)


def test_cohort_manifest_zip_and_resumable_export(archive: Archive, tmp_path: Path) -> None:
    create_project(archive, "c1", key=KEY)
    flagged = _study(archive, 1)
    plain = _study(archive, 2)
    with archive.db.write() as s:
        s.scalar(select(Study).where(Study.StudyInstanceUID == flagged.StudyInstanceUID)).priority = "HIGH"
    publish_study(archive, "c1", flagged.StudyInstanceUID)
    publish_study(archive, "c1", plain.StudyInstanceUID)

    save_cohort(archive, "c1", "chest", {"BodyPartExamined": "CHEST", "Modality": "CT"})
    save_cohort(archive, "c1", "flagged-chest", {"BodyPartExamined": "CH*"}, min_priority="HIGH")
    with pytest.raises(ValueError):
        save_cohort(archive, "c1", "bad", {"PatientName": "*"})  # identity is not a cohort criterion

    chest = manifest(archive, "c1", "chest")
    assert len(chest.series) == 2 and all(s.count == 3 for s in chest.series)
    flagged_only = manifest(archive, "c1", "flagged-chest")
    assert len(flagged_only.series) == 1

    # The zip streams the manifest and every object; checksums match the manifest.
    blob = b"".join(stream_zip(archive, chest))
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        names = zf.namelist()
        listed = json.loads(zf.read("manifest.json"))
        assert len(names) == 1 + 6
        for series in listed["series"]:
            for obj in series["objects"]:
                data = zf.read(
                    f"{series['StudyInstanceUID']}/{series['SeriesInstanceUID']}/{obj['SOPInstanceUID']}.dcm"
                )
                assert hashlib.sha256(data).hexdigest() == obj["sha256"]
    # Resuming after the first series streams only the rest.
    rest = b"".join(stream_zip(archive, chest, start_after=chest.series[0].SeriesInstanceUID))
    with zipfile.ZipFile(io.BytesIO(rest)) as zf:
        assert len(zf.namelist()) == 1 + 3

    out = tmp_path / "export"
    first = export_to_folder(archive, chest, out)
    assert (first.series_written, first.series_skipped) == (2, 0)
    victim = next(out.rglob("*.dcm"))
    victim.write_bytes(b"truncated")
    second = export_to_folder(archive, chest, out)
    assert (second.series_written, second.series_skipped) == (1, 1)  # only the damaged series again
    assert hashlib.sha256(victim.read_bytes()).hexdigest() in {
        o.sha256 for s in chest.series for o in s.objects
    }


def test_deidentify_on_receive_keeps_no_identified_copy(archive: Archive) -> None:
    create_project(archive, "share-only", key=KEY)
    st = SyntheticStudy(patient=synthetic_patient(9))
    for ds in ct_series(st, 3, rows=32, columns=32):
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        stored = archive.receiver.receive(buffer.getvalue(), partition="share-only", source="ae:SHARE")
        assert stored.partition == "share-only" and stored.study_instance_uid.startswith("2.25.")
    assert _images(archive) == []  # nothing in the clinical partition
    for key in archive.store.keys():
        assert key.startswith("share-only/")
        assert st.patient.PatientID.encode() not in archive.store.read(key)
    assert len(_images(archive, "share-only")) == 3


@pytest.mark.dcmtk
def test_project_bound_ae_title_deidentifies_on_receive(
    make_archive: Any, db_url: str, tmp_path: Path
) -> None:
    """A share-only node: storescu to the project's AE title stores only the de-identified copy, and
    C-FIND at that AE title answers from the project's partition."""
    import subprocess

    from imaging.dimse.server import Gateway
    from tests.conftest import require_program

    storescu = require_program("/usr/bin/storescu")
    findscu = require_program("/usr/bin/findscu")
    archive = make_archive(project_ae_titles={"RESEARCH": "net"})
    create_project(archive, "net", key=KEY)
    gateway = Gateway(archive)
    port = gateway.start(host="127.0.0.1", port=0)
    st = SyntheticStudy(patient=synthetic_patient(21))
    files = []
    for ds in ct_series(st, 3, rows=32, columns=32):
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(str(path))
    try:
        subprocess.run(
            [storescu, "-aec", "RESEARCH", "127.0.0.1", str(port), *files], check=True, timeout=120
        )
        bad = subprocess.run(
            [storescu, "-v", "-aec", "NOBODY", "127.0.0.1", str(port), files[0]],
            capture_output=True,
            text=True,
            timeout=60,
        )
        found = subprocess.run(
            [
                findscu,
                "-S",
                "-aec",
                "RESEARCH",
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                "StudyInstanceUID",
                "-k",
                "PatientID",
                "127.0.0.1",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        gateway.stop()
    assert _images(archive) == []  # no identified copy
    assert len(_images(archive, "net")) == 3
    assert all(key.startswith("net/") for key in archive.store.keys())
    # An unknown called AE title is refused at association, before any data is sent.
    # (pynetdicom closes the socket right after the A-ASSOCIATE-RJ, so dcmtk may report an abort.)
    output = bad.stdout + bad.stderr
    assert bad.returncode != 0
    assert "Called AE Title Not Recognized" in output or "Association Request Failed" in output
    answer = found.stdout + found.stderr
    assert st.StudyInstanceUID not in answer and st.patient.PatientID not in answer
    (project_study,) = [m.study.StudyInstanceUID for m in _project_studies(archive, "net")]
    assert project_study in answer
